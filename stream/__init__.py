"""mlstream: streaming online inference and drift monitoring on Kafka.

The public API for bringing your own domain and model::

    from stream import Domain, Schema, Field, FeatureSet, Numeric, OneHot, CategoryIndex, Rolling, CUMULATIVE
    from stream import ModelStore, TrainingData, train, ReferenceProfile

See README "Bring your own domain and model".
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("mlstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from stream.config import Settings, load_settings
from stream.domain import Domain
from stream.features import CUMULATIVE, CategoryIndex, FeatureSet, Numeric, OneHot, Rolling
from stream.monitoring.profile import ReferenceProfile
from stream.registry import ModelStore
from stream.schema import Field, Schema
from stream.training.train import TrainingData, train

__all__ = [
    "CUMULATIVE",
    "CategoryIndex",
    "Domain",
    "Field",
    "FeatureSet",
    "ModelStore",
    "Numeric",
    "OneHot",
    "ReferenceProfile",
    "Rolling",
    "Schema",
    "Settings",
    "TrainingData",
    "load_settings",
    "train",
]
