"""The monitor's consumer rebalance listener: held feature batches of a revoked partition are
dropped (they belong to the new owner), unless the rebalance gives the partition straight back
(then the monitor goes on where it was); assigned ones are tracked, and after the topics were
recreated the consumer starts them from the beginning.

Every rebalance revokes every partition first (the eager protocol), so the active monitor sees
its partitions revoked and assigned again whenever a worker joins or leaves. A message the
event-time merge had released in part was then read again from the committed offset and its
released rows tested twice: 1,600-3,100 of 4,000 rows in runs where a second monitor joined
while the first was testing.

The monitor group gives all its partitions to one member
(:class:`stream.monitoring.assignor.OneActiveAssignor`): the listener reports whether this
worker is that active monitor or a standby (``mlstream_monitor_active``, ``/ready`` detail)
and calls ``on_role`` when that changes, before any record of the new assignment is read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from stream.metrics import Metrics
from stream.monitoring.ordering import PartitionMerger
from stream.paused import PauseGuard


class ForgetRevoked(ConsumerRebalanceListener):
    """Held feature batches of a revoked partition belong to its new owner."""

    def __init__(self, merger: PartitionMerger, topic: str, metrics: Metrics, consumer: Any = None,
                 from_beginning: bool = False, on_role: Callable[[bool], Awaitable[None]] | None = None,
                 on_revoked: Callable[[], Awaitable[None]] | None = None, deadline_s: float = 30.0,
                 pauses: PauseGuard | None = None):
        self.merger = merger
        self.pauses = pauses  # records held back after a stall: fetched again once the group decided
        self.on_revoked = on_revoked
        self.on_role = on_role
        self.active: bool | None = None  # unknown until the first assignment
        self.topic = topic
        self.metrics = metrics
        self.consumer = consumer
        self.from_beginning = from_beginning
        self._revoked: set[TopicPartition] = set()  # feature partitions revoked, held until the assignment
        self.deadline_s = deadline_s  # for the committed offsets read during an assignment

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked and self.on_revoked is not None:  # what is done is committed, not handed over again
            await self.on_revoked()
        # held until the assignment says whose they are now (see _keep)
        self._revoked = {tp for tp in revoked if tp.topic == self.topic}
        for tp in revoked - self._revoked:
            self.merger.forget(tp)
        self.metrics.health.set("monitor", False, "rebalancing")

    async def _keep(self, assigned: set[TopicPartition]) -> None:
        """Revoked partitions given back: held rows kept and the consumer sought past what was
        fetched, if no one committed past it meanwhile (this member was the last to test them);
        otherwise, and for the others, the held rows go (their new owner reads them)."""
        revoked, self._revoked = self._revoked, set()
        for tp in revoked:
            at = self.merger.next_offset(tp)
            if tp in assigned and at is not None and self.consumer is not None and not self.from_beginning:
                try:  # bounded: the rebalance waits for this callback
                    committed = await asyncio.wait_for(self.consumer.committed(tp), self.deadline_s)
                except (KafkaError, TimeoutError):  # unknown: read again from the committed offset, as before
                    committed = at + 1
                if committed is None or committed <= at:
                    self.consumer.seek(tp, at)
                    continue
            self.merger.forget(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.pauses is not None and self.consumer is not None:
            self.pauses.rebalanced(self.consumer)
        await self._keep(assigned)
        if self.from_beginning and self.consumer is not None and assigned:
            self.from_beginning = False
            for tp in assigned:  # a plain seek: committed offsets may be old-topic positions
                self.consumer.seek(tp, 0)
        now = time.monotonic()
        for tp in assigned:
            if tp.topic == self.topic:
                self.merger.track(tp, now)
        active = bool(assigned)
        if active != self.active and self.on_role is not None:
            await self.on_role(active)  # a takeover reads back what it needs before it publishes
        self.active = active
        self.metrics.monitor_active.set(int(active))
        self.metrics.health.set("monitor", True, f"active, {len(assigned)} partitions assigned" if active
                                else "standby: another worker monitors this deployment")

