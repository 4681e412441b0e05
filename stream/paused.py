"""A worker that was paused (a VM frozen, SIGSTOP, a swap storm) longer than its session timeout.

Heartbeats run in the same event loop as the work, so a loop that stood still that long has
almost surely been dropped from the group, and its partitions handed to other workers. When it
resumes, the consumer still holds its old assignment until the next heartbeat is refused, and
meanwhile hands out the backlog of those partitions. A scorer scoring it duplicated events the
new owners had already scored, and wrote changelog records behind theirs (up to about 4,000
duplicates in the fault suite's paused-worker scenario); a monitor tested its successor's rows a
second time (a 16,000-row backlog in 0.1 s, once in a CI run), and could have announced their
drifts twice. So after such a stall the loop first asks the group, with an offset commit of what
it already committed: refused, it processes nothing until the rebalance (or one more session
timeout) and the records go back to be fetched again. Both workers' loops use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import TopicPartition

from stream.errors import KafkaCallError
from stream.kafka import commit_or_redeliver

log = logging.getLogger(__name__)


class PauseGuard:
    """Holds fetched records back after the loop stood still past the session timeout, until
    the group confirms this member (an offset commit accepted) or a rebalance. The loop asks
    :meth:`stalled` every turn and awaits :meth:`hold_back` only when it or :attr:`until` says so.

    >>> clock = iter([0.0, 5.0, 20.0, 21.0]).__next__
    >>> g = PauseGuard(10.0, clock=clock)
    >>> g.stalled(), g.stalled(), g.stalled()   # turns at 5, 20 and 21 s: the second waited 15 s
    (False, True, False)
    """

    def __init__(self, session_timeout_s: float, *, role: str = "worker",
                 clock: Callable[[], float] = time.monotonic):
        self.limit = session_timeout_s
        self.role = role  # for the log: "scorer", "monitor"
        self.clock = clock
        self.last = clock()
        self.until = 0.0  # records are held back until a rebalance, or this time

    def start(self) -> None:
        """A new loop (or consumer) begins: nothing stood still before it."""
        self.last, self.until = self.clock(), 0.0

    def stalled(self) -> bool:
        """Did the loop stand still longer than the session timeout since the last turn?"""
        now = self.clock()
        out, self.last = now - self.last > self.limit, now
        return out

    def rebalanced(self, consumer: Any) -> None:
        """A rebalance decided who owns what: fetch again whatever this member still has."""
        if self.until:
            self._release(consumer)

    def _release(self, consumer: Any) -> None:
        self.until = 0.0
        consumer.resume(*consumer.paused())

    async def hold_back(self, consumer: Any, batches: Mapping[TopicPartition, list[Any]],
                        committed: Mapping[TopicPartition, int], deadline_s: float) -> bool:
        """After a stall (or while holding): True if ``batches`` must not be processed now; they
        are then sought back, to be fetched again by whoever owns their partitions after the
        rebalance."""
        if not self.until:  # the loop just stood still: is this still a member?
            assigned = consumer.assignment()
            probe = {tp: o for tp, o in committed.items() if tp in assigned}
            try:
                member = not probe or await commit_or_redeliver(consumer, probe, deadline_s)
            except KafkaCallError:  # no answer says nothing about the membership
                member = True
            if not member:
                self.until = self.clock() + self.limit
                log.warning("the %s stood still for more than the session timeout (%gs) and the group "
                            "no longer knows it: holding records back until the rebalance", self.role, self.limit)
        if self.until and self.clock() >= self.until:  # no rebalance came: fetch again
            self._release(consumer)
        if not self.until or not batches:
            return False
        assigned = consumer.assignment()  # a rebalance may have ended during the probe
        for tp, recs in batches.items():
            if recs and tp in assigned:  # paused, not fetched again and again while the rebalance comes
                consumer.seek(tp, recs[0].offset)
                consumer.pause(tp)
        return True
