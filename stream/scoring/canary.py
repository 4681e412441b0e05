"""The canary: a stable share of entities served by the shadow (the challenger) before its
promotion, so its effect on real consumers is seen on a few of them first.

Which entities: those whose hash of (challenger version, entity id), a keyed BLAKE2b, falls in
the lowest ``share`` of the hash range. The same entity gets the same answer on every worker and after
every restart, so an entity is never served by two versions in turn while one challenger is in
shadow; a new challenger picks another cohort, so the same customers do not carry every
experiment. A canary row's prediction on ``predictions`` is the challenger's score, tagged with
its version; where the challenger fails or scores out of range, the champion's score is served.

Monitoring does not change: every version is still measured on its own scores of every event
(the champion through the feature batches, the challenger through the shadow topic), so the
live comparison that decides the promotion sees the same evidence with or without a canary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from hashlib import blake2b

import numpy as np

from stream.metrics import Metrics
from stream.scoring.model import Model, servable

log = logging.getLogger(__name__)


def in_canary(keys: Sequence[str], version: str, share: float) -> np.ndarray:
    """Which entities the challenger ``version`` serves: a boolean mask parallel to ``keys``.

    Examples
    --------
    >>> keys = [f"user-{i}" for i in range(10_000)]
    >>> mask = in_canary(keys, "2", 0.1)
    >>> abs(float(mask.mean()) - 0.1) < 0.01  # about the share asked for
    True
    >>> bool((mask == in_canary(keys, "2", 0.1)).all())  # stable: the same entities every time
    True
    >>> bool((in_canary(keys, "2", 0.2) >= mask).all())  # a larger share keeps the first cohort
    True
    >>> float((mask & in_canary(keys, "3", 0.1)).mean()) < 0.03  # the next challenger, another cohort
    True
    >>> ids = [f"{i:08x}-4f1c-9a2e" for i in range(10_000)]  # ids of one length: still independent
    >>> max(float((in_canary(ids, str(a), 0.1) & in_canary(ids, str(b), 0.1)).mean())
    ...     for a in range(1, 8) for b in range(a + 1, 8)) < 0.03
    True
    >>> bool(in_canary(keys, "2", 0.0).any())
    False
    """
    if share <= 0 or not keys:
        return np.zeros(len(keys), dtype=bool)
    # a keyed BLAKE2b, not CRC-32: CRC is linear, so for ids of one length a new seed only XORs
    # every hash with one constant and two challengers could share most of their cohort
    salt = version.encode()[:64]
    cut = int(share * 2**64)
    return np.fromiter((int.from_bytes(blake2b(k.encode(), digest_size=8, key=salt).digest(), "big") < cut
                        for k in keys), dtype=bool, count=len(keys))


class Canary:
    """Serves the challenger's scores on its share of entities (see the module docstring).

    Parameters
    ----------
    share
        Share of entities served by the challenger while one is in shadow (0 turns it off).
    """

    def __init__(self, share: float, metrics: Metrics | None = None) -> None:
        if not 0 <= share <= 0.5:
            raise ValueError(f"canary share must be in [0, 0.5], got {share}")
        self.share = float(share)
        self.metrics = metrics
        self.model: Model | None = None  # the challenger, while one is in shadow
        self._failures = 0

    def follow(self, challenger: Model | None) -> None:
        """Serve ``challenger`` (None: nobody) from the next batch on."""
        if self.share <= 0:
            return
        if (challenger and challenger.version) != (self.model and self.model.version):
            log.info("canary: %s", f"{self.share:.1%} of entities served by version {challenger.version}"
                     if challenger else "off")
            self._failures = 0
            if self.metrics is not None:
                self.metrics.canary_share.clear()
                if challenger is not None:
                    self.metrics.canary_share.labels(challenger.name, challenger.version).set(self.share)
        self.model = challenger

    def serve(self, keys: Sequence[str], X: np.ndarray, scores: np.ndarray,
              champion: Model) -> tuple[np.ndarray, np.ndarray] | None:
        """The scores to serve and the rows the challenger served, or None if it serves none.

        ``scores`` are ``champion``'s scores of the rows ``X`` of entities ``keys``. A challenger
        of another task (a regression model beside a classifier) serves nobody.
        """
        model = self.model
        if model is None or model.version == champion.version or not len(keys) \
                or model.card.task != champion.card.task:
            return None
        mask = in_canary(keys, model.version, self.share)
        if not mask.any():
            return None
        rows = np.flatnonzero(mask)
        try:
            s = np.asarray(model.predict(X[rows]), dtype=np.float64)
            if s.shape != rows.shape:
                raise ValueError(f"{len(s)} scores for {len(rows)} rows")
        except Exception as exc:  # onnxruntime's own errors: the champion serves these rows
            self._failures += 1
            if self._failures in (1, 10, 100) or self._failures % 1_000 == 0:  # bounded log
                log.warning("canary: version %s failed on a batch (%d so far), the champion served it: %s",
                            model.version, self._failures, str(exc)[:200])
            return None
        ok = servable(model.card.task, s)
        served = np.zeros(len(keys), dtype=bool)
        served[rows[ok]] = True
        out = scores.astype(np.float64, copy=True)
        out[rows[ok]] = s[ok]
        return out, served
