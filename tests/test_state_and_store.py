"""Entity state encoding and bounds; the model store's checksum and version handling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.examples.payments import DOMAIN
from stream.errors import ModelLoadError
from stream.registry import ModelStore
from stream.scoring.model import load_model
from stream.scoring.state import EntityStore, decode_changelog, encode_state, encode_states


def test_state_round_trips_through_changelog_bytes():
    rows = np.random.default_rng(1).normal(size=(5, 8))
    encoded = encode_states(rows)
    assert encoded[2] == encode_state(rows[2])
    assert np.array_equal(decode_changelog(encoded[2], 8)[1], rows[2])
    assert decode_changelog(b"", 8)[1] is None  # tombstone
    with pytest.raises(ValueError, match="expected format"):
        decode_changelog(encoded[0][:-1], 8)


def test_entity_store_stays_bounded_and_reuses_rows():
    store = EntityStore(4, max_entities=1_000, initial=16)
    for i in range(50):
        keys = [f"k{i}-{j}" for j in range(100)]
        rows = store.rows_for(keys)
        store.touch(rows, now=float(i))
        store.evict(now=float(i), ttl_s=5.0)
        assert len(store) <= 1_000
    assert len(store.matrix) <= 2_048  # rows of evicted entities were reused
    assert store.evict(now=1e9, ttl_s=5.0) and len(store) == 0


def test_store_refuses_a_model_whose_sha256_differs_from_its_card(model_store):
    store = ModelStore(model_store)
    path = model_store / "fraud" / "1" / "model.onnx"
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ModelLoadError, match="does not match the card"):
        store.load("fraud")


def test_loader_checks_the_model_against_the_feature_definition(model_store):
    store = ModelStore(model_store)
    model = load_model(store, "fraud", DOMAIN.features.columns)
    assert model.version == "1" and model.predict(np.zeros((3, len(DOMAIN.features.columns)), np.float32)).shape == (3,)
    with pytest.raises(ModelLoadError, match="do not match the feature definition"):
        load_model(store, "fraud", DOMAIN.features.columns[:-1])
    with pytest.raises(ModelLoadError, match="no model named"):
        load_model(store, "nope", DOMAIN.features.columns)


def test_a_corrupt_onnx_file_is_a_clear_error(model_store):
    store = ModelStore(model_store)
    card = json.loads((model_store / "fraud" / "1" / "card.json").read_text())
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load the model"):
        store.save({**card, "version": "2"}, b"not an onnx file")  # promotion refuses it
    assert store.current_version("fraud") == "1"
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load the model"):
        load_model(store, "fraud", DOMAIN.features.columns, "2")
    assert store.versions("fraud") == ["1", "2"]


def test_a_commit_is_due_after_max_uncommitted_events_whatever_the_batches():
    """The commit cadence counts events: a low-rate scorer's one-event micro-batches do not commit
    every few events (a commit is a feature batch, a changelog write and an offset commit)."""
    from stream.config import Settings
    from stream.scoring.commits import Commits
    from stream.scoring.batch_output import BatchOutput, PartitionOutput

    settings = Settings(scoring={"commit_interval_ms": 60_000, "max_uncommitted_events": 100})
    commits = Commits(settings, {})
    one = BatchOutput(partitions={0: PartitionOutput()})
    for _ in range(99):  # 99 one-event batches: not yet
        commits.record("events", one, [], 1)
    assert not commits.due()
    commits.record("events", one, [], 1)
    assert commits.due()
    with pytest.raises(ValueError, match="max_in_flight_batches"):  # the old name is refused, not ignored
        Settings(scoring={"max_in_flight_batches": 8})
