"""Retraining requests: built from drift events, with a deterministic id and a cooldown.

The id hashes the model, version, kind, drifted features and the cooldown period the request
falls in, so a repeat of the same request (a restarted monitor, a second monitor worker)
carries the same id and a trainer can de-duplicate. Schema: ``schemas/retrain-request.schema.json``.
"""

from __future__ import annotations

import hashlib
import math

from stream.messages import SCHEMA_VERSION, DriftEvent, RetrainRequest


class RetrainPolicy:
    """At most one request per model version and ``cooldown_s`` of event time.

    Examples
    --------
    >>> policy = RetrainPolicy(cooldown_s=3600)
    >>> drift = DriftEvent(index=10, kind="data_drift", features=["amount_zscore"], evidence=[],
    ...                    model="fraud", model_version="1", detected_at=7200.0)
    >>> first = policy.request(drift, now=7200.0)
    >>> first.request_id == policy.request_id("fraud", "1", "data_drift", ["amount_zscore"], 7200.0)
    True
    >>> first.model, first.model_version, first.reason, first.drift_index
    ('fraud', '1', 'data_drift', 10)
    >>> policy.request(drift, now=7300.0) is None
    True
    """

    def __init__(self, cooldown_s: float = 3_600.0, max_models: int = 1_000):
        self.cooldown_s = cooldown_s
        self.max_models = max_models
        self._last: dict[tuple[str, str], float] = {}

    def request_id(self, model: str, version: str, kind: str, features: list[str], now: float) -> str:
        period = math.floor(now / self.cooldown_s) if self.cooldown_s > 0 else now
        text = "|".join([model, version, kind, ",".join(sorted(features)), str(period)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def restore(self, model: str, version: str, requested_at: float) -> None:
        """A request published before (read back from the retrain topic after a takeover)."""
        key = (model, version)
        self._last[key] = max(requested_at, self._last.get(key, requested_at))

    def request(self, drift: DriftEvent, *, now: float) -> RetrainRequest | None:
        """The request for the drift event's model version, or None within the cooldown."""
        model, version = str(drift.model), str(drift.model_version)
        last = self._last.get((model, version))
        if last is not None and now - last < self.cooldown_s:
            return None
        if len(self._last) >= self.max_models:
            self._last.pop(next(iter(self._last)))
        self._last[(model, version)] = now
        features = list(drift.features)
        return RetrainRequest(
            schema_version=SCHEMA_VERSION,
            request_id=self.request_id(model, version, drift.kind, features, now),
            model=model,
            model_version=version,
            reason=drift.kind,
            features=features,
            evidence=list(drift.evidence),
            drift_index=drift.index,
            onset_event_ts=drift.onset_event_ts,
            requested_at=now,
            cooldown_s=self.cooldown_s,
        )
