"""Exactly-once processing (``MLSTREAM_PROCESSING_GUARANTEE=exactly_once``): a commit interval's
predictions, dead letters, feature batches, entity-state changelog records and input offsets
are written in one Kafka transaction, so they become visible together or not at all.

Readers downstream use ``isolation_level=read_committed`` (the monitor does, and a scorer
restoring entity state from the changelog does), so the outputs of an interval that a crash cut
short never reach them, and the state a restarted worker rebuilds is exactly the state of the
committed input offsets: no duplicates, and online == offline features after any number of
crashes. The cost is one transaction per commit interval (measured by ``make bench``).

As in Kafka Streams' ``exactly_once_v2``, each worker process has one transactional producer,
and the input offsets commit with the group generation they were read under (KIP-447, see
:mod:`stream.scoring.txn_fence`): a worker the group dropped cannot commit its transaction. A crashed
worker's open transaction is aborted by the broker after ``scoring.transaction_timeout_ms``,
which is how long read_committed readers may wait behind it, its successor's state restore
included (:mod:`stream.scoring.restore`).
"""

from __future__ import annotations

import logging
import uuid

from aiokafka import AIOKafkaProducer, TopicPartition

from stream.scoring.txn_fence import GroupMember, fence_offset_commits

log = logging.getLogger(__name__)


def transactional_id(app_id: str, role: str = "scorer") -> str:
    """Unique per process: a restarted worker must not fence its successor's transactions.

    >>> transactional_id("fraud-app").startswith("fraud-app-scorer-")
    True
    """
    return f"{app_id}-{role}-{uuid.uuid4().hex[:12]}"


class OutputTransaction:
    """Opens a transaction before the first output of a commit interval and commits it, with
    the input offsets, at the commit; ``abort`` throws the interval's outputs away."""

    def __init__(self, producer: AIOKafkaProducer, group_id: str):
        self.producer = producer
        self.group_id = group_id
        self.open = False
        # the generation the input partitions were assigned under: a commit after the group
        # dropped this member is refused by the broker (stream/scoring/txn_fence.py)
        self.member: GroupMember | None = None
        fence_offset_commits(producer, lambda: self.member)

    async def ensure_open(self) -> None:
        if not self.open:
            await self.producer.begin_transaction()
            self.open = True

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self.open and not offsets:
            return
        await self.ensure_open()
        if offsets:
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)
        await self.producer.commit_transaction()
        self.open = False

    async def abort(self) -> bool:
        """Throw the open transaction's outputs away; False if the producer could not (fenced, or
        in a state that lets no transaction begin): only a new producer can go on then."""
        if self.open:
            self.open = False
            try:
                await self.producer.abort_transaction()
            except Exception as exc:  # a fenced or broken producer: the broker aborts it on timeout
                log.warning("could not abort the open transaction: %s", type(exc).__name__)
                return False
        return True
