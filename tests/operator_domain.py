"""The payments domain with a fit hook that first runs whatever a test queued in
:data:`DURING_TRAINING`: an operator's action while a challenger trains."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from stream.domain import Domain, Fitted
from stream.examples.payments import DOMAIN as PAYMENTS
from stream.training.train import default_fit

DURING_TRAINING: list[Callable[[], None]] = []


def fit(domain: Domain, X: np.ndarray, y: np.ndarray, seed: int) -> Fitted:
    while DURING_TRAINING:
        DURING_TRAINING.pop(0)()
    return default_fit(domain, X, y, seed)


DOMAIN = dataclasses.replace(PAYMENTS, fit=fit)
