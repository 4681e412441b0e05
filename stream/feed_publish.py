"""Publishing a store's registry to the model feed (:mod:`stream.model_feed` says what is on
it): ``mlstream models promote|rollback|add|publish``, ``mlstream train`` and the trainer call
:func:`publish` after a change scorers must see.

Between a publisher's read of the feed and its publish another change may land. On Apache Kafka
a publish is therefore a compare-and-set: every publisher of a model shares one transactional id
(starting a publish fences any other in flight), checks under it that the feed's newest
committed states are still the newest its store read, and writes its records in one
transaction; otherwise nothing is written and :class:`FeedMoved` is raised, and the caller
makes its change again on the newer states. The embedded broker has no transactions: a plain
publish there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalOperation, KafkaError, UnknownError, UnsupportedVersionError

from stream.config import Settings
from stream.errors import BrokerError, KafkaCallError, StreamError
from stream.kafka import make_consumer, make_producer, start_client, stop_quietly, within
from stream.model_feed import feed_records, states_key, states_token
from stream.registry import ModelStore

log = logging.getLogger(__name__)

FEED_ATTEMPTS = 3  # a change made again on the newer registry after another publisher got there first


class FeedMoved(StreamError):
    """Nothing was published: the feed's newest states are not the ones this store's change was
    made on (another publisher published after this store read the feed, or is publishing now).
    The store keeps its change until its next read of the feed, which takes the newer states."""


def feed_transactional_id(settings: Settings, name: str) -> str:
    """One per model and app, shared by every publisher: a publish fences any other in flight.

    >>> from stream.config import Settings
    >>> feed_transactional_id(Settings(app_id="fraud-app"), "fraud")
    'fraud-app-model-feed-fraud'
    """
    return f"{settings.app_id}-model-feed-{name}"


async def newest_states_token(settings: Settings, name: str) -> str | None:
    """The token of ``name``'s newest committed states record on the feed (None: none yet), read
    from the partition's tail backwards in growing steps (the states close each publish). The
    partition holds every model's feed: an open transaction of another one hides what follows it
    from ``read_committed`` readers, so the read waits until nothing is open (bounded by the
    caller)."""
    key = states_key(name)
    async with _feed_reader(settings) as (consumer, tp):
        if consumer is None:
            return None  # no feed yet
        back = 16
        while True:
            end = (await consumer.end_offsets([tp]))[tp]  # read_committed: the last stable offset
            start = max(0, end - back)
            consumer.seek(tp, start)
            token = None
            while await consumer.position(tp) < end:
                for record in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []):
                    if record.key == key and record.offset < end:
                        token = states_token(record.value or b"")
            high = consumer.highwater(tp)
            if high is None:  # nothing fetched (the read began at the stable end): one fetch tells
                await consumer.getmany(tp, timeout_ms=100)
                high = consumer.highwater(tp)
            if high is not None and end < high:  # a transaction still open: read again once it ends
                await asyncio.sleep(0.05)
                continue
            if token is not None or start == 0:
                return token
            back *= 8


@contextlib.asynccontextmanager
async def _feed_reader(settings: Settings) -> AsyncIterator[tuple[Any, TopicPartition]]:
    """A ``read_committed`` consumer assigned the feed's one partition (None: no topic yet)."""
    topic = settings.topics.models
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50, isolation_level="read_committed")
    await start_client(consumer, settings.kafka.bootstrap_servers)
    tp = TopicPartition(topic, 0)
    try:
        if consumer.partitions_for_topic(topic) is None:
            await consumer._client.force_metadata_update()
        if consumer.partitions_for_topic(topic) is None:
            yield None, tp
            return
        consumer.assign([tp])
        yield consumer, tp
    finally:
        await stop_quietly(consumer, settings.kafka.request_deadline_s)


