"""Rolling features against a plain per-event reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.features import FeatureSet, Rolling
from stream.rolling import occurrence_rank


def reference_rolling(events, taus, max_gap):
    """Straightforward per-event loop: what the vectorised code must equal."""
    state, out = {}, []
    for key, x, t in events:
        s = state.get(key)
        if s is None:
            gap, counts, sums, n, mean, m2, last = max_gap, [0.0] * len(taus), [0.0] * len(taus), 0, 0.0, 0.0, t
        else:
            counts, sums, n, mean, m2, last = s
            gap = min(max(t - last, 0.0), max_gap)
        row = []
        counts = [c * math.exp(-gap / tau) + 1 for c, tau in zip(counts, taus)]
        sums = [sm * math.exp(-gap / tau) + x for sm, tau in zip(sums, taus)]
        for c, sm in zip(counts, sums):
            row += [c, sm / c]
        std = math.sqrt(m2) if n >= 5 else 0.0
        row += [gap, max(-50, min(50, (x - mean) / std)) if std > 0 else 0.0]
        n += 1
        a = max(1 / n, 1 / 10)
        d = x - mean
        mean += a * d
        m2 = (1 - a) * (m2 + a * d * d)  # here: the exponentially weighted variance
        state[key] = (counts, sums, n, mean, m2, max(last, t))
        out.append(row)
    return np.array(out)


def test_vectorised_rolling_features_equal_a_per_event_loop_in_any_batching():
    rng = np.random.default_rng(0)
    n = 3_000
    keys = rng.integers(0, 40, n).astype(str).astype(object)
    x = rng.lognormal(3, 1, n)
    ts = 1e9 + np.cumsum(rng.exponential(300, n))
    ts[::97] -= 1_000  # some out-of-order events
    fs = FeatureSet(time_field="ts", rolling=(Rolling("x", windows={"1h": 3600.0, "1d": 86400.0}),))
    expected = reference_rolling(list(zip(keys, x, ts)), [3600.0, 86400.0], 30 * 86400.0)

    for batch in (n, 1, 7, 500):
        state, index = fs.new_state(40), {}
        rows = np.array([index.setdefault(k, len(index)) for k in keys])
        got = np.concatenate([
            fs.compute({"x": x[i:i + batch], "ts": ts[i:i + batch]}, rows[i:i + batch], state)
            for i in range(0, n, batch)])
        np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-5, atol=1e-4)


def test_occurrence_rank_counts_earlier_equal_values():
    assert occurrence_rank(np.array([5, 3, 5, 5, 3, 9])).tolist() == [0, 0, 1, 2, 1, 0]


def reference_rolling_options(events, taus, max_gap, *, include_current, spread, first_gap, clip, span=10,
                              min_history=5):
    """The per-event loop again, for the leakage-safe, all-history and sentinel options."""
    state, out = {}, []
    for key, x, t in events:
        s = state.get(key)
        if s is None:
            gap, counts, sums, n, mean, var, last = max_gap, [0.0] * len(taus), [0.0] * len(taus), 0, 0.0, 0.0, t
        else:
            counts, sums, n, mean, var, last = s
            gap = min(max(t - last, 0.0), max_gap)
        prior_c = [c * math.exp(-gap / tau) for c, tau in zip(counts, taus)]
        prior_s = [sm * math.exp(-gap / tau) for sm, tau in zip(sums, taus)]
        counts, sums = [c + 1 for c in prior_c], [sm + x for sm in prior_s]
        row = []
        for c, sm in (zip(counts, sums) if include_current else zip(prior_c, prior_s)):
            row += [c, sm / c if c > 0 else 0.0]
        row.append(gap if s is not None else (max_gap if first_gap is None else first_gap))
        std = math.sqrt(var) if n >= min_history else 0.0
        z = (x - mean) / std if std > 0 else 0.0
        row.append(z if clip is None else max(-clip, min(clip, z)))
        n += 1
        a = 1 / n if spread == "all" else max(1 / n, 1 / span)
        d = x - mean
        mean += a * d
        var = (1 - a) * (var + a * d * d)
        state[key] = (counts, sums, n, mean, var, max(last, t))
        out.append(row)
    return np.array(out)


def test_feature_options_equal_a_per_event_loop_in_any_batching():
    """Prior-events-only windows, a cumulative window, all-history z-score unclipped, a first-gap sentinel."""
    from stream.features import CUMULATIVE

    rng = np.random.default_rng(3)
    n = 2_000
    keys = rng.integers(0, 30, n).astype(str).astype(object)
    x = rng.lognormal(3, 1, n)
    x[::50] *= 100  # outliers: an unclipped z-score goes past 50
    ts = 1e9 + np.cumsum(rng.exponential(300, n))
    spec = Rolling("x", windows={"1h": 3600.0, "all": CUMULATIVE}, include_current=False, zscore_spread="all",
                   first_gap=-1.0, zscore_clip=None)
    fs = FeatureSet(time_field="ts", rolling=(spec,))
    expected = reference_rolling_options(list(zip(keys, x, ts)), [3600.0, math.inf], 30 * 86400.0,
                                         include_current=False, spread="all", first_gap=-1.0, clip=None)
    assert np.abs(expected[:, -1]).max() > 50
    for batch in (n, 1, 13):
        state, index = fs.new_state(30), {}
        rows = np.array([index.setdefault(k, len(index)) for k in keys])
        got = np.concatenate([fs.compute({"x": x[i:i + batch], "ts": ts[i:i + batch]}, rows[i:i + batch], state)
                              for i in range(0, n, batch)])
        np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-5, atol=1e-3)
    first = np.unique(keys, return_index=True)[1]
    assert (got[first, 4] == -1.0).all() and (got[first, 0] == 0).all()  # no prior events: count 0, sentinel gap
    # the cumulative window counts every prior event of the entity
    np.testing.assert_array_equal(got[:, 2], [np.sum(keys[:i] == k) for i, k in enumerate(keys)])


def test_defaults_keep_todays_features():
    """The new options default to the existing behaviour: the per-event loop of the first test."""
    rng = np.random.default_rng(4)
    keys = rng.integers(0, 10, 500).astype(str).astype(object)
    x, ts = rng.lognormal(3, 1, 500), 1e9 + np.cumsum(rng.exponential(300, 500))
    fs = FeatureSet(time_field="ts", rolling=(Rolling("x", windows={"1h": 3600.0}),))
    expected = reference_rolling_options(list(zip(keys, x, ts)), [3600.0], 30 * 86400.0, include_current=True,
                                         spread="recent", first_gap=None, clip=50.0)
    np.testing.assert_allclose(fs.compute_offline({"x": x, "ts": ts}, keys), expected.astype(np.float32),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(expected, reference_rolling(list(zip(keys, x, ts)), [3600.0], 30 * 86400.0))


def test_a_category_index_is_monitored_as_a_category():
    from stream import CategoryIndex, Domain, Field, Schema

    schema = Schema("s", fields=(Field("id", "string"), Field("user", "string"), Field("ts", "timestamp"),
                                 Field("channel", "category", allowed=("web", "pos", "app"))),
                    id_field="id", entity_field="user", time_field="ts")
    domain = Domain("d", schema, FeatureSet(time_field="ts", indexed=(CategoryIndex("channel", ("web", "pos")),)))
    events = [{"id": str(i), "user": "u", "ts": i, "channel": c} for i, c in enumerate(["web", "app", "pos"])]
    X = domain.offline_features(events)
    assert domain.features.columns == ["channel_index"] and X[:, 0].tolist() == [0.0, 2.0, 1.0]
    assert domain.features.monitored == {"channel": "categorical"}
    assert domain.monitored_columns(domain.columns(events), X)["channel"].tolist() == ["web", "app", "pos"]


def test_a_bursting_entity_gets_the_same_features_to_the_bit_in_any_batching():
    """Heavy entities' runs of 20-300 events inside batches (their later events go one by one,
    the rest in rounds) give exactly the features and state of one event at a time, with
    missing values and out-of-order events among them."""
    from stream.features import CUMULATIVE

    rng = np.random.default_rng(11)
    n = 4_000
    rows = rng.integers(0, 200, n)
    at = 0
    while at < n:  # bursts of one heavy entity, 20 % of the traffic
        run = int(rng.integers(20, 301))
        rows[at:at + run] = rng.integers(200, 205)
        at += run + int(rng.exponential(800))
    x = rng.lognormal(3, 1, n)
    x[rng.random(n) < 0.03] = np.nan
    ts = 1e9 + np.cumsum(rng.exponential(20, n))
    ts[::53] -= 500
    for spec in (Rolling("x", windows={"1h": 3600.0, "1d": 86400.0}),
                 Rolling("x", windows={"5m": 300.0, "all": CUMULATIVE}, include_current=False,
                         zscore_spread="all", first_gap=-1.0, zscore_clip=None, min_history=3)):
        fs = FeatureSet(time_field="ts", rolling=(spec,))
        outs, states = [], []
        for batch in (1, 700, n):
            state = fs.new_state(205)
            outs.append(np.concatenate([fs.compute({"x": x[i:i + batch], "ts": ts[i:i + batch]}, rows[i:i + batch],
                                                   state) for i in range(0, n, batch)]))
            states.append(state)
        for got, state in zip(outs[1:], states[1:]):  # bits: NaN's and zero's signs included
            np.testing.assert_array_equal(got.view(np.uint32), outs[0].view(np.uint32))
            np.testing.assert_array_equal(state.view(np.uint64), states[0].view(np.uint64))


def test_a_rolling_spec_refuses_a_max_gap_that_is_not_a_positive_number():
    from stream.errors import DomainError
    from stream.features import Rolling

    for bad in (float("nan"), 0.0, -1.0):
        with pytest.raises(DomainError, match="max_gap_s must be positive seconds"):
            Rolling("amount", windows={"1h": 3_600.0}, max_gap_s=bad)
    assert Rolling("amount", windows={"1h": 3_600.0}, max_gap_s=float("inf")).max_gap_s == float("inf")
