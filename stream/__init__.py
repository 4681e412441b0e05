"""mlstream: streaming online inference and drift monitoring on Kafka.

The public API for bringing your own domain and model::

    from stream import Domain, Schema, Field, FeatureSet, Numeric, OneHot, CategoryIndex, Rolling, CUMULATIVE
    from stream import ModelStore, TrainingData, train, ReferenceProfile

See README "Bring your own domain and model".

Names are imported on first use (PEP 562), so a scorer that imports ``stream.scoring.worker``
does not pay for the trainer's and the monitor's libraries (scipy, river, sklearn, faust).

>>> import stream
>>> stream.Schema.__name__
'Schema'
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

try:
    __version__ = _version("mlstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_WHERE = {
    "CUMULATIVE": "stream.features",
    "CategoryIndex": "stream.features",
    "Domain": "stream.domain",
    "Field": "stream.schema",
    "FeatureSet": "stream.features",
    "ModelStore": "stream.registry",
    "Numeric": "stream.features",
    "OneHot": "stream.features",
    "ReferenceProfile": "stream.monitoring.profile",
    "Rolling": "stream.features",
    "Schema": "stream.schema",
    "Settings": "stream.config",
    "TrainingData": "stream.training.train",
    "load_settings": "stream.config_load",
    "train": "stream.training.train",
}

__all__ = [
    "CUMULATIVE", "CategoryIndex", "Domain", "FeatureSet", "Field", "ModelStore", "Numeric", "OneHot",
    "ReferenceProfile", "Rolling", "Schema", "Settings", "TrainingData", "load_settings", "train",
]

if TYPE_CHECKING:
    from stream.config import Settings
    from stream.config_load import load_settings
    from stream.domain import Domain
    from stream.features import CUMULATIVE, CategoryIndex, FeatureSet, Numeric, OneHot, Rolling
    from stream.monitoring.profile import ReferenceProfile
    from stream.registry import ModelStore
    from stream.schema import Field, Schema
    from stream.training.train import TrainingData, train


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