async def _feed_producer(settings: Settings, name: str, *, plain_if_unsupported: bool) -> tuple[Any, bool]:
    """A started producer for ``name``'s feed, and whether it is transactional: under the
    model's id, which fences any publisher of it in flight and settles its transaction. The
    embedded broker has no transactions (InitProducerId: UnknownError): a plain producer there,
    if ``plain_if_unsupported`` (a publish's first start; after that the broker did have them)."""
    deadline = settings.kafka.request_deadline_s
    producer = make_producer(settings, transactional_id=feed_transactional_id(settings, name),
                             transaction_timeout_ms=settings.model_feed.transaction_timeout_ms)
    try:
        await within(producer.start(), deadline, "starting the model feed's producer")
        return producer, True
    except asyncio.CancelledError:  # stopping mid-start: its connections closed all the same
        await asyncio.shield(stop_quietly(producer, deadline))
        raise
    except (KafkaError, KafkaCallError, OSError) as exc:
        await stop_quietly(producer, deadline)
        if not (plain_if_unsupported and isinstance(exc, (UnknownError, UnsupportedVersionError))):
            raise KafkaCallError(f"cannot start the model feed's transactional producer at "
                                 f"{settings.kafka.bootstrap_servers}: {type(exc).__name__}") from None
        log.info("model feed: no transactions on this broker (%s): a plain publish, not fenced against "
                 "a concurrent one", type(exc).__name__)
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    return producer, False


# what a transaction in a wrong state raises in aiokafka, besides its KafkaErrors
_TXN_ERRORS = (KafkaError, KafkaCallError, IllegalOperation, AssertionError)


async def publish(settings: Settings, store: ModelStore, name: str, reason: str = "") -> int:
    """Send the store's servable versions and its states to the models topic and wait for every
    acknowledgement (bounded by ``kafka.request_deadline_s``); returns the records sent.
    :class:`BrokerError` if the cluster cannot be reached or does not acknowledge.

    On a broker with transactions (Apache Kafka) a publish is a compare-and-set: under the
    model's one transactional id (which fences any other publisher of it in flight), it checks
    that the feed's newest states are still the newest this store read (took, published, or
    refused), then writes its records in one transaction. If another publisher got there first,
    nothing is written and :class:`FeedMoved` is raised, so two publishers never both win and
    neither undoes the other's change. A transaction that failed (fenced by a publisher that
    wrote nothing, a refused commit) is settled by the next attempt's producer and its states
    record looked up: committed, the publish is done; else it starts over. After
    ``FEED_ATTEMPTS`` failures with the feed unmoved: :class:`BrokerError` (never FeedMoved,
    whose callers make their change again). Readers use ``read_committed``. The embedded broker
    has no transactions: there the publish is plain, and two changes at the same instant may
    still race."""
    messages = feed_records(settings, store, name, reason)
    based_on, ours = store.feed_seen(name), states_token(messages[-1].value or b"")
    topic, deadline = settings.topics.models, settings.kafka.request_deadline_s
    pending: int | None = None  # the offset of our states record in a transaction that failed
    unsettled = False  # a transaction that failed and could not be aborted
    errors: list[str] = []
    done = False
    for attempt in range(FEED_ATTEMPTS + 1):
        last_start = attempt == FEED_ATTEMPTS  # only to settle the last failure and look it up
        if last_start and pending is None and not unsettled:
            break
        producer, fenced = await _feed_producer(settings, name, plain_if_unsupported=attempt == 0)
        futures: list[asyncio.Future[Any]] = []
        begun = False
        try:
            unsettled = False  # this start settled it (InitProducerId ends its id's open transaction)
            if pending is not None:
                done, pending = await _committed(settings, pending, ours), None
            if done or last_start:
                break
            if fenced:
                newest = await _within_feed(newest_states_token(settings, name), settings, "newest states")
                if newest == ours:  # ours, committed after all (its offset was not known)
                    done = True
                    break
                if newest is not None and newest != based_on:
                    raise FeedMoved(f"{name}: not published, {topic} has newer states than the store {store.root} "
                                    "(another publisher published after it read the feed); make the change again")
                await producer.begin_transaction()
                begun = True
            for m in messages:
                futures.append(await producer.send(topic, m.value, key=m.key, partition=0))
            await within(asyncio.gather(*futures), deadline, f"publishing {name} to {topic}")
            if fenced:
                await within(producer.commit_transaction(), deadline, f"committing {name}'s publish to {topic}")
                begun = False
            done = True
            break
        except _TXN_ERRORS as exc:
            if not fenced:
                if isinstance(exc, KafkaCallError):
                    raise
                raise BrokerError(f"publishing {name} to {topic} failed: {type(exc).__name__}") from None
            # fenced by a publisher that started meanwhile (a refused commit may come back as an error
            # code aiokafka does not know), or a broker error: settled and looked up by the next attempt
            last = futures[-1] if len(futures) == len(messages) else None
            if last is not None and last.done() and not last.cancelled() and last.exception() is None:
                pending = last.result().offset
            errors.append(type(exc).__name__)
            log.info("model feed: publishing %s failed (%s): settling it and checking again", name,
                     type(exc).__name__)
        finally:
            if begun:  # not left open (read_committed readers wait behind it); a fenced producer
                try:  # cannot abort: its successor did, or the next start does
                    await asyncio.shield(within(producer.abort_transaction(), deadline, "aborting the publish"))
                except (Exception, asyncio.CancelledError):
                    unsettled = True
            _fenced_quietly(producer)
            for fut in futures:  # a fenced producer fails them all: their errors are the one above
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            await stop_quietly(producer, deadline)
    if not done:  # the feed had not moved at the last check: a broker failing the transactions
        raise BrokerError(f"publishing {name} to {topic} failed {len(errors)} times ({', '.join(errors)})")
    store.set_feed_mark(name, ours)  # the feed has these states now
    log.info("published %s to %s: %d records (%s)", name, topic, len(messages), reason)
    return len(messages)


