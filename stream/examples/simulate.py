"""Seeded, reproducible card-payment traffic with named drift scenarios and delayed labels.

The generator is pure (numpy, no Kafka); :func:`produce` sends it to a cluster at a rate.
Fraud is generative: a fraudulent payment is larger than the user's usual, more often web,
foreign and in risky merchant categories. Scenarios change the stream from ``drift_at`` on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import orjson

from stream.examples.payments import CHANNELS, COUNTRIES, MERCHANT_CATEGORIES
from stream.messages import Label, encode

if TYPE_CHECKING:
    from stream.training.train import TrainingData

SCENARIOS = {
    "none": "stationary traffic",
    "mean_shift": "amounts double for everyone (location shift of log amount)",
    "new_category": "a merchant category never seen in training ('crypto') takes 30% of payments",
    "channel_mix": "the channel mix flips from mostly pos to mostly web",
    "concept_drift": "fraud moves to a new signature the model has not seen (only labels show it)",
}

# Simulated time starts in 2001 and runs at SECONDS_PER_EVENT: 13 million events (close to two
# hours of the demo at 2,000/s) before it reaches the wall clock, where the scorer's future-time
# bound would refuse it. The start is a whole number of weeks before the original 1.75e9, so
# weekday and hour of day, and with them every feature and the shipped model, are unchanged.
START_TS = 1_750_000_000.0 - 1_240 * 7 * 86_400.0
BLOCK = 5_000
# Simulated event time runs ahead of the wall clock so that a short demo covers days: with
# 250 users a user pays about every 4 hours. State starts empty, so the first WARMUP_EVENTS
# (about 30 per user) only build history: per-user z-scores need ~10 events to mean anything.
SECONDS_PER_EVENT = 60.0
WARMUP_EVENTS = 8_000
FRAUD_RATE = 0.03
_MCC_P = np.array([0.35, 0.2, 0.1, 0.1, 0.2, 0.05])
_CHANNEL_P = np.array([0.3, 0.55, 0.15])
_RISKY_MCC_P = np.array([0.05, 0.05, 0.2, 0.35, 0.05, 0.3])


@dataclass(frozen=True)
class Simulated:
    key: bytes
    value: bytes
    event_id: str | None  # None for an invalid event
    label: int | None


class PaymentSimulator:
    """Seeded payment stream.

    Examples
    --------
    >>> sim = PaymentSimulator(seed=7, n_users=100)
    >>> first = next(sim.events(3))
    >>> orjson.loads(first.value)["event_id"], first.label
    ('e7-0', 0)
    """

    def __init__(self, seed: int = 0, n_users: int = 250, scenario: str = "none",
                 drift_at: int | None = None, invalid_rate: float = 0.0, population_seed: int = 0):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
        if not 0.0 <= invalid_rate < 1.0:
            raise ValueError("invalid_rate must be in [0, 1)")
        self.seed, self.n_users, self.scenario = seed, n_users, scenario
        self.drift_at = drift_at
        self.invalid_rate = invalid_rate
        # The users (their usual amounts and home countries) are one fixed population: the
        # traffic seed varies the payments, not who pays, so a new seed is not a drift.
        users = np.random.default_rng(population_seed)
        self.user_log_mean = users.normal(3.4, 0.6, n_users)
        self.user_country = users.choice(len(COUNTRIES), n_users, p=[0.6, 0.1, 0.1, 0.1, 0.1])
        self._cached: tuple[int, list[Simulated]] | None = None

    def events(self, n: int, start: int = 0) -> Iterator[Simulated]:
        """Events ``start .. start+n-1``; the same index always gives the same event, however
        the range is split (each aligned block of ``BLOCK`` events has its own seed)."""
        end = start + n
        for block_lo in range(start - start % BLOCK, end, BLOCK):
            if self._cached is None or self._cached[0] != block_lo:
                self._cached = (block_lo, list(self._block(block_lo, BLOCK)))
            events = self._cached[1]
            yield from events[max(start, block_lo) - block_lo : min(end, block_lo + BLOCK) - block_lo]

    def _block(self, lo: int, n: int) -> Iterator[Simulated]:
        rng = np.random.default_rng([self.seed, lo])
        idx = np.arange(lo, lo + n)
        drifted = np.zeros(n, dtype=bool) if self.drift_at is None else idx >= self.drift_at
        users = rng.integers(0, self.n_users, n)
        fraud = rng.random(n) < FRAUD_RATE
        log_amount = self.user_log_mean[users] + rng.normal(0, 0.5, n)
        mcc = rng.choice(len(MERCHANT_CATEGORIES), n, p=_MCC_P)
        channel = rng.choice(len(CHANNELS), n, p=_CHANNEL_P)
        country = self.user_country[users].copy()
        # Fraud pattern; under concept drift, fraud after the change point looks normal.
        looks_fraud = fraud & ~(drifted & (self.scenario == "concept_drift"))
        log_amount[looks_fraud] += rng.normal(1.6, 0.5, looks_fraud.sum())
        mcc[looks_fraud] = rng.choice(len(MERCHANT_CATEGORIES), looks_fraud.sum(), p=_RISKY_MCC_P)
        channel[looks_fraud] = np.where(rng.random(looks_fraud.sum()) < 0.8, 0, channel[looks_fraud])
        foreign = looks_fraud & (rng.random(n) < 0.7)
        country[foreign] = rng.integers(0, len(COUNTRIES), foreign.sum())
        # Under concept drift fraud moves to a new signature: app payments to travel merchants,
        # at usual amounts, from home. The champion misses it; a retrained model can learn it.
        moved = fraud & drifted & (self.scenario == "concept_drift")
        channel[moved] = CHANNELS.index("app")
        mcc[moved] = MERCHANT_CATEGORIES.index("travel")
        mcc_names = np.array(MERCHANT_CATEGORIES, dtype=object)[mcc]
        channel_names = np.array(CHANNELS, dtype=object)[channel]
        if self.scenario == "mean_shift":
            log_amount[drifted] += np.log(2.0)
        elif self.scenario == "new_category":
            mcc_names[drifted & (rng.random(n) < 0.3)] = "crypto"
        elif self.scenario == "channel_mix":
            flip = drifted & (rng.random(n) < 0.6)
            channel_names[flip] = "web"
        amounts = np.round(np.exp(log_amount), 2)
        invalid = rng.random(n) < self.invalid_rate
        kinds = rng.integers(0, len(_BAD_EVENTS), n)
        for i in range(n):
            event_id = f"e{self.seed}-{lo + i}"
            user = f"u{users[i]}"
            event = {
                "event_id": event_id, "user_id": user, "amount": float(amounts[i]),
                "merchant_category": mcc_names[i], "country": COUNTRIES[country[i]],
                "channel": channel_names[i], "ts": START_TS + (lo + i) * SECONDS_PER_EVENT,
            }
            if invalid[i]:
                yield Simulated(user.encode(), _BAD_EVENTS[kinds[i]](event), None, None)
            else:
                yield Simulated(user.encode(), orjson.dumps(event), event_id, int(fraud[i]))


def _not_json(e: dict) -> bytes:
    return orjson.dumps(e)[:-7]


def _missing(e: dict) -> bytes:
    return orjson.dumps({k: v for k, v in e.items() if k != "amount"})


def _nan(e: dict) -> bytes:
    return orjson.dumps(e).replace(b'"amount":', b'"amount":NaN,"_":', 1)


def _negative(e: dict) -> bytes:
    return orjson.dumps({**e, "amount": -abs(e["amount"])})


def _wrong_type(e: dict) -> bytes:
    return orjson.dumps({**e, "amount": str(e["amount"])})


def _unknown(e: dict) -> bytes:
    return orjson.dumps({**e, "coupon": "X1"})


_BAD_EVENTS = (_not_json, _missing, _nan, _negative, _wrong_type, _unknown)


def label_record(event_id: str, label: int, ts: float) -> bytes:
    return encode(Label(event_id=event_id, label=label, ts=ts))


def simulated(n: int, seed: int) -> TrainingData:
    """``n`` labelled payments as training data (the demo's bootstrap model; tests)."""
    from stream.training.train import TrainingData

    events, labels = [], []
    for item in PaymentSimulator(seed=seed).events(n):
        events.append(orjson.loads(item.value))
        labels.append(float(item.label or 0))
    return TrainingData(events, np.asarray(labels))
