"""Rolling features against a plain per-event reference implementation."""

from __future__ import annotations

import math

import numpy as np

from stream.features import FeatureSet, Rolling, occurrence_rank


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
