"""DriftMonitor: false alarms, detection, batch == row by row, hysteresis, bounded state."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from stream.messages import CategoryCodes
from stream.monitoring.drift import DriftEvent, DriftMonitor, DriftSettings
from stream.monitoring.profile import ReferenceProfile

CATS = ["a", "b", "c", "d"]
P_CATS = [0.4, 0.3, 0.2, 0.1]


def make(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0, corr: float = 0.6,
         p_cats: list[float] | None = None, missing: float = 0.02, new_cat: float = 0.0) -> dict[str, Any]:
    z = rng.normal(size=(n, 2))
    x = shift + scale * rng.normal(size=n)
    x[rng.random(n) < missing] = np.nan
    cats = rng.choice(CATS, p=p_cats or P_CATS, size=n).astype(object)
    cats[rng.random(n) < new_cat] = "new"
    return {
        "x": x,
        "u": z[:, 0],
        "v": corr * z[:, 0] + np.sqrt(1 - corr**2) * z[:, 1],
        "c": cats.tolist(),
        "score": 1 / (1 + np.exp(-rng.normal(-1.0, 1.0, size=n))),
    }


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return ReferenceProfile.from_columns(make(np.random.default_rng(123), 20_000))


def run(mon: DriftMonitor, cols: dict[str, Any], chunk: int = 5000) -> list[DriftEvent]:
    n = len(cols["x"])
    out: list[DriftEvent] = []
    for s in range(0, n, chunk):
        out += mon.update_batch({k: v[s : s + chunk] for k, v in cols.items()})
    return out


def concat(*parts: dict[str, Any]) -> dict[str, Any]:
    return {k: (np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray)
                else sum((p[k] for p in parts), [])) for k in parts[0]}


def test_stationary_200k_rows_fire_nothing(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(7)
    mon = DriftMonitor(profile)
    events = run(mon, make(rng, 200_000), chunk=20_000)
    assert events == []
    assert mon.rows_seen == 200_000
    snap = mon.snapshot()
    assert not any(s["drifting"] for s in snap.values())


@pytest.mark.parametrize("change", [
    {"shift": 1.0}, {"shift": 0.5}, {"scale": 2**0.5}, {"p_cats": [0.25, 0.25, 0.25, 0.25]},
    {"new_cat": 0.05}, {"missing": 0.2},
])
def test_changes_detected_within_2000_rows(profile: ReferenceProfile, change: dict[str, Any]) -> None:
    rng = np.random.default_rng(11)
    mon = DriftMonitor(profile, model_name="fraud", model_version="7")
    events = run(mon, concat(make(rng, 10_000), make(rng, 10_000, **change)))
    drift = [e for e in events if e.kind == "data_drift"]
    assert drift, change
    assert 10_000 <= drift[0].index < 12_000, (change, drift[0].index)
    feature = "c" if "p_cats" in change or "new_cat" in change else "x"
    assert drift[0].features == (feature,)
    assert len(drift) == 1  # one drift, one event
    assert drift[0].model_version == "7"


def test_score_drift_kind(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(3)
    cols = concat(make(rng, 5000), make(rng, 5000))
    cols["score"] = np.concatenate([cols["score"][:5000], np.clip(cols["score"][5000:] + 0.3, 0, 1)])
    events = DriftMonitor(profile).update_batch(cols)
    assert [(e.kind, e.features) for e in events] == [("score_drift", ("score",))]


def test_multivariate_sees_joint_change_only(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(5)
    events = run(DriftMonitor(profile), concat(make(rng, 10_000), make(rng, 20_000, corr=0.0)))
    assert [e.kind for e in events] == ["multivariate_drift"]
    assert events[0].features == ("u", "v")
    ev = events[0].evidence[0]
    assert ev["test"] == "correlation" and ev["r_reference"] == pytest.approx(0.6, abs=0.03)


def test_evidence_is_complete_and_json(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(9)
    mon = DriftMonitor(profile, model_name="m", model_version="2")
    events = mon.update_batch(concat(make(rng, 5000), make(rng, 5000, shift=1.0)))
    d = events[0].to_dict()
    assert json.loads(json.dumps(d)) == d
    for ev in d["evidence"]:
        assert {"feature", "test", "statistic", "threshold", "p_value", "alpha", "effect_size", "effect_threshold",
                "effect_metric", "window", "reference", "n", "n_reference"} <= set(ev)
        assert ev["statistic"] > ev["threshold"] and ev["effect_size"] >= ev["effect_threshold"]
        assert ev["p_value"] < 1e-4
    assert d["model"] == "m" and d["model_version"] == "2"


def test_batch_chunks_equal_row_by_row(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(21)
    cols = concat(make(rng, 6000), make(rng, 4000, shift=1.0, new_cat=0.1), make(rng, 8000),
                  make(rng, 6000, missing=0.3, corr=0.0))
    cols["c"][5] = 3  # a non-string category
    cols["c"][6] = float("nan")
    batch_mon = DriftMonitor(profile)
    batch: list[DriftEvent] = []
    sizes = np.random.default_rng(0).integers(1, 3000, size=100)
    s = 0
    for size in sizes:
        batch += batch_mon.update_batch({k: v[s : s + size] for k, v in cols.items()})
        s += int(size)
        if s >= len(cols["x"]):
            break
    row_mon = DriftMonitor(profile)
    rows: list[DriftEvent] = []
    names = list(cols)
    for i in range(len(cols["x"])):
        row = {k: cols[k][i] for k in names}
        row["x"] = None if np.isnan(row["x"]) else float(row["x"])
        rows += row_mon.update(row)
    assert len(batch) >= 3
    assert [e.to_dict() for e in batch] == [e.to_dict() for e in rows]
    assert batch_mon.snapshot() == row_mon.snapshot()
    # categories packed as the scorer's feature batches carry them (a table per batch, codes)
    coded_mon = DriftMonitor(profile)
    coded: list[DriftEvent] = []
    s = 0
    for size in sizes:
        part = {k: v[s : s + size] for k, v in cols.items()}
        table: dict[Any, int] = {}
        codes = np.array([table.setdefault(v, len(table)) for v in part["c"]], dtype=np.int64)
        coded += coded_mon.update_batch({**part, "c": CategoryCodes(codes, list(table))})
        s += int(size)
        if s >= len(cols["x"]):
            break
    assert [e.to_dict() for e in coded] == [e.to_dict() for e in batch]
    assert coded_mon.snapshot() == batch_mon.snapshot()


def test_hysteresis_one_event_per_drift_then_resolved(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(31)
    cols = concat(make(rng, 5000), make(rng, 6000, shift=1.0), make(rng, 60_000), make(rng, 6000, shift=1.0))
    events = run(DriftMonitor(profile), cols)
    seq = [(e.kind, e.features) for e in events]
    assert seq == [("data_drift", ("x",)), ("drift_resolved", ("x",)), ("data_drift", ("x",))], seq
    opened, resolved, again = (e.index for e in events)
    # resolved once the 2,000-row window is calm and the CUSUM hold released: 13,999-18,399 on seeds
    # 1-7 and 31. The hold decays at the design effect learned before the drift (1.9 on seed 31);
    # when the drift's first rows still counted in it (5.8), it released sooner: 13,599-15,999
    assert 5000 <= opened < 6000 and 11_000 <= resolved < 19_000 and 71_000 <= again < 72_000


def test_bounded_state_over_long_run(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(8)
    mon = DriftMonitor(profile)
    size = mon.state_size()
    run(mon, make(rng, 50_000), chunk=10_000)
    for _ in range(3):
        run(mon, make(rng, 50_000, shift=0.5), chunk=10_000)
    assert mon.state_size() == size
    s = mon.settings
    assert mon._ring_num.shape[0] == max(s.windows) // s.block_size + s.mature_refresh_blocks + 1
    assert mon.rows_seen == 200_000


def test_settings_validation(profile: ReferenceProfile) -> None:
    for bad in [DriftSettings(windows=(550,)), DriftSettings(windows=(2000, 500)),
                DriftSettings(resolve_window=700), DriftSettings(score_detector="x"), DriftSettings(leave_p=0.0), DriftSettings(dependence_min_batches=1),
                DriftSettings(mature_refresh_blocks=96), DriftSettings(mature_refresh_blocks=0)]:
        with pytest.raises(ValueError):
            DriftMonitor(profile, bad)
    with pytest.raises(ValueError):
        DriftMonitor(profile, DriftSettings(expected_run_length=1))


def test_river_score_detector_same_in_batch_and_rows(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(2)
    cols = concat(make(rng, 3000), make(rng, 3000))
    cols["score"] = np.concatenate([cols["score"][:3000], cols["score"][3000:] * 0.2 + 0.7])
    settings = DriftSettings(score_detector="page_hinkley")
    a = DriftMonitor(profile, settings)
    ev_a = run(a, cols, chunk=777)
    b = DriftMonitor(profile, settings)
    ev_b = [e for i in range(6000) for e in b.update({k: v[i] for k, v in cols.items()})]
    assert [e.to_dict() for e in ev_a] == [e.to_dict() for e in ev_b]
    tests = [ev["test"] for e in ev_a for ev in e.evidence]
    assert "page_hinkley" in tests


def test_snapshot_shape(profile: ReferenceProfile) -> None:
    mon = DriftMonitor(profile)
    assert mon.snapshot()["x"]["drifting"] is False
    mon.update_batch(make(np.random.default_rng(4), 3000))
    assert mon.snapshot()["x"]["warming_up"]  # the stream's dependence is not known yet: no test runs
    mon.update_batch(make(np.random.default_rng(5), 3000))
    snap = mon.snapshot()
    assert set(snap) == {"x", "u", "v", "c", "score", "multivariate"}
    for s in snap.values():
        assert {"statistic", "effect_size", "threshold", "p_value", "drifting", "windows"} <= set(s)
        assert 0.0 <= s["p_value"] <= 1.0 and s["statistic"] < s["threshold"]


def test_constant_and_out_of_range_values_detected() -> None:
    rng = np.random.default_rng(12)
    prof = ReferenceProfile.from_columns({"flag": np.ones(5000), "n": rng.integers(0, 3, 5000).astype(float)})
    mon = DriftMonitor(prof)
    assert mon.update_batch({"flag": np.ones(3000), "n": rng.integers(0, 3, 3000).astype(float)}) == []
    events = mon.update_batch({"flag": np.full(3000, 2.0), "n": rng.integers(0, 3, 3000).astype(float)})
    # the first check after the warm-up (32 blocks: the stream's dependence is known)
    assert [(e.index, e.features) for e in events] == [(3299, ("flag",))]


def test_bench_streams_run_through_the_monitor() -> None:
    from stream.tools.bench_drift import _combine, _run, format_table

    name, det, res = _run(("mean+1.0sd", "mlstream", 0, None, None))
    assert res["detected"] and res["false_alarms"] == 0 and res["delay"] <= 500
    _, _, base = _run(("mean+1.0sd", "windowed-KS/chi2", 0, None, None))
    assert base["detected"]
    combined = _combine([res, {**res, "detected": False, "delay": None}])
    assert combined["detected_runs"] == 1 and combined["max_delay"] == 10_000
    assert "mean+1.0sd" not in format_table({
        "streams": {}, "summary": {d: {"detected": 0, "streams": 0, "median_delay": None, "false_alarms_stationary": 0,
                                       "stationary_events": 0, "false_alarms_per_100k": None,
                                       "false_alarms_before_change": 0, "mlstream_median_delay_same_streams": None}
                                   for d in ("mlstream", "ADWIN", "KSWIN", "PageHinkley", "windowed-KS/chi2")},
        "calibration_check": {"expected_run_length": 1, "rows": 0, "false_alarms": 0, "budget": 0},
        "targets": {}, "elapsed_s": 0.0})


def test_a_strong_step_is_found_in_the_first_block_after_it() -> None:
    """A mid-rank block far past the block CUSUM's level alarms alone: a 1 sd step on nearly
    independent traffic is found 99 rows after it on most seeds (199 when the first block's
    mid-rank is clipped at 2k, as an indicator's still is), with no false alarm before it."""
    from stream.tools.bench_drift import _run

    delays = []
    for seed in range(5):
        _, _, res = _run(("mean+1.0sd", "mlstream", seed, None, None))
        assert res["detected"] and res["false_alarms"] == 0
        delays.append(res["delay"])
    assert max(delays) <= 199 and sum(d <= 99 for d in delays) >= 3, delays


def test_a_new_category_is_judged_at_its_own_size() -> None:
    """The shortest window's Jensen-Shannon gate also reads its newest fifth: a category the
    reference never saw, at 5 % of the rows, passes it ~100 rows after it appears, where over the
    whole 500-row window it still reads 1 % (before: 199-299 rows on every seed)."""
    from stream.tools.bench_drift import _run

    delays = []
    for seed in range(6):
        _, _, res = _run(("new category 5%", "mlstream", seed, None, None))
        assert res["detected"] and res["false_alarms"] == 0
        delays.append(res["delay"])
    assert max(delays) <= 299 and sum(d <= 199 for d in delays) >= 4 and min(delays) == 99, delays


@pytest.mark.parametrize("stream", ["category mix", "variance x2"])
def test_block_tests_see_a_mix_and_a_scale_in_two_blocks(stream: str) -> None:
    """A category mix spread over several categories (0.4/0.3/0.2/0.1 turned uniform) adds up in
    the block chi-square, and a variance x2 in Klotz's spread score: on half the seeds or more both
    are found 199 rows after the change (before: one seed in six each, 299-599 on the others)."""
    from stream.tools.bench_drift import _run

    delays = []
    for seed in range(6):
        _, _, res = _run((stream, "mlstream", seed, None, None))
        assert res["detected"] and res["false_alarms"] == 0
        delays.append(res["delay"])
    assert sum(d <= 199 for d in delays) >= 3, delays


def test_false_alarms_within_budget_on_simulated_reference(profile: ReferenceProfile) -> None:
    from stream.monitoring.calibration import simulate_reference

    sim = simulate_reference(profile, 200_000, seed=1)
    assert [e for e in DriftMonitor(profile).update_batch(sim) if e.kind != "drift_resolved"] == []
    # a 1000x shorter target run length: the realised false-alarm count stays under its budget (Bonferroni)
    fast = DriftMonitor(profile, DriftSettings(expected_run_length=10_000, emit_resolved=False))
    assert len(fast.update_batch(sim)) <= 200_000 / 10_000


@pytest.mark.parametrize("detector", [None, "page_hinkley", "adwin"])
def test_events_match_the_drift_event_schema(profile: ReferenceProfile, detector: str | None) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    from stream.monitoring.labels import PerformanceMonitor

    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "drift-event.schema.json").read_text())
    rng = np.random.default_rng(17)
    cols = concat(make(rng, 5000), make(rng, 8000, shift=1.0, corr=0.0, new_cat=0.2), make(rng, 30_000))
    cols["score"] = np.concatenate([cols["score"][:5000], cols["score"][5000:] * 0.2 + 0.7])
    events = run(DriftMonitor(profile, DriftSettings(score_detector=detector), model_name="m", model_version="1"), cols)
    y = (rng.random(8000) < 0.5).astype(float)
    err = rng.random(8000) < np.where(np.arange(8000) < 4000, 0.1, 0.4)
    events += PerformanceMonitor().update(np.where(err, 1 - y, y), y)
    kinds = {e.kind for e in events}
    assert {"data_drift", "score_drift", "multivariate_drift", "drift_resolved", "concept_drift"} <= kinds
    for e in events:
        jsonschema.validate({**e.to_dict(), "detected_at": 0.0}, schema)


