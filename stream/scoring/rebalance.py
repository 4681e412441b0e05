"""What a scoring worker does when its group moves partitions.

On revocation it commits what it processed (the new owners start from there) and drops those
partitions' entity state. On assignment it rebuilds the new partitions' state from the changelog
before any of their records is processed; past half the session timeout the restore goes on in the
processing loop, so the group keeps its heartbeats and this member its assignment.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.domain import Domain
from stream.errors import BrokerError, KafkaCallError
from stream.metrics import Metrics
from stream.paused import PauseGuard
from stream.scoring.commits import Commits
from stream.scoring.pipeline import BatchScorer
from stream.scoring.restore import restore_state
from stream.scoring.state import EntityStore
from stream.scoring.transactions import OutputTransaction
from stream.scoring.txn_fence import membership

log = logging.getLogger(__name__)

__all__ = ["PartitionAssignment", "RebalanceListener"]


class PartitionAssignment:
    """The rebalancing half of :class:`stream.scoring.worker.ScoringWorker` (a mixin: the worker
    sets these attributes up and runs the loop)."""

    settings: Settings
    domain: Domain
    metrics: Metrics
    scorer: BatchScorer
    stores: dict[int, EntityStore]
    commits: Commits
    pauses: PauseGuard
    consumer: AIOKafkaConsumer | None
    txn: OutputTransaction | None
    _lock: asyncio.Lock
    _from_beginning: bool  # after the broker lost its data: read the new topics whole
    _restoring: bool  # an assignment's restore left to the loop (see on_assigned)

    async def _commit(self) -> None:
        assert self.consumer is not None
        await self.commits.commit(self.consumer)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            try:
                await self._commit()
            except (BrokerError, KafkaError) as exc:  # the new owners process the uncommitted records again
                log.warning("commit before giving partitions up failed: %s", exc)
            for tp in revoked:
                self.stores.pop(tp.partition, None)
            self.commits.revoked(revoked)
        self.metrics.health.set("scorer", False, "rebalancing")
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        upto: dict[int, int | None] | None = None  # the committed offsets
        if self.consumer is not None:
            self.pauses.rebalanced(self.consumer)
            if self.txn is not None:  # its offsets commit under this generation, or not at all
                self.txn.member = membership(self.consumer)
        if self._from_beginning and self.consumer is not None and assigned:
            self._from_beginning = False
            for tp in assigned:  # a plain seek: committed offsets may be old-topic positions
                self.consumer.seek(tp, 0)
            upto = {tp.partition: 0 for tp in assigned}  # and state from nothing
        if self.commits.resuming and self.consumer is not None:
            await self.commits.resume(self.consumer, assigned)
        # the group's heartbeats stop while this callback runs: a restore longer than the session
        # timeout (a big changelog, or exactly-once waiting for a crashed worker's transaction)
        # would cost this member its assignment and the group a rebalance, so past half of it
        # the restore goes on in the processing loop, before any record of those partitions
        budget = self.settings.kafka.session_timeout_ms / 2000
        async with self._lock:
            new = sorted(tp.partition for tp in assigned if tp.partition not in self.stores)
            self._restoring = False
            why, level = "", logging.INFO
            if new:
                try:
                    await asyncio.wait_for(self._restore(new, upto), budget)
                except TimeoutError:
                    why = f"takes more than {budget:g}s"
                except KafkaCallError as exc:  # the loop retries it, with its error handling
                    why, level = f"failed ({exc})", logging.WARNING
                self._restoring = bool(why)
        if self._restoring:
            self.metrics.health.set("scorer", False, f"restoring the state of partitions {new}")
            log.log(level, "partitions assigned: %s (restoring the state of %s %s: it goes on in the "
                    "processing loop)", sorted(tp.partition for tp in assigned), new, why)
            return
        self._ready(assigned, new)

    async def _restore_assigned(self) -> None:
        """The restore an assignment callback left to the loop (see :meth:`on_assigned`)."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        new = sorted({tp.partition for tp in assigned} - set(self.stores))
        if new:
            await self._restore(new)
        self._restoring = False
        self._ready(assigned, new)

    def _ready(self, assigned: set[TopicPartition], restored: list[int]) -> None:
        self.metrics.health.set("scorer", True, f"model {self.scorer.model.version}, "
                                f"{len(assigned)} partitions assigned, state restored")
        log.info("partitions assigned: %s (state restored for %s)",
                 sorted(tp.partition for tp in assigned), restored)

    async def _restore(self, partitions: list[int], upto: dict[int, int | None] | None = None) -> None:
        """Rebuild the partitions' state as of ``upto`` (the input offsets processing resumes from;
        by default the group's committed offsets, see ``Commits.resume_offsets``)."""
        if upto is None:
            assert self.consumer is not None
            upto = await self.commits.resume_offsets(self.consumer, partitions)
        restored = await restore_state(self.settings, self.domain.features.state_width, partitions,
                                       self.settings.scoring.max_entities_per_partition, upto)
        for p, store in restored.items():
            self.stores[p] = store
            self.metrics.entities.labels(str(p)).set(len(store))
        self.metrics.state_restored.inc(sum(s.restored for s in restored.values()))


class RebalanceListener(ConsumerRebalanceListener):
    def __init__(self, worker: PartitionAssignment):
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.on_assigned(assigned)
