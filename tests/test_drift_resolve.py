"""One sustained drift, one event: a drift that shrinks to a residual the windows no longer see
stays one drift, a feature's drift does not open and close its pairs' joint state, missing values
that appear stay one drift; ``drift_resolved`` comes once the shift is really gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.config import Settings
from stream.examples.traffic import generate
from stream.messages import SCORE_COLUMN
from stream.monitoring.drift import DriftMonitor
from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.profile import ReferenceProfile
from stream.tools.bench_realistic import CHANGE, REF_ROWS, replay_events
from tests.test_drift import concat, make, run

MODEL = Path(__file__).resolve().parents[1] / "models" / "fraud" / "1"


def demo_monitor_events(scenario: str, seed: int, n: int, drift_at: int) -> list[Any]:
    """The shipped model scoring the payments simulator, through the monitor a worker builds from
    the model card (features, score, event times and entity ids in 500-row releases)."""
    import onnxruntime as ort
    import orjson

    from stream.examples.payments import DOMAIN
    from stream.examples.simulate import PaymentSimulator

    card = json.loads((MODEL / "card.json").read_text())
    session = ort.InferenceSession((MODEL / "model.onnx").read_bytes(), providers=["CPUExecutionProvider"])
    sim = PaymentSimulator(seed=seed, scenario=scenario, drift_at=drift_at)
    events = [orjson.loads(e.value) for e in sim.events(n) if e.label is not None]
    cols = DOMAIN.columns(events)
    X = DOMAIN.features.compute_offline(cols, cols[DOMAIN.schema.entity_field])
    monitored = DOMAIN.monitored_columns(cols, X)
    monitored[SCORE_COLUMN] = session.run([card["output"]], {"features": X.astype(np.float32)})[0][:, 1].astype(float)
    ts, users = np.asarray(cols["ts"], dtype=float), list(cols[DOMAIN.schema.entity_field])
    monitor = ModelMonitor(card, Settings())
    out = []
    for a in range(0, len(events), 500):
        out += monitor.on_features({k: v[a : a + 500] for k, v in monitored.items()}, ts=ts[a : a + 500],
                                   entities=users[a : a + 500])
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_the_demo_score_stays_in_drift_while_the_amount_shift_lasts(seed: int) -> None:
    # amounts x2 from event 20,000 on: the entity-normalised features adapt and the score comes most
    # of the way back; its residual shift (~0.1 sd) is still a drift. Before the hold, the 2,000-row
    # window was calm, the score closed (43,000 / 37,500) and the CUSUM opened it again 14,500-16,500
    # rows later, twice on seed 1
    events = demo_monitor_events("mean_shift", seed, 130_000, 20_000)
    score = [(e.kind, e.index) for e in events if "score" in e.features and e.kind != "multivariate_drift"]
    assert [k for k, _ in score] == ["score_drift"], score
    assert 20_000 <= score[0][1] < 21_000


def test_a_shift_that_shrinks_to_a_residual_is_one_drift_resolved_once_it_is_gone() -> None:
    profile = ReferenceProfile.from_columns(make(np.random.default_rng(123), 20_000))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        # 1 sd for 5,000 rows, then 0.12 sd (above half the 0.1 sd gate) for 40,000, then gone
        cols = concat(make(rng, 20_000), make(rng, 5_000, shift=1.0), make(rng, 40_000, shift=0.12),
                      make(rng, 20_000))
        events = [(e.kind, e.index) for e in run(DriftMonitor(profile), cols)]
        assert [k for k, _ in events] == ["data_drift", "drift_resolved"], (seed, events)
        assert 20_000 <= events[0][1] < 21_000 and 65_000 < events[1][1] < 73_000, (seed, events)


def realistic_events(scenario: str, seed: int, change: Any, after: int = 45_000) -> list[tuple[str, int, tuple[str, ...]]]:
    """Events (kind, rows after the change, features) on ``scenario`` traffic changed by ``change``
    from event 100,000 on, its reference an i.i.d. sample of the process with event times."""
    n = CHANGE + after
    cols = generate(scenario, n, seed=seed)
    change(cols, np.arange(n) >= CHANGE, np.random.default_rng(seed))
    ref = generate(scenario, REF_ROWS, seed=seed + 10_000, iid=True)
    return [(e.kind, e.index - CHANGE, tuple(e.features)) for e in replay_events(cols, ref, n)]


def test_a_features_drift_does_not_open_and_close_its_pairs_joint_state() -> None:
    def amounts_x15(cols: dict[str, Any], after: np.ndarray, rng: np.random.Generator) -> None:
        cols["amount"] = np.where(after, cols["amount"] * 1.5, cols["amount"])

    # amount's correlation with x never changes, but the pair's linearised correlation is taken
    # against the reference's marginals: before, the joint state (x, amount) opened and closed
    # every ~10,000 rows (3 times in 45,000 rows on seed 1)
    events = realistic_events("mixed", 1, amounts_x15)
    assert [(k, f) for k, _, f in events] == [("data_drift", ("amount",))], events
    assert 0 <= events[0][1] < 5_000


def test_missing_values_appearing_in_a_feature_stay_one_drift() -> None:
    def x_missing(cols: dict[str, Any], after: np.ndarray, rng: np.random.Generator) -> None:
        x = cols["x"].copy()
        x[after & (rng.random(x.size) < 0.2)] = np.nan
        cols["x"] = x

    # x had no missing values: the missing-rate test has no dependence measured for them and was
    # dropped as thin, which read as calm (closed at +3,599, open again at +9,199, and so on)
    events = realistic_events("seasonal", 0, x_missing)
    assert [(k, f) for k, _, f in events] == [("data_drift", ("x",))], events
    assert 0 <= events[0][1] < 500


def test_a_feature_stuck_at_one_value_is_one_drift_not_also_its_pairs() -> None:
    def x_stuck(cols: dict[str, Any], after: np.ndarray, rng: np.random.Generator) -> None:
        cols["x"] = np.where(after, np.nanmedian(cols["x"][~after]), cols["x"])

    # a constant x has no correlation with y: before, a multivariate_drift (x, y) followed the
    # data_drift of x 4,800 rows later, naming x a second time
    events = realistic_events("mixed", 0, x_stuck)
    assert [(k, f) for k, _, f in events] == [("data_drift", ("x",))], events