def test_serially_dependent_stream_calibrated_by_the_reference_order() -> None:
    from scipy.signal import lfilter

    rng = np.random.default_rng(14)

    def ar1(n: int) -> np.ndarray:
        return lfilter([1.0], [1.0, -0.7], rng.normal(size=n) * np.sqrt(1 - 0.49))

    prof = ReferenceProfile.from_columns({"x": ar1(50_000)})
    stream = ar1(150_000)
    assert DriftMonitor(prof).update_batch({"x": stream}) == []
    shifted = np.concatenate([stream[:20_000], stream[20_000:40_000] + 1.0])
    events = DriftMonitor(prof).update_batch({"x": shifted})
    assert events[0].kind == "data_drift" and 20_000 <= events[0].index < 21_000


def test_a_half_sd_step_is_found_two_blocks_after_it_on_most_seeds() -> None:
    """A 0.5 sd step on independent rows moves a block's mid-rank ~4.7 block sd (~3.7 with the
    cold-start bound on the design effect): two blocks pass the block CUSUM's level when it holds
    20 % of the CUSUMs' budget (3.57 here), and fell just short at 10 % (3.74: 299 rows on seeds 0, 1
    and 3 of these six, now on 1 and 3; seed 2 99 instead of 199)."""
    from stream.tools.bench_drift import _run

    delays = []
    for seed in range(6):
        _, _, res = _run(("mean+0.5sd", "mlstream", seed, None, None))
        assert res["detected"] and res["false_alarms"] == 0
        delays.append(res["delay"])
    assert sum(d <= 199 for d in delays) >= 4 and max(delays) <= 299, delays


