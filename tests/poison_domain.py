"""The payments domain with a feature function that raises on 0.1% of events (ids ending 007
in their thousand), as a user's buggy feature code would."""

from __future__ import annotations

import dataclasses

import numpy as np

from stream.examples.payments import DOMAIN as PAYMENTS
from stream.features import Columns, Numeric


class PoisonError(RuntimeError):
    pass


def poisoned(event_id: str) -> bool:
    return int(event_id.rsplit("-", 1)[1]) % 1_000 == 7


def _log_amount(c: Columns) -> np.ndarray:
    for event_id in c["event_id"]:
        if poisoned(str(event_id)):
            raise PoisonError(f"cannot featurize {event_id}")
    return np.log1p(c["amount"])


DOMAIN = dataclasses.replace(
    PAYMENTS, name="poisoned-payments",
    features=dataclasses.replace(PAYMENTS.features, numeric=(Numeric("log_amount", _log_amount),)))
