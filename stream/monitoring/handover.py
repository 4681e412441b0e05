"""What a monitor taking over (a standby after the active monitor died, or a whole deployment
restarting) learns from Kafka before it publishes anything: which drift states are open and
when each model version last asked for retraining.

The drift topic is the record of open drift states: an opening event (``data_drift``,
``score_drift``, ``multivariate_drift``, ``concept_drift``) opens its features, a
``drift_resolved`` closes them. A new monitor starts its tests afresh; when it finds a drift
the topic already shows open, it publishes nothing (the drift was announced once), and it
publishes the ``drift_resolved`` when the drift ends. The retrain topic gives the cooldown
back to :class:`stream.monitoring.retrain.RetrainPolicy`, so a different feature of the same
drift seen after the takeover does not ask twice within the cooldown either.

>>> from stream.messages import DriftEvent
>>> def ev(kind, *features):
...     return DriftEvent(index=1, kind=kind, features=list(features), evidence=[], model="m",
...                       model_version="1", detected_at=0.0)
>>> seen = OpenDrifts()
>>> seen.replay([ev("data_drift", "x", "y"), ev("drift_resolved", "y")])   # from the topic
>>> seen.admit(ev("data_drift", "x")) is None                                # announced already
True
>>> seen.admit(ev("data_drift", "x", "z")).features                          # z is news
['z']
>>> seen.admit(ev("drift_resolved", "x")).features, seen.admit(ev("data_drift", "x")).features
(['x'], ['x'])
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec

from stream.config import Settings
from stream.errors import BrokerError, KafkaCallError, MessageError
from stream.kafka import read_all, within
from stream.messages import DriftEvent, RetrainRequest, decode
from stream.monitoring.retrain import RetrainPolicy

__all__ = ["OpenDrifts", "restore"]

log = logging.getLogger(__name__)

RESOLVED = "drift_resolved"


class OpenDrifts:
    """Open drift states, keyed by model, version, kind and feature, as the drift topic shows them."""

    def __init__(self, max_states: int = 10_000):
        self.max_states = max_states
        self._open: dict[tuple[str, str, str, str], None] = {}  # an ordered set, oldest first
        self.suppressed = 0  # opening events not published again

    def _key(self, ev: DriftEvent, feature: str, kind: str | None = None) -> tuple[str, str, str, str]:
        return (str(ev.model), str(ev.model_version), kind or ev.kind, feature)

    def _apply(self, ev: DriftEvent) -> list[str]:
        """Record the event; the features it really changes."""
        if ev.kind == RESOLVED:
            closed = [k for k in self._open if k[:2] == (str(ev.model), str(ev.model_version))
                      and k[3] in ev.features]
            for k in closed:
                del self._open[k]
            return list(ev.features)
        new = [f for f in ev.features if self._key(ev, f) not in self._open]
        for f in new:
            self._open[self._key(ev, f)] = None
        while len(self._open) > self.max_states:
            self._open.pop(next(iter(self._open)))
        return new

    def replay(self, events: Iterable[DriftEvent]) -> None:
        for ev in events:
            self._apply(ev)

    def admit(self, ev: DriftEvent) -> DriftEvent | None:
        """The event to publish: None for a drift the topic already shows open, else the event
        with only its new features (a ``drift_resolved`` always goes out)."""
        new = self._apply(ev)
        if ev.kind == RESOLVED or new == list(ev.features):
            return ev
        if not new:
            self.suppressed += 1
            log.info("%s of %s:%s on %s is open already (announced before a takeover): not "
                     "published again", ev.kind, ev.model, ev.model_version, ", ".join(ev.features))
            return None
        keep = set(new)
        evidence = [e for e in ev.evidence if any(p in keep for p in str(e.get("feature", "")).split("|"))]
        return msgspec.structs.replace(ev, features=new, evidence=evidence)


async def restore(settings: Settings, drifts: OpenDrifts, policy: RetrainPolicy) -> None:
    """Read the drift and retrain topics into ``drifts`` and ``policy``. Bounded by the request
    deadline; on failure the monitor goes on without (a drift open at the takeover may then be
    announced a second time)."""
    deadline = settings.kafka.request_deadline_s
    try:
        records = await within(read_all(settings, settings.topics.drift, max_wait_s=deadline), deadline,
                               "reading the drift topic")
        requests = await within(read_all(settings, settings.topics.retrain, max_wait_s=deadline), deadline,
                                "reading the retrain topic")
    except (KafkaCallError, BrokerError) as exc:
        log.warning("open drift states not restored (%s): a drift open now may be announced again", exc)
        return
    events = []
    for rec in records:
        try:
            events.append(decode(rec.value, DriftEvent))
        except MessageError:
            continue
    drifts.replay(events)
    for rec in requests:
        try:
            req = decode(rec.value, RetrainRequest)
        except MessageError:
            continue
        policy.restore(req.model, req.model_version, req.requested_at)
    log.info("took over monitoring: %d drift events and %d retraining requests read back",
             len(events), len(requests))