def test_block_cusum_finds_a_sharp_shift_on_independent_rows_within_a_few_blocks() -> None:
    rng = np.random.default_rng(2)
    mon = DriftMonitor(ReferenceProfile.from_columns({"x": rng.normal(size=20_000)}))
    x = rng.normal(size=30_000)
    x[20_000:] += 0.5  # after the warm-up: the block CUSUM watches x (design effect ~1)
    events = mon.update_batch({"x": x})
    assert events[0].kind == "data_drift" and 20_000 <= events[0].index < 20_400
    ev = events[0].evidence[0]
    assert ev["test"] == "cusum" and ev["batch_rows"] == 100 and ev["p_value"] < ev["alpha"]


def test_block_cusum_stays_off_on_dependent_scores() -> None:
    from scipy.signal import lfilter

    rng = np.random.default_rng(4)
    ar = lfilter([1.0], [1.0, -0.9], rng.normal(size=60_000) * np.sqrt(1 - 0.81))
    mon = DriftMonitor(ReferenceProfile.from_columns({"x": rng.normal(size=20_000)}))
    assert mon.update_batch({"x": ar}) == []
    assert not mon._fast_mask.any()  # design effect ~19: neighbouring blocks are not independent


def test_a_doubled_variance_is_caught_by_the_spread_channel() -> None:
    """Same location, twice the variance: the block CUSUM's spread score |u - 1/2| sees it within
    a few hundred rows (the KS test's 8,000-row window needed ~1,600)."""
    rng = np.random.default_rng(4)
    mon = DriftMonitor(ReferenceProfile.from_columns({"x": rng.normal(size=20_000)}))
    assert mon.update_batch({"x": rng.normal(size=10_000)}) == []
    events = mon.update_batch({"x": rng.normal(0.0, 2**0.5, size=5_000)})
    assert events and events[0].kind == "data_drift" and events[0].index < 10_000 + 1_000, events[:1]
    assert any(ev.get("score") == "spread" for e in events[:1] for ev in e.evidence), events[0].evidence



