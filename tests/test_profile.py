from __future__ import annotations

import json

import numpy as np
import pytest

from stream.monitoring.profile import ProfileError, ReferenceProfile, bin_normal_scores, dispersion_for


def _cols(n: int = 2000, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[:100] = np.nan
    return {
        "x": x,
        "k": rng.integers(0, 3, size=n),
        "c": [None if i % 50 == 0 else s for i, s in enumerate(rng.choice(["a", "b", "c"], size=n).tolist())],
        "score": rng.random(n),
    }


def test_kinds_inferred_and_order_kept() -> None:
    prof = ReferenceProfile.from_columns(_cols())
    assert prof.features == {"x": "numeric", "k": "numeric", "c": "categorical", "score": "numeric"}
    assert prof.numeric_names == ["x", "k", "score"] and prof.categorical_names == ["c"]


def test_numeric_summary() -> None:
    cols = _cols()
    prof = ReferenceProfile.from_columns(cols)
    x = prof.numeric["x"]
    assert x.n_missing == 100 and x.n == 1900
    assert len(x.edges) == 19 and len(x.counts) == 20 == len(x.bin_means)
    assert sum(x.counts) == 1900 and max(x.counts) - min(x.counts) <= 2
    assert x.mean == pytest.approx(np.nanmean(cols["x"])) and x.std == pytest.approx(np.nanstd(cols["x"]))
    k = prof.numeric["k"]  # discrete: ties collapse the quantile edges; empty bins past min and max
    assert k.edges == [0.0, 1.0, 2.0, float(np.nextafter(2.0, 3.0))] and k.counts[0] == k.counts[-1] == 0
    assert sum(k.counts) == 2000


def test_categorical_summary_pools_rare() -> None:
    vals = ["a"] * 600 + ["b"] * 398 + ["rare"] * 2
    prof = ReferenceProfile.from_columns({"c": vals}, min_category_share=0.01)
    c = prof.categorical["c"]
    assert c.categories == ["a", "b"] and c.counts == [600, 398] and c.other_count == 2


def test_explicit_kinds() -> None:
    prof = ReferenceProfile.from_columns({"zip": [1, 2, 3, 1]}, {"zip": "categorical"})
    assert prof.features == {"zip": "categorical"} and prof.categorical["zip"].categories == ["1", "2", "3"]


def test_roundtrip_json_deterministic() -> None:
    prof = ReferenceProfile.from_columns(_cols(), seed=3)
    d = prof.to_dict()
    text = json.dumps(d, sort_keys=True)
    again = ReferenceProfile.from_dict(json.loads(text))
    assert json.dumps(again.to_dict(), sort_keys=True) == text
    assert json.dumps(ReferenceProfile.from_columns(_cols(), seed=3).to_dict(), sort_keys=True) == text


def test_correlation_matrix() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=5000)
    b = 0.8 * a + 0.6 * rng.normal(size=5000)
    prof = ReferenceProfile.from_columns({"a": a, "b": b})
    # correlation of the bins' normal scores: close to Pearson's for Gaussian data
    assert prof.correlation[0][1] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=0.03)
    scores = [bin_normal_scores(prof.numeric[k].counts)[np.searchsorted(prof.numeric[k].edges, v, side="right")]
              for k, v in (("a", a), ("b", b))]
    assert prof.correlation[0][1] == pytest.approx(np.corrcoef(*scores)[0, 1], abs=1e-9)
    assert prof.correlation_n[0][1] == 5000


@pytest.mark.parametrize(
    "cols,kinds",
    [
        ({}, None),
        ({"a": [1, 2], "b": [1]}, None),
        ({"a": [1, "x"]}, None),
        ({"a": [1, 2]}, {"a": "text"}),
        ({"a": ["x", "y"]}, {"a": "numeric"}),
    ],
)
def test_bad_input_raises(cols: dict[str, list[object]], kinds: dict[str, str] | None) -> None:
    with pytest.raises(ProfileError):
        ReferenceProfile.from_columns(cols, kinds)


def test_bad_dict_raises() -> None:
    with pytest.raises(ProfileError):
        ReferenceProfile.from_dict({"version": 99})
    with pytest.raises(ProfileError):
        ReferenceProfile.from_dict({"version": 1, "features": [{"name": "a"}]})


def test_old_profiles_without_correlation_method_load_as_pearson() -> None:
    d = ReferenceProfile.from_columns(_cols()).to_dict()
    assert d["correlation"]["method"] == "bin_normal_scores"
    del d["correlation"]["method"]
    old = ReferenceProfile.from_dict(d)
    assert old.correlation_method == "pearson"
    from stream.monitoring.drift import DriftMonitor

    assert "multivariate" not in DriftMonitor(old).snapshot()  # not comparable: the test is off


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    x = np.empty(n)
    e = rng.normal(size=n) * np.sqrt(1 - rho**2)
    x[0] = rng.normal()
    for i in range(1, n):
        x[i] = rho * x[i - 1] + e[i]
    return x


def test_dispersion_near_one_for_independent_rows_and_large_for_serial_dependence() -> None:
    rng = np.random.default_rng(3)
    iid = ReferenceProfile.from_columns({"x": rng.normal(size=40_000), "c": rng.choice(["a", "b"], 40_000).tolist()})
    for entry in iid.numeric["x"].dispersion + iid.categorical["c"].dispersion:
        assert 1.0 <= entry[1] < 1.5 and 1.0 <= entry[2] < 1.5
    assert [e[0] for e in iid.numeric["x"].dispersion] == [500.0, 2000.0, 8000.0]
    ar = ReferenceProfile.from_columns({"x": _ar1(rng, 40_000, 0.7)}).numeric["x"].dispersion
    assert ar[0][2] > 3.0  # block means of an AR(1) with rho 0.7 vary ~(1 + rho) / (1 - rho) times more
    assert dispersion_for(ar, 500) == (ar[0][1], ar[0][2]) and dispersion_for([], 500) == (1.0, 1.0)
    assert dispersion_for(ar, 100) == (ar[0][1], ar[0][2])
    assert dispersion_for(ar, 10_000)[1] == max(e[2] for e in ar)
