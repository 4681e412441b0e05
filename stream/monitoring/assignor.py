"""One active monitor per deployment: a Kafka partition assignor that hands every partition
of the monitor group's topics to a single member; the other members are hot standbys.

Drift tests need a model's whole stream in one place (a monitor that sees a share of the
partitions tests a biased sample and spends a false-alarm budget of its own), so the monitor
group does not split partitions the way scorers do. Kafka's group protocol does the rest: the
group leader runs :meth:`OneActiveAssignor.assign`, the broker's session timeout detects a dead
member, and the rebalance that follows gives everything to a standby.

Whom it picks, in order (every member computes the same answer from the same metadata):

1. the member that is active now (it says so in its subscription metadata): a worker joining
   or leaving the group never moves monitoring away from a live active monitor. Each
   assignment carries an epoch one above every epoch the members report; if two members claim
   to be active (one was cut off from the group and came back), the later epoch keeps the role;
2. else the member that has been waiting longest (its start time), so restarts do not flap;
3. ties: the lowest member id.

It is the only assignor offered. aiokafka 0.14 sends one JoinGroup per assignor offered, each
with a different protocol list (aio-libs/aiokafka#1168), and the broker starts a new rebalance
for a member whose protocols changed: with round robin offered too, every join cost a second
rebalance, and three monitors starting together could keep the group rebalancing for good
(generation 1,593 after 10 s in one of three tries on Apache Kafka). The price: a monitor group
of a version that split partitions must be stopped before this one joins it (the broker refuses
members with no protocol in common).

>>> from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata as Meta
>>> class Cluster:
...     def partitions_for_topic(self, topic): return {0, 1, 2}
>>> old, new = OneActiveAssignor(since=1.0), OneActiveAssignor(since=2.0)
>>> members = {"b": old.metadata(["f"]), "a": new.metadata(["f"])}
>>> out = old.assign(Cluster(), members)
>>> [p.partition for p in out["b"].partitions()], out["a"].partitions()
([0, 1, 2], [])
>>> old.on_assignment(out["b"]); new.on_assignment(out["a"])
>>> old.active, new.active
(True, False)
>>> late = OneActiveAssignor(since=0.5)  # an earlier start, but the active member keeps its role
>>> out = late.assign(Cluster(), {"b": old.metadata(["f"]), "a": new.metadata(["f"]), "c": late.metadata(["f"])})
>>> [m for m, a in sorted(out.items()) if a.partitions()]
['b']
>>> out = new.assign(Cluster(), {"a": new.metadata(["f"]), "c": late.metadata(["f"])})  # b died
>>> [m for m, a in sorted(out.items()) if a.partitions()]
['c']
>>> late.on_assignment(out["c"]); new.on_assignment(out["a"])
>>> out = new.assign(Cluster(), {"a": new.metadata(["f"]), "b": old.metadata(["f"]),  # b was cut off
...                              "c": late.metadata(["f"])})
>>> old.active, old.epoch < late.epoch, [m for m, a in sorted(out.items()) if a.partitions()]
(True, True, ['c'])
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

__all__ = ["OneActiveAssignor"]

log = logging.getLogger(__name__)


class OneActiveAssignor(AbstractPartitionAssignor):
    """All partitions to one member. An instance per consumer (it carries that member's
    state: its start time and whether it holds the partitions now)."""

    name = "mlstream-one-active"
    version = 0

    def __init__(self, since: float | None = None):
        self.since = time.time() if since is None else since
        self.active = False
        self.epoch = 0  # of the latest assignment this member received

    def strategies(self) -> tuple[Any, ...]:
        """``partition_assignment_strategy`` for the consumer: this alone (see the module's doc)."""
        return (self,)

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        state = json.dumps({"active": self.active, "since": self.since, "epoch": self.epoch}).encode()
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), state)

    @staticmethod
    def _state(meta: ConsumerProtocolMemberMetadata | ConsumerProtocolMemberAssignment) -> dict[str, Any]:
        try:
            state = json.loads(meta.user_data or b"{}")
        except ValueError:
            return {}
        return state if isinstance(state, dict) else {}

    def _rank(self, member: str, meta: ConsumerProtocolMemberMetadata) -> tuple[int, int, float, str]:
        state = self._state(meta)
        active = bool(state.get("active"))
        return (0 if active else 1, -int(state.get("epoch", 0)) if active else 0,
                float(state.get("since", float("inf"))), member)

    def assign(self, cluster: Any,
               members: Mapping[str, ConsumerProtocolMemberMetadata]) -> dict[str, ConsumerProtocolMemberAssignment]:
        order = sorted(members, key=lambda m: self._rank(m, members[m]))
        assignment: dict[str, dict[str, list[int]]] = {m: {} for m in members}
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if partitions is None:
                log.warning("no partition metadata for topic %s", topic)
                continue
            # the chosen member, or the first in the same order among those subscribed to the topic
            owner = next(m for m in order if topic in members[m].subscription)
            assignment[owner][topic] = sorted(partitions)
        epoch = 1 + max((int(self._state(meta).get("epoch", 0)) for meta in members.values()), default=0)
        if order:
            log.info("monitor group: %s active, %d standby (epoch %d)", order[0], len(order) - 1, epoch)
        data = json.dumps({"epoch": epoch}).encode()
        return {m: ConsumerProtocolMemberAssignment(self.version, sorted(a.items()), data)
                for m, a in assignment.items()}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.active = bool(assignment.partitions())
        self.epoch = max(self.epoch, int(self._state(assignment).get("epoch", 0)))
