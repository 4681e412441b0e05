"""Per-entity feature state, one store per input partition, made durable by a changelog topic.

Like a Kafka Streams state store: every batch writes the new state of each entity it touched
to a changelog topic (key = entity, same partition number as the input), and a worker that is
assigned a partition rebuilds its store by reading that changelog partition to its end before
processing. On Apache Kafka the changelog is compacted, so recovery reads one record per entity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Changelog value: format version byte + float64 state. An empty value is a tombstone.
_VERSION = 1


def encode_state(row: np.ndarray) -> bytes:
    return bytes([_VERSION]) + np.ascontiguousarray(row, dtype="<f8").tobytes()


def encode_states(rows: np.ndarray) -> list[bytes]:
    """:func:`encode_state` for each row of a matrix, with one conversion for all of them."""
    width = rows.shape[1] * 8
    buf = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    prefix = bytes([_VERSION])
    return [prefix + buf[i * width : (i + 1) * width] for i in range(len(rows))]


def decode_state(value: bytes, width: int) -> np.ndarray | None:
    if not value:
        return None
    if value[0] != _VERSION or len(value) != 1 + 8 * width:
        raise ValueError(f"changelog record has format {value[0]} and {len(value)} bytes; "
                         f"expected format {_VERSION} with {1 + 8 * width} bytes")
    return np.frombuffer(value, dtype="<f8", offset=1).copy()


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

    def __len__(self) -> int:
        return len(self.rows)

    def rows_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row index per key, allocating zeroed rows for new entities."""
        get = self.rows.get
        out = [get(k, -1) for k in keys]
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
