"""The scorer's side of the model feed (:mod:`stream.model_feed`): follow the compacted models
topic, write each checked version into the local store (a cache) with the registry's states,
and tell the worker, which swaps between two batches through its usual checks.

No consumer group: every scorer reads the whole topic from its beginning at start (catching up
on whatever its local store missed), then follows it. A scorer whose local store has nothing to
serve waits for the feed to deliver the champion, at most ``model_feed.start_timeout_s``.
A bad record (oversized, garbled, a chunk whose file fails its sha256, a version whose chunks
are missing) is refused, logged once and counted in ``mlstream_model_feed_refused_total``;
the worker keeps serving what it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import MessageError, ModelLoadError, StreamError
from stream.kafka import make_consumer, start_client, stop_quietly
from stream.kafka_pacing import set_fetch_wait
from stream.messages import ModelChunk, ModelStates, decode
from stream.metrics import Metrics
from stream.model_feed import SERVED, Assembler, Refused, parse_key, states_key, states_token
from stream.registry import CARD_FILE, MODEL_FILE, ModelStore

log = logging.getLogger(__name__)

MAX_LOGGED = 1_000  # refusals remembered so that each is logged once
MAX_HALVES = 8  # versions with one of their two files received, waiting for the other


class FeedReader:
    """Reads the models topic into the local store; :attr:`changed` is set when the store
    changed in a way the worker must look at (a new champion or new states)."""

    def __init__(self, settings: Settings, metrics: Metrics, store: ModelStore | None = None):
        self.settings = settings
        self.metrics = metrics
        self.name = settings.model_name
        self.store = store if store is not None else ModelStore(settings.model_store)
        self.assembler = Assembler(settings.model_feed.max_model_bytes)
        self.changed = threading.Event()  # written from the thread that handles records
        self.tp = TopicPartition(settings.topics.models, 0)
        self.consumer: AIOKafkaConsumer | None = None
        self._halves: dict[str, dict[str, bytes]] = {}  # version -> file -> checked bytes
        self._refused: dict[tuple[str, str], None] = {}  # (reason, what): logged already
        self._bad_versions: dict[str, None] = {}  # versions refused (until one is written)
        self._defer = False  # catching up: keep only the newest states, applied at the end
        self._deferred: tuple[ModelStates, str] | None = None  # with its token
        self.states_seen = False  # a states record of this model read since the topic was opened
        self._next_offset = 0  # the offset after the last record read

    # -- Kafka -------------------------------------------------------------------------
    async def _open(self, *, wait_for_topic: bool) -> bool:
        """Assign the topic's one partition from its beginning; False if the topic is missing
        (then assigned anyway only if ``wait_for_topic``, else the consumer is closed)."""
        s = self.settings
        # publishes are transactions (Apache Kafka): an aborted one (fenced by a concurrent
        # publisher) is never read
        self.consumer = make_consumer(s, group_id=None, fetch_max_wait_ms=100, isolation_level="read_committed")
        await start_client(self.consumer, s.kafka.bootstrap_servers)
        if self.consumer.partitions_for_topic(self.tp.topic) is None:
            await self.consumer._client.force_metadata_update()
        exists = self.consumer.partitions_for_topic(self.tp.topic) is not None
        if not exists and not wait_for_topic:  # seeking a missing topic waits a request timeout
            await self.close()
            return False
        self.consumer.assign([self.tp])
        await self.consumer.seek_to_beginning(self.tp)
        self.states_seen = False  # read again from the beginning
        self._next_offset = 0
        return exists

    async def catch_up(self, timeout_s: float) -> bool:
        """Read what the topic holds now (from the beginning on the first call, then on from
        where the last call stopped) into the store; False if the end was not reached within
        ``timeout_s`` (the position is kept for the next call). For whoever changes the
        registry: the change is made on the newest published states, not on a store that
        missed them.

        Chunks are written as they come; of the states, only the newest is taken, and only if
        it is not the one this store last took or published (``ModelStore.feed_mark``): a store
        changed since (a decision whose publish failed) keeps its change, to be published next,
        unless someone else published meanwhile, whose states then win (logged). No clocks are
        compared."""
        if self.consumer is None and not await self._open(wait_for_topic=False):
            return True  # no feed yet: nothing was published
        assert self.consumer is not None
        deadline = time.monotonic() + timeout_s
        self._defer = True
        try:
            while True:
                await self.poll(timeout_ms=200)
                if await self._at_end():
                    break
                if time.monotonic() >= deadline:
                    return False
        finally:
            self._defer = False
        return self._take_deferred()

    def _take_deferred(self) -> bool:
        """Take the newest states read while catching up, unless this store already took or
        published them (then a change made here since, not yet published, is kept); False if
        the local store could not be written."""
        if self._deferred is None:
            return True
        latest, token = self._deferred
        self._deferred = None
        held, changed = self.store.feed_mark(self.name)
        if token == held:
            return True  # the feed has not moved since this store took or published it
        if changed:
            log.warning("model feed: %s in %s changed since its last publish, and newer states were "
                        "published meanwhile: taking those (champion %s)", self.name, self.store.root,
                        latest.champion)
        try:
            self._states(latest, token)
        except (OSError, ModelLoadError) as exc:  # the local store: a full disk, a bad registry
            log.error("model feed: cannot write to the local store: %s", exc)
            return False
        return True

    async def try_catch_up(self, timeout_s: float, deadline_s: float) -> str:
        """:meth:`catch_up` bounded in wall time too: "" when caught up, else why not (after a
        broken connection the reader is closed, so the next call starts afresh)."""
        try:
            if await asyncio.wait_for(self.catch_up(timeout_s), timeout_s + deadline_s):
                return ""
            return f"not read to its end within {timeout_s:g}s"
        except (KafkaError, TimeoutError, StreamError) as exc:
            await self.close()
            return str(exc) if isinstance(exc, StreamError) else type(exc).__name__

    async def start(self, stop: asyncio.Event) -> None:
        """Read the topic to its end, then, if the local store has nothing to serve, go on
        reading until the champion arrives or ``start_timeout_s`` passes (ModelLoadError)."""
        s = self.settings
        exists = await self._open(wait_for_topic=True)
        assert self.consumer is not None
        if not exists:
            log.warning("the model feed's topic %s does not exist (yet): no model arrives until it is "
                        "created", self.tp.topic)
        deadline = time.monotonic() + s.model_feed.start_timeout_s
        # up to the end, as in catch_up: only the newest states, and not over a change made in a
        # store shared with a publisher (a trainer's decision not yet published)
        self._defer = True
        try:
            while not stop.is_set() and time.monotonic() < deadline and (exists or not self.servable()):
                await self.poll(timeout_ms=200)
                if await self._at_end():
                    self._defer = False  # read to the end: states from now on are taken as they come
                    self._take_deferred()
                    if self.servable():
                        break
        except BaseException:
            self._defer = False
            raise
        if self._defer and not self.servable():  # stopped or timed out before the end, nothing to
            self._defer = False  # serve: the newest states read so far
            self._take_deferred()
        # else, still short of the end with a model to serve: follow() takes the newest states
        # once it reaches the end (older ones would undo newer published states, or a change
        # waiting here for its publish)
        if not stop.is_set() and not self.servable():
            raise ModelLoadError(self.store.root / self.name, "nothing to serve in the local store, "
                                 f"and the feed {self.tp.topic} delivered no champion within "
                                 f"{s.model_feed.start_timeout_s:g}s (MLSTREAM_MODEL_FEED__START_TIMEOUT_S); "
                                 "publish one with `mlstream models publish` or `mlstream train`")
        self.changed.clear()  # the worker loads what is there now

    async def follow(self, stop: asyncio.Event) -> None:
        """Read new records until ``stop``; the client reconnects by itself after broker errors."""
        if self.consumer is not None:  # caught up: idle fetches wait longer (fewer requests)
            set_fetch_wait(self.consumer, self.settings.model_feed.follow_wait_ms)
        while not stop.is_set():
            try:
                await self.poll(timeout_ms=500)
                if self._defer and await self._at_end():  # start() stopped short of the end
                    self._defer = False
                    self._take_deferred()
            except KafkaError as exc:
                log.warning("model feed: %s; reading on", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)  # backoff, cut short by a stop

    async def _at_end(self) -> bool:
        """Read up to the high watermark of the last fetch (the embedded broker's ListOffsets is
        not exact)."""
        assert self.consumer is not None
        end = self.consumer.highwater(self.tp)
        return end is not None and await self.consumer.position(self.tp) >= end

    async def poll(self, timeout_ms: int) -> None:
        assert self.consumer is not None
        batches = await self.consumer.getmany(self.tp, timeout_ms=timeout_ms, max_records=100)
        for records in batches.values():
            for rec in records:
                if rec.offset < self._next_offset:  # read again from further back (the client reset
                    self._defer = True  # its position): as at start, only the newest states, at the end
                self._next_offset = rec.offset + 1
                await asyncio.to_thread(self.handle, rec.key, rec.value)

    async def close(self) -> None:
        if self.consumer is not None:
            await stop_quietly(self.consumer, self.settings.kafka.request_deadline_s)
            self.consumer = None

    def servable(self) -> bool:
        try:
            self.store.current_version(self.name)
            return True
        except ModelLoadError:
            return False

    # -- records (no Kafka: the tests feed these directly) -----------------------------
    def handle(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the models topic; a refusal is counted and logged once, never raised."""
        try:
            self._handle(key, value)
        except Refused as exc:
            self.refuse(exc.reason, exc.detail)
        except (OSError, ModelLoadError) as exc:  # the local store: a full disk, a bad registry
            log.error("model feed: cannot write to the local store: %s", exc)

    def _handle(self, key: bytes | None, value: bytes | None) -> None:
        where = parse_key(key)
        if value is None:  # a tombstone: compaction will drop that chunk
            if where is not None:
                self.assembler.drop(*where[:3])
            return
        limit = self.settings.model_feed.max_message_bytes
        if len(value) > limit:
            raise Refused("oversized", f"a record of {len(value)} bytes (key {key!r:.80}), more than "
                          f"max_message_bytes {limit} (MLSTREAM_MODEL_FEED__MAX_MESSAGE_BYTES)")
        try:
            if key == states_key(self.name):
                states = decode(value, ModelStates)
                if states.model != self.name:
                    return
                self.states_seen = True
                token = states_token(value)
                if self._defer:
                    self._deferred = (states, token)
                elif token != self.store.feed_mark(self.name)[0]:
                    self._states(states, token)
                else:  # this store took or published these states already: a change made here
                    self.changed.set()  # since (a decision waiting for its publish) is not undone
            elif where is not None and where[0] == self.name:
                chunk = decode(value, ModelChunk)
                if (chunk.model, chunk.model_version, chunk.file, chunk.index) != where:
                    raise Refused("malformed", f"chunk {chunk.model}/{chunk.model_version}/{chunk.file}/"
                                  f"{chunk.index} under key {key!r:.80}")
                self._chunk(chunk)
            elif where is None and not (key or b"").endswith(b"/states"):
                raise Refused("malformed", f"a record with key {key!r:.80} is neither a chunk nor states")
        except MessageError as exc:
            raise Refused("malformed", f"key {key!r:.80}: {exc}") from None

    def _chunk(self, chunk: ModelChunk) -> None:
        version = chunk.model_version
        try:
            blob = self.assembler.add(chunk)
        except Refused as exc:
            self._bad_version(version)
            raise exc from None
        if blob is None:
            return
        halves = self._halves.setdefault(version, {})
        halves[chunk.file] = blob
        while len(self._halves) > MAX_HALVES:
            self._halves.pop(next(iter(self._halves)))
        if len(halves) == 2:
            del self._halves[version]
            # no states applied here: a publish ends with its states, which come next
            self._write(version, halves[CARD_FILE], halves[MODEL_FILE])

    def _write(self, version: str, card_json: bytes, model: bytes) -> None:
        sha = hashlib.sha256(model).hexdigest()
        try:
            card = json.loads(card_json)
            ok = card["name"] == self.name and str(card["version"]) == version
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self._bad_version(version)
            raise Refused("malformed", f"the card of {self.name} version {version} does not name it")
        if card.get("sha256") != sha:
            self._bad_version(version)
            raise Refused("checksum", f"{self.name} version {version}: the card's sha256 "
                          f"{str(card.get('sha256'))[:12]}… is not its model's {sha[:12]}…")
        self._bad_versions.pop(version, None)
        if self.store.put(self.name, version, card_json, model):
            self.metrics.model_feed_versions.inc()
            log.info("model feed: %s version %s written to the local store %s", self.name, version,
                     self.store.root)

    def _states(self, states: ModelStates, token: str) -> None:
        """Take the states once every version they ask to serve is here with the published bytes."""
        if states.model != self.name:
            return
        wanted = {v for v, s in states.states.items() if s in SERVED}
        if states.champion is not None:
            wanted.add(states.champion)
        if states.guard is not None:
            wanted.add(states.guard)
        missing = sorted(v for v in wanted if self._held_sha(v) != states.files.get(v))
        if missing:  # kept as they are until states whose versions are all here
            for v in missing:
                sha = states.files.get(v, "")
                if v in self._bad_versions:
                    self._once("refused", v, f"keeping the current model: {self.name} version {v} "
                               "named by the registry was refused")
                    continue
                unfinished = self.assembler.unfinished(self.name, v)
                self.refuse("missing_chunk", f"{self.name} version {v} is named {states.states.get(v, 'champion')} "
                            f"but its chunks are not all on the feed ({', '.join(unfinished) or 'none received'})",
                            count_key=f"{v}/{sha}")
            self.store.note_feed_seen(self.name, token)  # read: a publish from here may replace them
            return
        reason = f"model feed: {states.reason}" if states.reason else "model feed"
        if self.store.mirror(self.name, states.champion, states.states, reason, guard=states.guard):
            log.info("model feed: %s champion %s, states %s", self.name, states.champion, states.states)
        self.store.set_feed_mark(self.name, token)
        # even when nothing changed here: a store shared with the publisher already holds it all
        self.changed.set()

    def _bad_version(self, version: str) -> None:
        self._bad_versions[version] = None
        while len(self._bad_versions) > MAX_LOGGED:
            self._bad_versions.pop(next(iter(self._bad_versions)))

    def _held_sha(self, version: str) -> str | None:
        path = self.store.root / self.name / version
        try:
            return str(json.loads((path / CARD_FILE).read_text())["sha256"]) \
                if (path / MODEL_FILE).is_file() else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def refuse(self, reason: str, detail: str, count_key: str | None = None) -> None:
        """Count a refusal; log it once (``count_key``: count it once too)."""
        first = self._once(reason, count_key or detail, f"model feed: refused ({reason}): {detail}; "
                           "keeping the current model")
        if first or count_key is None:
            self.metrics.model_feed_refused.labels(reason).inc()

    def _once(self, reason: str, what: str, message: str) -> bool:
        if (reason, what) in self._refused:
            return False
        self._refused[(reason, what)] = None
        while len(self._refused) > MAX_LOGGED:
            self._refused.pop(next(iter(self._refused)))
        log.error("%s", message)
        return True