@pytest.mark.parametrize(("shape", "seed", "within"), [("uniform", 3, 1_600), ("uniform", 4, 1_600),
                                                     ("bimodal", 3, 3_000), ("bimodal", 0, 4_000),
                                                     ("bimodal", 1, 4_000)])
def test_a_change_of_shape_passes_the_chi_square_on_psi_or_the_wasserstein_distance(shape: str, seed: int,
                                                                                  within: int) -> None:
    """A change of shape at the same mean and variance, after a 30,000-row warm-up, opens on the
    chi-square (or KS) once its effect passes either gate. A window partly past a change reads PSI
    (a divergence) at about the square of that part, W1 at the part itself; gated by PSI alone these
    opened 400 rows later on the uniform shape (1,999 and 1,599 rows). The two modes (PSI 0.06,
    W1 0.10 in full) sat at the old gates of 0.1: on seed 0 the 2,000-row windows that passed them
    were never significant, and the drift opened after 13,999 rows; at 0.07, 6,799, on the 8,000-row
    window once 70 % of it was past the change (seed 1: 5,199). The 4,000-row window, fully past
    the change at 4,000 rows, opens both by 3,600."""
    from stream.tools.bench_drift_streams import _shape

    rng = np.random.default_rng(seed)
    mon = DriftMonitor(ReferenceProfile.from_columns({"x": rng.normal(size=20_000)}, seed=0))
    warm = 30_000
    x = np.concatenate([rng.normal(size=warm), _shape(rng.normal(size=20_000), shape)])
    events = [e for e in run(mon, {"x": x}, chunk=1_000) if e.kind != "drift_resolved"]
    assert events and warm <= events[0].index < warm + within, events[:1]
    ev = events[0].evidence[0]
    assert ev["test"] in ("chi2", "ks") and ev["window"] in (2_000, 4_000, 8_000), ev
    assert ev["effect_size"] >= ev["effect_threshold"] == 0.07, ev
    assert ev["effect_metric"] == "psi" or ev["psi"] < 0.07, ev  # W1 passes before PSI does


