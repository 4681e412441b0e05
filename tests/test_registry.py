"""The registry operators drive: states, history, rollback, and `mlstream models`."""

from __future__ import annotations

import json

import pytest

from stream.cli import main
from stream.errors import ModelLoadError
from stream.registry import ModelStore


def _copy_version(store: ModelStore, version: str, *, promote: bool, **lineage: object) -> None:
    card, blob = store.load("fraud", "1")
    store.save({**card.data, "version": version, "lineage": {"parent_version": "1", **lineage}},
               blob, promote=promote)


def test_states_history_and_rollback(model_store):
    store = ModelStore(model_store)
    assert store.current_version("fraud") == "1" and store.state("fraud", "1") is None
    _copy_version(store, "2", promote=False)
    assert store.state("fraud", "2") == "candidate" and store.current_version("fraud") == "1"
    store.promote("fraud", "2", reason="holdout")
    assert (store.state("fraud", "1"), store.state("fraud", "2")) == ("retired", "champion")
    assert store.rollback("fraud", reason="guard: live log loss worse") == "1"
    assert store.current_version("fraud") == "1"
    assert store.state("fraud", "2") == "rejected"
    assert [(h["version"], h["from"], h["to"]) for h in store.history("fraud")] == [
        ("2", None, "candidate"), ("1", None, "retired"), ("2", "candidate", "champion"),
        ("2", "champion", "rejected"), ("1", "retired", "champion")]
    with pytest.raises(ModelLoadError, match="no earlier champion"):
        store.rollback("fraud")


def test_a_promotion_taken_from_another_store_can_be_rolled_back_here(model_store):
    """The model feed mirrors another store's states (3 -> 4 -> 5 there, this one still at 3):
    rollback goes back to the champion that promotion retired (the guard names it), not to the
    one this store happened to serve."""
    store = ModelStore(model_store)
    for v in ("3", "4", "5"):
        _copy_version(store, v, promote=False)
    store.promote("fraud", "3")
    store.mirror("fraud", "5", {"1": "retired", "3": "retired", "4": "retired", "5": "champion"},
                 "model feed", guard="4")
    assert store.current_version("fraud") == "5"
    assert store.rollback("fraud", reason="by hand") == "4"
    assert (store.state("fraud", "4"), store.state("fraud", "5")) == ("champion", "rejected")

def test_newer_published_states_replace_a_decision_made_only_here(model_store):
    """A promotion whose publish was refused (another publisher got there first): the feed's
    newer states are taken, and the version promoted only here no longer calls itself champion
    (a later publish from this store would have sent it out as one)."""
    store = ModelStore(model_store)
    _copy_version(store, "2", promote=False)
    store.set_feed_mark("fraud", "t1")
    store.promote("fraud", "2", reason="trainer")  # its publish refused: the feed moved to t2
    assert store.feed_mark("fraud") == ("t1", True) and store.feed_seen("fraud") == "t1"
    store.mirror("fraud", "1", {"1": "champion"}, "model feed")
    store.set_feed_mark("fraud", "t2")
    assert store.current_version("fraud") == "1"
    assert (store.state("fraud", "1"), store.state("fraud", "2")) == ("champion", "candidate")
    # states read but refused (their versions never arrived whole): a publish is made on them
    store.note_feed_seen("fraud", "t3")
    assert store.feed_mark("fraud") == ("t2", False) and store.feed_seen("fraud") == "t3"


def test_a_missing_current_never_serves_a_rejected_or_unproven_version(model_store):
    store = ModelStore(model_store)
    _copy_version(store, "2", promote=True)
    _copy_version(store, "3", promote=False)  # a candidate, never promoted
    store.rollback("fraud")                   # 2 rejected, 1 champion again
    (model_store / "fraud" / "CURRENT").unlink()
    assert store.current_version("fraud") == "1"
    store.set_state("fraud", "1", "rejected", "test")
    with pytest.raises(ModelLoadError, match="no servable version"):
        store.current_version("fraud")


def test_models_commands(model_store, capsys, monkeypatch):
    monkeypatch.setenv("MLSTREAM_MODEL_FEED__MODE", "store")  # no broker here: test_model_feed.py publishes
    store = ModelStore(model_store)
    _copy_version(store, "2", promote=False, request_id="r-1", created_at="2026-12-01T08:00:00+00:00")
    base = ["models", "--store", str(model_store)]
    assert main([*base, "promote", "2", "--reason", "checked by hand"]) == 0
    assert "champion 1 -> 2" in capsys.readouterr().out
    assert main([*base, "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["VERSION", "STATE", "PARENT", "ROWS", "CREATED", "HOLDOUT"]
    assert rows[1].split()[:3] == ["1", "retired", "-"]
    assert rows[2].split()[:4] == ["*", "2", "champion", "1"]
    assert main([*base, "show", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "champion" and shown["card"]["lineage"]["request_id"] == "r-1"
    assert "reference_profile" not in shown["card"]
    assert [h["reason"] for h in shown["history"]] == ["trained", "checked by hand"]
    assert main([*base, "diff", "1", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 'version: "1" -> "2"' in lines and 'state: "retired" -> "champion"' in lines
    assert main([*base, "rollback"]) == 0
    assert "rolled back 2 -> 1" in capsys.readouterr().out
    assert main([*base, "promote", "9"]) == 2
    assert "error" in capsys.readouterr().err