async def _within_feed(aw: Any, settings: Settings, what: str) -> Any:
    """A read of the feed within the request deadline; a client error as the project's own
    (:class:`KafkaCallError`: a publish counts it as a failed attempt)."""
    try:
        return await within(aw, settings.kafka.request_deadline_s, f"reading {settings.topics.models}'s {what}")
    except KafkaError as exc:
        raise KafkaCallError(f"reading {settings.topics.models}'s {what} failed: {type(exc).__name__}") from None


async def _committed(settings: Settings, offset: int, token: str) -> bool:
    """Did the states record a failed publish wrote at ``offset`` commit (``read_committed``
    returns it once the transaction ended; an aborted one it skips)?"""
    async def look() -> bool:
        async with _feed_reader(settings) as (consumer, tp):
            if consumer is None:
                return False
            consumer.seek(tp, offset)
            while await consumer.position(tp) <= offset:
                for record in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []):
                    if record.offset == offset:
                        return states_token(record.value or b"") == token
            return False
    return bool(await _within_feed(look(), settings, f"record at {offset}"))


def _fenced_quietly(producer: Any) -> None:
    """A fenced producer's transaction waiter holds the same error, which no one awaits: taken,
    so it is not logged again as "never retrieved" (aiokafka's own state; best effort)."""
    waiter = getattr(getattr(producer, "_txn_manager", None), "_transaction_waiter", None)
    if isinstance(waiter, asyncio.Future) and waiter.done() and not waiter.cancelled():
        waiter.exception()


def publish_change(settings: Settings, store: ModelStore, name: str, what: str) -> str | None:
    """For the command line, after ``what`` changed the store: publish it (feed mode), and say so
    in one line; None in store mode. A failure says the store changed but scorers did not hear."""
    if settings.model_feed.mode != "feed":
        return None
    try:
        n = asyncio.run(publish(settings, store, name, what))
    except FeedMoved:
        raise
    except StreamError as exc:
        raise StreamError(f"{what} in {store.root}, but not published to {settings.topics.models} "
                          f"({exc}); scorers keep their model until `mlstream models publish` "
                          "succeeds") from None
    return f"published {name} to {settings.topics.models} ({n} records)"
