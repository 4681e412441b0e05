"""Per-entity feature state, one store per input partition, made durable by a changelog topic.

Like a Kafka Streams state store: every batch writes the new state of each entity it touched
to a changelog topic (key = entity, same partition number as the input), and a worker that is
assigned a partition rebuilds its store by reading that changelog partition to its end before
processing. On Apache Kafka the changelog is compacted, so recovery reads one record per entity.

Each record says which input offset its state is as of (the end of the commit interval that
wrote it). A restore applies only records as of the offset processing resumes from, so state
and input offsets agree even when a crash came between the changelog's acknowledgement and the
offset commit: the events replayed then count once, not twice (at-least-once outputs, state as
if exactly once).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import repeat

import numpy as np

# Changelog value: format version byte, then (version 2) the input offset the state is as of
# (int64: every event before it counted, none after), then the float64 state. Version 1 (no
# offset) is still read. An empty value is a tombstone.
_VERSION = 2
_UNTAGGED = 1
_OFFSET = struct.Struct("<q")


def encode_state(row: np.ndarray, upto: int | None = None) -> bytes:
    """One entity's state, as of input offset ``upto`` (``None``: untagged, version 1)."""
    return encode_states(np.asarray(row, dtype=np.float64).reshape(1, -1), upto)[0]


def encode_states(rows: np.ndarray, upto: int | None = None) -> list[bytes]:
    """:func:`encode_state` for each row of a matrix, with one conversion for all of them."""
    width = rows.shape[1] * 8
    buf = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    prefix = bytes([_UNTAGGED]) if upto is None else bytes([_VERSION]) + _OFFSET.pack(upto)
    return [prefix + buf[i * width : (i + 1) * width] for i in range(len(rows))]


def decode_changelog(value: bytes, width: int) -> tuple[int | None, np.ndarray | None]:
    """The input offset a changelog record's state is as of (``None``: untagged) and the state
    (``None``: a tombstone).

    >>> decode_changelog(encode_state(np.array([1.5, 2.0]), upto=42), 2)
    (42, array([1.5, 2. ]))
    >>> decode_changelog(encode_state(np.array([1.5, 2.0])), 2), decode_changelog(b"", 2)
    ((None, array([1.5, 2. ])), (None, None))
    """
    if not value:
        return None, None
    head = 1 + _OFFSET.size if value[0] == _VERSION else 1
    if value[0] not in (_VERSION, _UNTAGGED) or len(value) != head + 8 * width:
        raise ValueError(f"changelog record has format {value[0]} and {len(value)} bytes; expected "
                         f"format {_VERSION} with {1 + _OFFSET.size + 8 * width} bytes (or {_UNTAGGED} "
                         f"with {1 + 8 * width})")
    upto = _OFFSET.unpack_from(value, 1)[0] if head > 1 else None
    return upto, np.frombuffer(value, dtype="<f8", offset=head).copy()


class EntityStore:
    """Entity key -> row of a float64 state matrix, for one partition.

    Rows are reused after eviction, so memory is bounded by the live entities, which are in
    turn bounded by ``max_entities`` (least recently seen evicted first) and a time-to-live.
    """

    def __init__(self, width: int, *, max_entities: int = 2_000_000, initial: int = 1024):
        self.width = width
        self.max_entities = max_entities
        self.rows: dict[str, int] = {}
        self.keys: list[str | None] = []
        self.matrix = np.zeros((initial, width), dtype=np.float64)
        self.last_seen = np.zeros(initial, dtype=np.float64)
        self._free: list[int] = []
        self.restored = 0  # changelog records applied at recovery
        # the input offset of the next event to count (None: unknown): state is as of it
        self.position: int | None = None
        # restored: the lowest offset a skipped changelog record was as of (processing that
        # starts at or past it needs the state restored again, as of where it starts)
        self.skipped_from: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def as_of(self, offset: int) -> bool:
        """Can processing go on from input ``offset`` with this state? Not if the state counts
        events at or past it (a consumer gone back), nor if the restore skipped a record as of
        an offset at or before it (events it would have counted are not processed again).

        >>> store = EntityStore(2)
        >>> store.position, store.skipped_from = 10, 12
        >>> store.as_of(10), store.as_of(9), store.as_of(11), store.as_of(12)
        (True, False, True, False)
        """
        if self.position is not None and offset < self.position:
            return False
        return self.skipped_from is None or offset < self.skipped_from

    def rows_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row index per key, allocating zeroed rows for new entities."""
        out = list(map(self.rows.get, keys, repeat(-1)))
        if -1 in out:  # (one C scan: most batches bring no new entity)
            for i, r in enumerate(out):
                if r < 0:
                    out[i] = self._allocate(keys[i])
        return np.asarray(out, dtype=np.int64)

    def _allocate(self, key: str) -> int:
        row = self.rows.get(key)
        if row is not None:  # the same new key twice in one batch
            return row
        if self._free:
            row = self._free.pop()
        else:
            row = len(self.keys)
            if row >= len(self.matrix):
                grow = len(self.matrix)
                self.matrix = np.vstack([self.matrix, np.zeros((grow, self.width))])
                self.last_seen = np.concatenate([self.last_seen, np.zeros(grow)])
            self.keys.append(None)
        self.matrix[row] = 0.0
        self.keys[row] = key
        self.rows[key] = row
        return row

    def put(self, key: str, row_state: np.ndarray | None, seen_at: float = 0.0) -> None:
        """Apply one changelog record (recovery); ``None`` deletes."""
        if row_state is None:
            self.delete(key)
            return
        row = self._allocate(key)
        self.matrix[row] = row_state
        self.last_seen[row] = seen_at

    def delete(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is not None:
            self.keys[row] = None
            self._free.append(row)

    def touch(self, rows: np.ndarray, now: float) -> None:
        self.last_seen[rows] = now

    def evict(self, now: float, ttl_s: float) -> list[str]:
        """Drop entities idle for ``ttl_s`` and, past ``max_entities``, the least recent ones."""
        live = np.fromiter(self.rows.values(), dtype=np.int64, count=len(self.rows))
        if len(live) == 0:
            return []
        idle = live[self.last_seen[live] < now - ttl_s]
        excess = len(live) - len(idle) - self.max_entities
        if excess > 0:
            rest = np.setdiff1d(live, idle)
            idle = np.r_[idle, rest[np.argsort(self.last_seen[rest])[:excess]]]
        evicted = [k for k in (self.keys[r] for r in idle) if k is not None]
        for key in evicted:
            self.delete(key)
        return evicted
