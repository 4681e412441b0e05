"""A model is checked before it serves: at load, at promotion and at swap."""

from __future__ import annotations

import numpy as np
import pytest

from stream.errors import ModelLoadError
from stream.examples.payments import DOMAIN
from stream.registry import ModelStore
from stream.scoring.model import load_model, warmup_rows
from tests.bad_models import nan_model, save_version

WIDTH = len(DOMAIN.features.columns)


def test_a_model_whose_outputs_are_nan_is_refused_at_promotion_and_at_load(model_store):
    store = ModelStore(model_store)
    with pytest.raises(ModelLoadError, match="warm-up inference gave 64 of 64 scores that are not finite"):
        save_version(model_store, "2", nan_model(WIDTH))
    assert store.current_version("fraud") == "1"
    with pytest.raises(ModelLoadError, match="not finite"):
        load_model(store, "fraud", DOMAIN.features.columns, "2")


def test_promotion_refuses_truncated_and_wrong_input_models(model_store):
    store = ModelStore(model_store)
    good = (model_store / "fraud" / "1" / "model.onnx").read_bytes()
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        save_version(model_store, "2", good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match=r"has shape \['?None'?, 20\]; expected \[batch, 21\]"):
        save_version(model_store, "3", nan_model(WIDTH - 1))
    with pytest.raises(ModelLoadError, match="no output 'probabilities'"):
        save_version(model_store, "4", nan_model(WIDTH, output="scores"))
    assert store.current_version("fraud") == "1"


def test_a_model_broken_only_outside_its_reference_data_passes_the_checks(model_store):
    """The run-time guard (invalid_score) is there for this one."""
    save_version(model_store, "2", nan_model(WIDTH, nan_above=12.0))
    model = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns)
    assert model.version == "2"
    X = warmup_rows(model.card)
    assert X[:, 0].max() < 12.0 and np.isfinite(model.predict(X)).all()
    X[0, 0] = 13.0
    assert np.isnan(model.predict(X)[0])


def test_warmup_rows_follow_the_reference_profile(model_store):
    card, _ = ModelStore(model_store).load("fraud")
    X = warmup_rows(card)
    cols = list(card.features)
    assert X.shape == (64, WIDTH)
    channel = X[:, [cols.index(f"channel={c}") for c in ("web", "pos", "app")]]
    assert (channel.sum(axis=1) == 1).all()  # exactly one channel per row
    assert X[:, cols.index("log_amount")].std() > 0.5