def test_shares_left_to_the_entity_balanced_test_give_their_budget_to_the_other_channels() -> None:
    from stream.examples.traffic import generate
    from stream.tools.bench_realistic import CHANGE, REF_ROWS, replay_events

    # mixed traffic with entity ids: c's five bursty shares run the entity-balanced test, not the
    # batch CUSUM, so their sides of its budget go to the channels that run (level 5.88 -> 5.51)
    cols = generate("mixed", CHANGE + 8_000, seed=2, drift="mean_shift", drift_at=CHANGE)
    events = replay_events(cols, generate("mixed", REF_ROWS, seed=10_002, iid=True), CHANGE + 8_000)
    assert [e.features for e in events] == [("x",)]
    cusum = [ev for ev in events[0].evidence if ev["test"] == "cusum"]
    assert cusum and cusum[0]["threshold"] == pytest.approx(5.51, abs=0.01)
    assert 0 < events[0].index - CHANGE < 5_000


def test_an_infinite_or_absurd_value_leaves_the_monitor_whole() -> None:
    """An infinity is a missing value (as a packed column reads it), in the reference and in the
    stream; a value a million reference sd away counts in the sums at that reach. Before, one
    infinity (or the square of 1e300) sat in the running totals for good: every later window's
    mean and spread read NaN, and the Wasserstein distances of its bins with them."""
    import warnings

    rng = np.random.default_rng(0)
    ref_x = rng.normal(size=20_000)
    ref_x[:3] = [np.inf, -np.inf, np.nan]
    prof = ReferenceProfile.from_columns({"x": ref_x, "y": rng.normal(size=20_000)},
                                         {"x": "numeric", "y": "numeric"}, seed=0)
    assert prof.numeric["x"].n_missing == 3 and abs(prof.numeric["x"].std - 1.0) < 0.05
    x, y = rng.normal(size=60_000), rng.normal(size=60_000)
    x[[5_000, 6_000]] = [np.inf, 1e300]
    x[40_000:] += 0.5
    mon, events = DriftMonitor(prof), []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, no inf - inf
        for s in range(0, 60_000, 2_000):
            events += mon.update_batch({"x": x[s : s + 2_000], "y": y[s : s + 2_000]})
        mon.update({"x": float("inf"), "y": 0.0})
    now = mon.summary()["x"]["current"]
    assert abs(now["mean"] - 0.5) < 0.1 and abs(now["std"] - 1.0) < 0.1
    assert np.isfinite(mon.snapshot()["x"]["windows"][2000]["wasserstein"])
    opened = [e.index for e in events if e.kind == "data_drift" and "x" in e.features]
    assert len(opened) == 1 and 40_000 <= opened[0] < 41_000


