from __future__ import annotations

import json

import numpy as np
import pytest

from stream.profile import ProfileError, ReferenceProfile


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
    k = prof.numeric["k"]  # discrete: ties collapse the quantile edges
    assert k.edges == [0.0, 1.0, 2.0] and sum(k.counts) == 2000 and k.counts[0] == 0


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
    assert prof.correlation[0][1] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-9)
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
