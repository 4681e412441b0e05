"""Bursty traffic for ``make bench``: the demo's payments with about 20 % of the events in runs of
20-200 from one of 10 heavy users (the realistic traffic the drift monitor is tuned for), where a
scorer's per-entity state costs the most: a micro-batch holding k events of one user applies
them one after another.

>>> from stream.examples.simulate import PaymentSimulator
>>> events = Bursts(seed=0).apply(list(PaymentSimulator(seed=1).events(5_000)))
>>> users = [orjson.loads(m.value)["user_id"] for m in events]
>>> heavy = [u for u in users if u.startswith("heavy")]
>>> 0.1 < len(heavy) / len(users) < 0.35, all(m.key == u.encode() for m, u in zip(events, users))
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from stream.messages import Message

TOPIC = "bench.bursty"
HEAVY_USERS = 10
BURST_SHARE = 0.2
MEAN_RUN = 110  # runs of 20-200 events


class Bursts:
    """Rewrites a stream of simulated events into bursts; runs continue across calls."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.left, self.who = 0, ""
        self.gap = self._gap()

    def _gap(self) -> int:  # events between two runs: a share BURST_SHARE in runs on average
        return int(self.rng.exponential(MEAN_RUN * (1 - BURST_SHARE) / BURST_SHARE))

    def apply(self, items: Iterable[Any]) -> list[Message]:
        out: list[Message] = []
        for item in items:
            if self.left == 0 and self.gap > 0:
                self.gap -= 1
                out.append(Message(item.key, item.value))
                continue
            if self.left == 0:
                self.left = int(self.rng.integers(20, 201))
                self.who = f"heavy{int(self.rng.integers(HEAVY_USERS))}"
                self.gap = self._gap()
            self.left -= 1
            try:
                event = orjson.loads(item.value)
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):  # the simulator's malformed events stay as they are
                out.append(Message(item.key, item.value))
                continue
            event["user_id"] = self.who
            out.append(Message(self.who.encode(), orjson.dumps(event)))
        return out