def test_an_int_past_a_floats_range_reads_as_an_infinity() -> None:
    """Python's ints have no range: 10**400 in a row, a column, an event time or a reference column
    raised OverflowError (NumPy cannot make it a float), which cost the whole batch. It reads as an
    infinity of its sign, which the monitor counts as missing."""
    rng = np.random.default_rng(0)
    ref = [float(v) for v in rng.normal(size=2_000)] + [10**400, -(10**400)]
    prof = ReferenceProfile.from_columns({"x": ref}, {"x": "numeric"}, seed=0)
    assert prof.numeric["x"].n_missing == 2
    mon = DriftMonitor(prof)
    assert mon.update({"x": 10**400}, ts=10**400) == []
    assert mon.update_batch({"x": [1.0, -(10**400)] * 50}, ts=[1.75e9, 10**400] * 50) == []
    assert mon.rows_seen == 101 and mon.summary()["x"]["current"]["missing_rate"] >= 0.5


def test_odd_rows_are_refused_or_read_as_update_reads_them() -> None:
    """Columns of different lengths are refused (a longer one had been cut to the first's); a
    category cell that cannot be a key (a JSON object) is "other", as ``update`` files it (it had
    raised TypeError and cost the whole release); an event time a hair before midnight is hour 23
    (-1e-13 % 86,400 is 86,400.0: hour 24 had raised IndexError)."""
    rng = np.random.default_rng(0)
    ts = 1.75e9 + np.arange(20_000) * 4.0
    prof = ReferenceProfile.from_columns({"x": rng.normal(size=20_000), "c": rng.choice(["a", "b"], 20_000)},
                                         {"x": "numeric", "c": "categorical"}, seed=0, event_ts=ts)
    mon = DriftMonitor(prof)
    with pytest.raises(ValueError, match=r"columns of different lengths \[3, 4\]"):
        mon.update_batch({"x": np.zeros(3), "c": ["a", "b", "a", "b"]})
    with pytest.raises(ValueError, match="different lengths"):
        mon.update_batch({"x": np.zeros(3), "c": ["a", "b", "a"]}, ts=ts[:4])
    assert mon.rows_seen == 0
    cells = ["a", {"k": 1}, "b", ["l"]] * 500
    t = ts[:2_000].copy()
    t[[50, 1_999]] = -1e-13  # a block's hour (its middle row) and a batch's last row
    assert mon.update_batch({"x": rng.normal(size=2_000), "c": cells}, ts=t) == []
    row = DriftMonitor(prof)
    for i in range(2_000):
        row.update({"x": 0.0, "c": cells[i]}, ts=float(t[i]))
    assert mon.rows_seen == row.rows_seen == 2_000
    assert np.array_equal(mon._tot["cat"], row._tot["cat"]) and np.array_equal(mon._tot["hours"], row._tot["hours"])
    assert mon._tot["hours"][23] > 0 and mon._tot["hours"].sum() == 2_000
