"""The payments domain with a feature function that raises on 0.1% of events (ids ending 007
in their thousand), as a user's buggy feature code would."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from stream.domain import Domain
from stream.examples.payments import DOMAIN as PAYMENTS
from stream.features import Columns, Numeric


class PoisonError(RuntimeError):
    pass


def poisoned(event_id: str) -> bool:
    return int(event_id.rsplit("-", 1)[1]) % 1_000 == 7


def raising_on(which: Callable[[str], bool], name: str) -> Domain:
    """The payments domain with a ``log_amount`` feature that raises on the events ``which``
    picks by id, as a user's buggy feature code would."""
    def log_amount(c: Columns) -> np.ndarray:
        for event_id in c["event_id"]:
            if which(str(event_id)):
                raise PoisonError(f"cannot featurize {event_id}")
        return np.log1p(c["amount"])

    return dataclasses.replace(
        PAYMENTS, name=name,
        features=dataclasses.replace(PAYMENTS.features, numeric=(Numeric("log_amount", log_amount),)))


DOMAIN = raising_on(poisoned, "poisoned-payments")