async def start_feed(settings: Settings, metrics: Metrics, stop: asyncio.Event) -> FeedReader | None:
    """A started reader, caught up (None in store mode: the worker polls a shared store)."""
    if settings.model_feed.mode != "feed":
        return None
    feed = FeedReader(settings, metrics)
    try:
        await feed.start(stop)
    except BaseException:
        await feed.close()
        raise
    return feed


async def sync_store(settings: Settings, store: ModelStore, what: str, *, required: bool = True) -> None:
    """Before ``what`` changes ``store``: take the newest states published on the feed (and the
    versions they serve), so the change is made on them and its publish does not undo another
    publisher's newer decision. Nothing in store mode. If the feed cannot be read to its end:
    StreamError (nothing was changed), or a warning when not ``required`` (a bootstrap
    ``mlstream train`` on a machine without Kafka)."""
    if settings.model_feed.mode != "feed":
        return
    reader = FeedReader(settings, Metrics.create(), store)
    timeout_s = settings.model_feed.start_timeout_s
    try:
        why = await reader.try_catch_up(timeout_s, settings.kafka.request_deadline_s)
    finally:
        await reader.close()
    if why and not required:
        log.warning("%s: the model feed %s could not be read (%s): working on this store alone",
                    what, settings.topics.models, why)
    elif why:
        raise StreamError(f"{what}: not done, the model feed {settings.topics.models} could not be read "
                          f"({why}) and the store may be behind it (MLSTREAM_MODEL_FEED__MODE=store changes "
                          "the store alone)")
