"""The demo domain: card payments scored for fraud. An example, not part of the engine."""

from __future__ import annotations

import numpy as np

from stream.domain import Domain
from stream.features import Columns, FeatureSet, Numeric, OneHot, Rolling
from stream.schema import Field, Schema

CHANNELS = ("web", "pos", "app")
MERCHANT_CATEGORIES = ("grocery", "fuel", "travel", "electronics", "restaurants", "gaming")
COUNTRIES = ("DE", "FR", "GB", "US", "NL")

SCHEMA = Schema(
    name="payment",
    fields=(
        Field("event_id", "string", max_length=128),
        Field("user_id", "string", max_length=128),
        Field("amount", "number", min=0.0, max=1_000_000.0),
        Field("merchant_category", "category", max_length=64),
        Field("country", "category", max_length=8),
        Field("channel", "category", max_length=16),
        Field("ts", "timestamp", min=0.0),
    ),
    id_field="event_id",
    entity_field="user_id",
    time_field="ts",
)


def _log_amount(c: Columns) -> np.ndarray:
    return np.log1p(c["amount"])


FEATURES = FeatureSet(
    time_field="ts",
    numeric=(Numeric("log_amount", _log_amount),),
    one_hot=(
        OneHot("channel", CHANNELS),
        OneHot("merchant_category", MERCHANT_CATEGORIES),
        OneHot("country", COUNTRIES),
    ),
    rolling=(Rolling("amount", windows={"1h": 3_600.0, "1d": 86_400.0}),),
)

DOMAIN = Domain(name="payments", schema=SCHEMA, features=FEATURES, task="classification",
                label_field="label", threshold=0.5)
