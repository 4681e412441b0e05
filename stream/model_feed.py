"""The model feed: model versions and registry states on a compacted Kafka topic, so scorers on
machines that share no filesystem serve what the registry promotes.

Whoever changes a store in a way scorers must see (``mlstream models promote|rollback|add|publish``,
``mlstream train``, the trainer's decisions) calls :func:`stream.feed_publish.publish`: the files of the versions
scorers may serve, chunked to fit a message, then the store's states. A scorer's reader
(:mod:`stream.scoring.feed`) reads the topic from its beginning, reassembles and checks each
file with :class:`Assembler` and writes it into its local store, which is only a cache.

Keys and compaction
-------------------
One partition: a reader sees records in the order they were published. ``<model>/states``
holds the newest :class:`~stream.messages.ModelStates` (compaction keeps only the latest: what
to serve now). Every chunk has a key of its own, ``<model>/<version>/<file>/<index>``, so
compaction never drops a chunk of a version still on the topic (re-publishing a version
rewrites the same keys with the same bytes). A publish sends the chunks first and the states
last, and compaction keeps each key's newest record in offset order, so the surviving states
record always follows the chunks it names. Files of versions scorers no longer need (rejected,
candidates, retired ones older than ``keep_retired``) get tombstones, so the topic holds what
a new worker needs and little more.

Chunking and reassembly (seeded)
--------------------------------
>>> import random, msgspec
>>> blob = random.Random(7).randbytes(10_000)
>>> parts = chunks("fraud", "2", "model.onnx", blob, max_message_bytes=4_096)
>>> len(parts), {p.count for p in parts}, parts[0].sha256 == hashlib.sha256(blob).hexdigest()
(5, {5}, True)
>>> max(len(encode(p)) for p in parts) <= 4_096
True
>>> random.Random(1).shuffle(parts)
>>> a = Assembler(max_model_bytes=1 << 20)
>>> out = [a.add(p) for p in parts]
>>> out[:-1] == [None] * 4, out[-1] == blob
(True, True)
>>> bad = [msgspec.structs.replace(p, data=p.data[::-1]) if p.index == 2 else p for p in parts]
>>> for p in bad:
...     _ = a.add(p)
Traceback (most recent call last):
...
stream.model_feed.Refused: checksum: model.onnx of fraud version 2: reassembled sha256 ... does not match ...
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

from stream.config import Settings
from stream.errors import ModelLoadError, StreamError
from stream.messages import Message, ModelChunk, ModelFile, ModelStates, encode
from stream.registry import CARD_FILE, MODEL_FILE, ModelStore

log = logging.getLogger(__name__)

FILES: tuple[ModelFile, ModelFile] = (CARD_FILE, MODEL_FILE)  # type: ignore[assignment]
ENVELOPE = 1_024  # bytes of a chunk record besides its data: names, sha256, counts
MAX_PENDING = 8  # files being reassembled at once (the oldest unfinished one is dropped)
SERVED = ("champion", "shadow")  # states whose versions a scorer may serve


class Refused(StreamError):
    """A record or a version the feed will not write: ``reason`` is one of
    :data:`stream.metrics.FEED_REFUSALS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


def states_key(name: str) -> bytes:
    return f"{name}/states".encode()


def states_token(value: bytes) -> str:
    """Names one published states record (each publish's differ: ``published_at``); a store
    keeps the token of the newest it took or published (``ModelStore.feed_mark``)."""
    return hashlib.sha256(value).hexdigest()[:16]


def chunk_key(name: str, version: str, file: str, index: int) -> bytes:
    return f"{name}/{version}/{file}/{index}".encode()


def chunk_bytes(max_message_bytes: int) -> int:
    """File bytes per chunk: what fits a record once base64 (4/3) and the envelope are added."""
    return (max_message_bytes - ENVELOPE) * 3 // 4


def chunks(name: str, version: str, file: ModelFile, blob: bytes, *,
           max_message_bytes: int) -> list[ModelChunk]:
    """``blob`` in records of at most ``max_message_bytes`` (an empty file is one empty chunk)."""
    step = chunk_bytes(max_message_bytes)
    digest = hashlib.sha256(blob).hexdigest()
    count = max(1, -(-len(blob) // step))
    return [ModelChunk(model=name, model_version=version, file=file, index=i, count=count,
                       size=len(blob), sha256=digest, data=blob[i * step:(i + 1) * step])
            for i in range(count)]


@dataclass
class _Partial:
    sha256: str
    count: int
    size: int
    data: dict[int, bytes] = field(default_factory=dict)


class Assembler:
    """Chunks in (any order), whole checked files out; memory bounded by ``max_model_bytes``
    per file and :data:`MAX_PENDING` files."""

    def __init__(self, max_model_bytes: int):
        self.max_model_bytes = max_model_bytes
        self._parts: dict[tuple[str, str, str], _Partial] = {}  # (model, version, file)

    def add(self, c: ModelChunk) -> bytes | None:
        """The whole file once its last chunk is in, else None; :class:`Refused` if it is bad."""
        what = f"{c.file} of {c.model} version {c.model_version}"
        if c.size > self.max_model_bytes:
            raise Refused("oversized", f"{what}: {c.size} bytes, more than max_model_bytes "
                          f"{self.max_model_bytes} (MLSTREAM_MODEL_FEED__MAX_MODEL_BYTES)")
        if c.index >= c.count or len(c.data) > c.size:
            raise Refused("malformed", f"{what}: chunk {c.index} of {c.count} with {len(c.data)} "
                          f"bytes does not fit a file of {c.size}")
        key = (c.model, c.model_version, c.file)
        p = self._parts.get(key)
        if p is None or (p.sha256, p.count, p.size) != (c.sha256, c.count, c.size):
            # a new publication of this file replaces an unfinished one
            self._parts.pop(key, None)
            p = self._parts[key] = _Partial(c.sha256, c.count, c.size)
            while len(self._parts) > MAX_PENDING:
                self._parts.pop(next(iter(self._parts)))
        p.data[c.index] = c.data
        if len(p.data) < p.count:
            return None
        del self._parts[key]
        blob = b"".join(p.data[i] for i in range(p.count))
        actual = hashlib.sha256(blob).hexdigest()
        if actual != p.sha256 or len(blob) != p.size:
            raise Refused("checksum", f"{what}: reassembled sha256 {actual[:12]}… ({len(blob)} bytes) "
                          f"does not match {p.sha256[:12]}… ({p.size} bytes)")
        return blob

    def unfinished(self, name: str, version: str) -> list[str]:
        """Files of a version with chunks still missing, as ``file (n of count)``."""
        return [f"{f} ({len(p.data)} of {p.count} chunks)" for (m, v, f), p in self._parts.items()
                if (m, v) == (name, version)]

    def drop(self, name: str, version: str, file: str) -> None:
        self._parts.pop((name, version, file), None)


def parse_key(key: bytes | None) -> tuple[str, str, str, int] | None:
    """``(model, version, file, index)`` of a chunk key; None for a states key or anything else."""
    parts = (key or b"").decode(errors="replace").split("/")
    if len(parts) != 4 or parts[2] not in FILES or not parts[3].isdigit():
        return None
    return parts[0], parts[1], parts[2], int(parts[3])


def kept_versions(store: ModelStore, name: str, keep_retired: int) -> list[str]:
    """Versions whose files stay on the topic: the current one, champions and shadows, and the
    newest ``keep_retired`` retired ones (rollback targets)."""
    try:
        current: str | None = store.current_version(name)
    except ModelLoadError:
        current = None
    versions = store.versions(name)
    states = {v: store.state(name, v) for v in versions}
    retired = [v for v in versions if states[v] == "retired" and v != current]
    keep = {v for v in versions if states[v] in SERVED} | set(retired[len(retired) - keep_retired:] if keep_retired else [])
    if current is not None:
        keep.add(current)
    guarded = store.guarded_version(name)  # scored beside the champion: its scorers need it
    if guarded is not None:
        keep.add(guarded)
    return [v for v in versions if v in keep]


def feed_records(settings: Settings, store: ModelStore, name: str, reason: str = "") -> list[Message]:
    """What :func:`stream.feed_publish.publish` sends: chunks of the kept versions, tombstones for the files of the
    others, then the states (always last)."""
    max_bytes = settings.model_feed.max_message_bytes
    kept = kept_versions(store, name, settings.model_feed.keep_retired)
    out: list[Message] = []
    files: dict[str, str] = {}
    for version in kept:
        card, blob = store.load(name, version)  # checks the ONNX file against its card
        files[version] = card.sha256
        card_json = (store.root / name / version / CARD_FILE).read_bytes()
        for file, data in zip(FILES, (card_json, blob)):
            out += [Message(chunk_key(name, version, c.file, c.index), encode(c))
                    for c in chunks(name, version, file, data, max_message_bytes=max_bytes)]
    step = chunk_bytes(max_bytes)
    for version in store.versions(name):
        if version in files:
            continue
        for file in FILES:
            path = store.root / name / version / file
            n = max(1, -(-path.stat().st_size // step)) if path.is_file() else 1
            out += [Message(chunk_key(name, version, file, i), None) for i in range(n)]
    try:
        champion: str | None = store.current_version(name)
    except ModelLoadError:
        champion = None
    states = {v: s for v in store.versions(name) if (s := store.state(name, v)) is not None}
    out.append(Message(states_key(name), encode(ModelStates(
        model=name, champion=champion, states=states, files=files, guard=store.guarded_version(name),
        reason=reason,
        published_at=round(time.time(), 3)))))
    return out
