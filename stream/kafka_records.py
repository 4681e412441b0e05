"""Consumer records without an object per record, for the loops that read many small ones.

aiokafka wraps every record it decodes in a ``ConsumerRecord`` dataclass of eleven fields (the
topic and partition repeated, sizes, a checksum): about 0.6 µs a record, some 8 % of the scorer's
CPU per event in 1,000-event batches. The records its decoder made (``DefaultRecord``, in C)
already hold all a loop reads: ``offset``, ``key``, ``value``, ``timestamp`` and ``headers``. A
consumer made with ``value_deserializer=raw_records`` is handed those; every other consumer in the
process gets aiokafka's records as before. Without the hook (an aiokafka whose fetcher has no
``_consumer_record``), ``raw_records`` is an identity deserializer: the same values, at the old
cost.

>>> from aiokafka.record.default_records import DefaultRecordBatchBuilder
>>> from aiokafka.record.memory_records import MemoryRecords
>>> from aiokafka.structs import TopicPartition
>>> builder = DefaultRecordBatchBuilder(2, 0, is_transactional=0, producer_id=-1, producer_epoch=-1,
...                                     base_sequence=-1, batch_size=1 << 20)
>>> for i in range(3):
...     _ = builder.append(i, timestamp=1_700_000_000_000 + i, key=b"u1", value=b'{"n": %d}' % i, headers=[])
>>> data = bytes(builder.build())
>>> install()
True
>>> def records(deserializer):
...     part = PartitionRecords(TopicPartition("events", 0), MemoryRecords(data), [], 1, None, deserializer,
...                             False, 0)  # from offset 1, read_uncommitted
...     return list(part)
>>> [(type(r).__name__, r.offset, r.key, r.value, r.timestamp, r.headers) for r in records(raw_records)]
[('DefaultRecord', 1, b'u1', b'{"n": 1}', 1700000000001, []), ('DefaultRecord', 2, b'u1', b'{"n": 2}', 1700000000002, [])]
>>> [(type(r).__name__, r.topic, r.partition, r.offset) for r in records(None)]
[('ConsumerRecord', 'events', 0, 1), ('ConsumerRecord', 'events', 0, 2)]
"""

from __future__ import annotations

from typing import Any

from aiokafka.consumer import fetcher as _fetcher


def raw_records(value: bytes | None) -> bytes | None:
    """A consumer's ``value_deserializer`` asking for the decoder's own records (see the module)."""
    return value


class PartitionRecords(_fetcher.PartitionRecords):
    """aiokafka's records of one fetched partition, handing out its decoder's records as they are
    when the consumer asked for :func:`raw_records`."""

    def _consumer_record(self, tp: Any, record: Any) -> Any:
        if self._value_deserializer is raw_records:
            return record
        return super()._consumer_record(tp, record)


def install() -> bool:
    """Make aiokafka's fetcher build :class:`PartitionRecords`; False (and nothing changed) when
    its fetcher is not the one this hook was written for (the records stay aiokafka's)."""
    if _fetcher.PartitionRecords is PartitionRecords:
        return True
    if not callable(getattr(_fetcher.PartitionRecords, "_consumer_record", None)):
        return False
    _fetcher.PartitionRecords = PartitionRecords
    return True
