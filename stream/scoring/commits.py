"""The scorer's commit protocol: what the next commit covers, and how it is committed.

At-least-once: a commit writes the interval's feature batches and the changelog of the entities
changed since the last one, waits until every output of the interval (predictions, dead letters,
feature batches, shadow scores, changelog) is acknowledged, and only then commits the input
offsets. Exactly-once: the same interval is one Kafka transaction
(:mod:`stream.scoring.transactions`). A commit that failed
*holds* the worker (no new records until one succeeds), so that what a rewind or a crash
replays, and counts again in entity state, stays one commit interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import BrokerError, KafkaCallError
from stream.kafka import acknowledged, commit_or_redeliver, send_records, within
from stream.scoring.batch_output import BatchOutput
from stream.scoring.feature_rows import FeatureRows, encode_batches
from stream.scoring.state import EntityStore, encode_states
from stream.scoring.transactions import OutputTransaction

log = logging.getLogger(__name__)

# a commit's own records: topic, partition, keys, values (feature batches, changelog)
_Write = tuple[str, int, list[bytes | None], list[bytes]]


class Commits:
    """The outputs, changed entities and offsets since the last commit, and their commit.

    ``stores`` is the worker's own dict of entity stores (a rewind clears it: state is rebuilt
    from the changelog before the next batch). ``producer`` and ``txn`` are set when the worker
    starts; every call that talks to the group takes the worker's current ``consumer``.
    """

    def __init__(self, settings: Settings, stores: dict[int, EntityStore]) -> None:
        self.settings = settings
        self.stores = stores
        self.producer: AIOKafkaProducer | None = None
        self.txn: OutputTransaction | None = None  # exactly-once only
        # since the last commit: delivery futures, entities changed, offsets reached
        self.pending: list[asyncio.Future[Any]] = []
        self.dirty: dict[int, dict[str, int]] = {}
        self.offsets: dict[TopicPartition, int] = {}
        # the monitor's rows, written at the commit: the monitor needs no millisecond latency,
        # and a partition's micro-batches merged into one feature batch per commit interval
        # (up to ``max_batch_size`` rows) cost a low-rate scorer one encode and one produce
        # instead of one per micro-batch (bounded: a commit is due once
        # ``max_uncommitted_events`` events wait)
        self.features: dict[int, list[FeatureRows]] = {}
        self.events = 0
        self.last = time.monotonic()
        self._in_flight: asyncio.Future[None] | None = None
        # a commit failed: no new records until one succeeds
        self.hold = False
        # what this worker committed, per partition it still owns: a broker restarted a moment
        # ago answers "no committed offset" while it loads the group (aiokafka reads OffsetFetch
        # v2+'s group-level COORDINATOR_LOAD_IN_PROGRESS as that), and a rewind would replay the
        # partition from its first record
        self.committed: dict[TopicPartition, int] = {}
        # outputs were lost: back to the committed offsets before any new record (retried until done)
        self.must_rewind = False
        # what we had committed when the consumer was abandoned, per partition the new one may get
        self.resuming: dict[TopicPartition, int] = {}

    def record(self, topic: str, out: BatchOutput, futures: list[asyncio.Future[Any]], events: int) -> None:
        """A processed micro-batch of ``events`` events: its outputs in flight, entities touched,
        offsets reached."""
        self.pending += futures
        for p, po in out.partitions.items():
            self.dirty.setdefault(p, {}).update(po.touched)
            if po.features is not None:
                self.features.setdefault(p, []).append(po.features)
            self.offsets[TopicPartition(topic, p)] = po.last_offset + 1
        self.events += events

    def due(self) -> bool:
        """Enough events, or enough time, since the last commit."""
        sc = self.settings.scoring
        return (self.events >= sc.max_uncommitted_events
                or time.monotonic() - self.last >= sc.commit_interval_ms / 1000)

    def forget(self) -> None:
        """The broker lost its data: what was not committed is gone with it."""
        self.pending, self.dirty, self.offsets, self.features, self.hold = [], {}, {}, {}, False
        self.committed, self.must_rewind, self.resuming = {}, False, {}

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions gone to other workers: their commits from now on are not ours."""
        for tp in partitions:
            self.committed.pop(tp, None)

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Write the changelog of entities changed since the last commit, wait for every output
        to be acknowledged, then commit the input offsets (at-least-once).

        Like Kafka Streams' record cache, an entity updated many times between commits is
        written once, with its latest state."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task  # offsets only move forward: the earlier commit first
        await self._finish(consumer, *self._stage())

    async def in_background(self, consumer: AIOKafkaConsumer) -> None:
        """The commit cadence without stalling the loop: a task writes the feature batches and
        the changelog, waits for the acknowledgements and commits while the next batches are
        scored (waiting inline cost a produce round trip of latency every commit interval, and
        writing inline one per produce batch of feature rows: the producer queues one batch per
        partition). One commit in flight at a time; its error is raised here, at the next
        cadence check, as an inline commit's would be."""
        if self.txn is not None:  # a transaction commits before the next batch writes
            await self.commit(consumer)
            return
        task = self._in_flight
        if task is not None:
            if not task.done():
                return  # the next cadence check starts the next one
            self._in_flight = None
            task.result()
        if not (self.pending or self.dirty or self.offsets or self.features):
            return
        self._in_flight = asyncio.ensure_future(self._finish(consumer, *self._stage()))

    def _stage(self) -> tuple[list[asyncio.Future[Any]], list[_Write], dict[TopicPartition, int]]:
        """Take what the next commit covers: its outputs in flight, the feature batches and the
        changelog it writes (encoded now, so that the changelog holds the state as of its
        offsets while the next batches change it) and its offsets."""
        futures = self.pending
        self.pending = []
        offsets = {tp: o for tp, o in self.offsets.items() if tp.partition in self.stores}
        self.offsets = {}
        topics = self.settings.topics
        writes: list[_Write] = []
        for p, parts in self.features.items():
            if p in self.stores:  # (a partition lost uncommitted has its batches dropped with it)
                values = encode_batches(p, parts, self.settings.scoring.max_batch_size)
                writes.append((topics.features, p, [None] * len(values), values))
        self.features = {}
        upto = {tp.partition: o for tp, o in offsets.items()}
        for p, touched in self.dirty.items():
            store = self.stores.get(p)
            if store is None or not touched:
                continue
            keys: list[bytes | None] = [k.encode() for k in touched]
            # as of the offsets this commit covers: a restore from an older commit skips them
            values = encode_states(store.matrix[list(touched.values())], upto.get(p))
            writes.append((topics.changelog, p, keys, values))
        self.dirty = {}
        self.events = 0
        self.last = time.monotonic()
        return futures, writes, offsets

    async def _finish(self, consumer: AIOKafkaConsumer, futures: list[asyncio.Future[Any]], writes: list[_Write],
                      offsets: dict[TopicPartition, int]) -> None:
        deadline = self.settings.kafka.request_deadline_s
        await self._deliver(futures, writes)
        try:
            if self.txn is None:
                done = await commit_or_redeliver(consumer, offsets, deadline)
            else:
                try:
                    done = await within(self._commit_transaction(consumer, offsets), deadline, "transaction commit")
                except KafkaCallError as exc:
                    # the commit goes on inside the producer (aiokafka shields it): whether it lands
                    # is unknown, and no transaction can begin before it ends
                    raise BrokerError(f"{exc}; its outcome is unknown: stopping so that the records after the "
                                      "last known commit are processed again after a restart") from None
            if done:
                self.committed.update(offsets)
        except KafkaCallError:
            for tp, o in offsets.items():  # outputs are delivered: commit them next time
                self.offsets.setdefault(tp, o)
            self.hold = True
            raise

    async def _deliver(self, futures: list[asyncio.Future[Any]], writes: list[_Write]) -> None:
        """Write the commit's own records and wait until every output it covers is acknowledged:
        their offsets must never be committed if one is lost."""
        assert self.producer is not None
        if writes and self.txn is not None:
            await self.txn.ensure_open()
        for topic, p, keys, values in writes:  # (a new list: the caller's stays what it was)
            futures = futures + await send_records(self.producer, topic, p, keys, values)
        if futures:
            await acknowledged(futures, self.settings.kafka.request_deadline_s)

    async def _commit_transaction(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
        """Exactly-once commit. If the transaction cannot commit (a rebalance took the group
        generation, a broker error), its outputs are aborted and the worker rewinds to the
        committed offsets with state rebuilt from the committed changelog, as a restart would."""
        assert self.txn is not None
        try:
            await self.txn.commit(offsets)
            return True
        except KafkaError as exc:
            log.warning("transaction aborted (%s): rewinding to the committed offsets",
                        type(exc).__name__)
            await self.txn.abort()
            await self.rewind(consumer)
            return False

    def drop_uncommitted(self) -> None:
        """Outputs were lost: nothing since the last commit counts (no commit may cover it now),
        entity state is rebuilt from the changelog, and the consumer must go back to the committed
        offsets (:meth:`rewind`) before it reads another record."""
        self.must_rewind = True
        self.stores.clear()
        self.dirty = {}
        self.offsets = {}
        self.features = {}
        self.pending = []
        self.hold = False

    def abandon(self) -> None:
        """The consumer is being replaced: everything uncommitted is dropped (:meth:`drop_uncommitted`)
        and a commit still in flight is cancelled, as a restart would lose it (its records are read
        again: duplicates, never a loss). The new consumer starts at the committed offsets."""
        task, self._in_flight = self._in_flight, None
        if task is not None and not task.done():
            task.cancel()
        self.drop_uncommitted()
        self.must_rewind = False
        self.resuming = dict(self.committed)  # for the new consumer's assignment (:meth:`resume`)

    async def resume(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """After :meth:`abandon`, as partitions are assigned to the new consumer: where the broker's
        committed offset is missing or behind ours (the group not loaded yet), start at ours."""
        for tp in assigned:
            ours = self.resuming.pop(tp, None)
            if ours is None:
                continue
            try:
                theirs = await self._broker_committed(consumer, tp)
            except (KafkaCallError, KafkaError):  # unanswered: ours is what we know
                theirs = None
            at = resume_offset(theirs, ours)
            if at != theirs:
                consumer.seek(tp, at)

    async def resume_offsets(self, consumer: AIOKafkaConsumer, partitions: list[int]) -> dict[int, int | None]:
        """Where processing of each partition resumes, as of which its state is restored: the
        committed offset (see :func:`resume_offset`); with none, the log start (the consumer reads
        from the earliest record); ``None`` if the broker does not answer (every changelog record
        applies, and the worker rebuilds state if the first record turns out to be behind it)."""
        upto: dict[int, int | None] = {}
        try:
            for p in partitions:
                tp = TopicPartition(self.settings.topics.events, p)
                upto[p] = resume_offset(await self._broker_committed(consumer, tp), self.committed.get(tp))
                if upto[p] is None:
                    start = await within(consumer.beginning_offsets([tp]), self.settings.kafka.request_deadline_s,
                                         "log start")
                    upto[p] = start.get(tp)
        except (KafkaCallError, KafkaError) as exc:
            log.warning("where partitions %s resume is unknown (%s): their state is restored whole",
                        [p for p in partitions if p not in upto], exc)
        return upto

    async def _broker_committed(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """The group's committed offset as the broker answers it, within the request deadline."""
        return await within(consumer.committed(tp), self.settings.kafka.request_deadline_s, "committed offset")

    async def rewind(self, consumer: AIOKafkaConsumer) -> None:
        """Back to the committed offsets, with state rebuilt from the changelog before the next
        batch: what a restart would do, without one."""
        self.drop_uncommitted()
        for tp in consumer.assignment():
            committed = resume_offset(await consumer.committed(tp), self.committed.get(tp))
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        self.must_rewind = False


def resume_offset(broker: int | None, ours: int | None) -> int | None:
    """Where a partition resumes: the broker's committed offset, unless this worker committed
    further (a broker loading the group answers none, see ``Commits.committed``).

    >>> resume_offset(None, 7), resume_offset(9, 7), resume_offset(5, 7), resume_offset(None, None)
    (7, 9, 7, None)
    """
    return ours if ours is not None and (broker is None or broker < ours) else broker
