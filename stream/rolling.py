"""Per-entity rolling aggregates (:class:`~stream.features.Rolling`) computed for a batch, each
entity's events applied in event order: the same features and state, to the bit, however the
events are batched (scoring's micro-batches, training's one pass). One exception: where two NaNs
meet (a missing value in a window that never forgets), numpy keeps the first one's sign bit and
Python floats the second's; no one reads a NaN's sign (JSON writes null, a model any NaN as missing).

Most events go in rounds, each a vectorised step over entities seen at most once in it; the
events of a burst (one entity's many events in one batch), and those of a batch too small to
fill a round worth its numpy calls, go one by one.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np


class Rolling(Protocol):
    """What is read of a :class:`stream.features.Rolling` (not imported: features are defined
    there, computed here)."""

    @property
    def max_gap_s(self) -> float: ...
    @property
    def include_current(self) -> bool: ...
    @property
    def since_last(self) -> bool: ...
    @property
    def first_gap(self) -> float | None: ...
    @property
    def zscore(self) -> bool: ...
    @property
    def min_history(self) -> int: ...
    @property
    def zscore_clip(self) -> float | None: ...
    @property
    def zscore_spread(self) -> str: ...
    @property
    def zscore_span(self) -> float: ...
    @property
    def state_width(self) -> int: ...
    @property
    def _width(self) -> int: ...
    @property
    def _taus(self) -> np.ndarray: ...


def occurrence_rank(rows: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same value (0 for the first)."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.r_[0, np.flatnonzero(sorted_rows[1:] != sorted_rows[:-1]) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - group_start
    return rank


SMALL_BATCH = 64  # below this, checking for repeated entities in Python beats ranking them
TAIL_ENTITIES = 8  # a round of fewer entities costs more as numpy calls than event by event


def _rounds(rows: np.ndarray) -> list[Any]:
    """Selections of the batch that touch each entity at most once, in event order.

    Round r takes every entity's r-th event of the batch. A small batch of distinct entities
    (the usual low-rate case) is one round, taken whole, without ranking.

    >>> _rounds(np.array([4, 2, 7]))
    [slice(None, None, None)]
    >>> [r.tolist() for r in _rounds(np.array([4, 2, 4]))]
    [[0, 1], [2]]
    """
    if len(rows) <= SMALL_BATCH and len(set(rows.tolist())) == len(rows):
        return [slice(None)]
    rank = occurrence_rank(rows)
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


def rolling_features(spec: Rolling, x: np.ndarray, ts: np.ndarray, rows: np.ndarray,
                     state: np.ndarray, offset: int) -> np.ndarray:
    """``spec``'s features of a batch (values ``x`` at times ``ts``, event i's entity in row
    ``rows[i]`` of ``state``, its columns from ``offset``); ``state`` updated in place.

    >>> from stream.features import Rolling
    >>> spec = Rolling("x", windows={"1h": 3_600.0})
    >>> state = np.zeros((2, spec.state_width))
    >>> out = rolling_features(spec, np.array([1.0, 2.0, 4.0, 8.0]), np.array([0.0, 60.0, 60.0, 120.0]),
    ...                        np.array([0, 0, 1, 0]), state, 0)
    >>> out[:, :2].round(3).tolist()   # decayed count and mean; entity 0's third event counts three
    [[1.0, 1.0], [1.983, 1.504], [1.0, 4.0], [2.951, 3.706]]
    """
    out = np.empty((len(x), spec._width), dtype=np.float64)
    if len(x) == 0:
        return out
    taus = spec._taus
    # Events of one entity are applied in order: each round touches each entity at most once
    # and vectorises. The last rounds hold only the entities with many events in the batch (a
    # burst): their events go one by one instead (_rolling_tail), at a fraction of a round's cost.
    if len(x) < TAIL_ENTITIES:  # a few events (a quiet partition's batch): one by one beats even one round
        _rolling_tail(spec, x, ts, rows, state, offset, out, np.arange(len(x)))
        return out
    rounds = _rounds(rows)
    few = next((r for r, sel in enumerate(rounds) if not isinstance(sel, slice) and len(sel) < TAIL_ENTITIES),
               len(rounds))
    tail = np.sort(np.concatenate(rounds[few:])) if len(rounds) - few > 1 else None
    for sel in rounds if tail is None else rounds[:few]:
        ent = rows[sel]
        s = state[ent, offset : offset + spec.state_width]
        last_ts, n, mean, var = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
        xv, tv = x[sel], ts[sel]
        seen = n > 0
        gap = np.where(seen, np.clip(tv - last_ts, 0.0, spec.max_gap_s), spec.max_gap_s)
        decay = np.exp(-gap[:, None] / taus[None, :])  # 1 for a CUMULATIVE (infinite) window
        prior_counts, prior_sums = s[:, 4::2] * decay, s[:, 5::2] * decay
        counts, sums = prior_counts + 1.0, prior_sums + xv[:, None]
        shown_counts, shown_sums = (counts, sums) if spec.include_current else (prior_counts, prior_sums)
        col = 2 * len(taus)  # per window: its count, then its mean (0 with no events)
        out[sel, 0:col:2] = shown_counts
        out[sel, 1:col:2] = np.divide(shown_sums, shown_counts, out=np.zeros_like(shown_counts),
                                      where=shown_counts > 0)
        if spec.since_last:
            first = spec.max_gap_s if spec.first_gap is None else spec.first_gap
            out[sel, col] = np.where(seen, gap, first)
            col += 1
        if spec.zscore:
            # a spread estimated from a handful of events gives wild z-scores: 0 until there is
            # enough history (min_history events)
            std = np.sqrt(np.where(n >= max(spec.min_history, 2), var, 0.0))
            z = np.where(std > 0, (xv - mean) / np.where(std > 0, std, 1.0), 0.0)
            out[sel, col] = z if spec.zscore_clip is None else np.clip(z, -spec.zscore_clip, spec.zscore_clip)
        # Exponentially weighted mean and variance over about the last ``zscore_span`` events
        # (plain running moments until then): the z-score compares with recent behaviour and
        # its distribution settles after a few spans, whatever the entity's age. With
        # zscore_spread="all" the weight stays 1/n: the running mean and population variance.
        n_new = n + 1
        a = 1.0 / n_new if spec.zscore_spread == "all" else np.maximum(1.0 / n_new, 1.0 / spec.zscore_span)
        delta = xv - mean
        mean_new = mean + a * delta
        var_new = (1.0 - a) * (var + a * delta * delta)
        new = np.empty_like(s)
        new[:, 0] = np.where(seen, np.maximum(last_ts, tv), tv)
        new[:, 1], new[:, 2], new[:, 3] = n_new, mean_new, var_new
        new[:, 4::2], new[:, 5::2] = counts, sums
        state[ent, offset : offset + spec.state_width] = new
    if tail is not None:  # after the rounds: its entities' earlier events first
        _rolling_tail(spec, x, ts, rows, state, offset, out, tail)
    return out


def _maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats: NaN if either is, the second on a tie (0.0 and -0.0)."""
    return a if a != a or a > b else b


def _clip(a: float, lo: float, hi: float) -> float:
    """``np.clip`` of a float, to the bit and at a fraction of its cost on a scalar: NaN stays NaN
    and a tie keeps ``a`` (-0.0 clipped at 0.0 stays -0.0).

    >>> [_clip(a, 0.0, 5.0) for a in (-1.0, 2.0, 7.0, -0.0)], math.isnan(_clip(math.nan, 0.0, 5.0))
    ([0.0, 2.0, 5.0, -0.0], True)
    >>> all(np.array_equal(np.signbit(_clip(a, 0.0, 5.0)), np.signbit(np.clip(np.array([a]), 0.0, 5.0)[0]))
    ...     for a in (-0.0, 0.0, -1.0, 5.0, 9.0))
    True
    """
    v = lo if a < lo else a
    return hi if v > hi else v


def _rolling_tail(spec: Rolling, x: np.ndarray, ts: np.ndarray, rows: np.ndarray, state: np.ndarray,
                  offset: int, out: np.ndarray, idx: np.ndarray) -> None:
    """Events ``idx`` (in event order; each one's entity past its earlier events of the batch)
    applied one by one: the same arithmetic as a round of :func:`rolling_features`, operation for
    operation, so a burst gives the very features and state it gave in rounds.

    (A batch whose 500 events held 200 of one user took 55 µs per event in rounds, 2.9 without
    the burst.)"""
    taus = spec._taus
    width, w = spec.state_width, len(taus)
    block = state[:, offset : offset + width]
    # gaps first, each from its entity's previous event: their decays in one numpy call, as a
    # round computes them
    gaps = np.empty(len(idx))
    seen = np.empty(len(idx), dtype=bool)
    last: dict[int, tuple[float, float]] = {}  # entity -> its last time and event count so far
    events = list(zip(idx.tolist(), rows[idx].tolist(), strict=True))  # (event, its entity's row)
    for k, (i, e) in enumerate(events):
        lt, n = last.get(e) or (float(block[e, 0]), float(block[e, 1]))
        tv, was = float(ts[i]), n > 0
        gaps[k] = _clip(tv - lt, 0.0, spec.max_gap_s) if was else spec.max_gap_s
        seen[k] = was
        last[e] = (_maximum(lt, tv) if was else tv, n + 1)
    decays = np.exp(-gaps[:, None] / taus[None, :]).tolist()
    first = spec.max_gap_s if spec.first_gap is None else spec.first_gap
    least = max(spec.min_history, 2)
    clip, span, all_events = spec.zscore_clip, spec.zscore_span, spec.zscore_spread == "all"
    cur: dict[int, list[float]] = {}
    for k, (i, e) in enumerate(events):
        s = cur.get(e) or block[e].tolist()
        last_ts, n, mean, var = s[0], s[1], s[2], s[3]
        xv, tv, gap, decay = float(x[i]), float(ts[i]), float(gaps[k]), decays[k]
        prior_counts = [s[4 + 2 * j] * decay[j] for j in range(w)]
        prior_sums = [s[5 + 2 * j] * decay[j] for j in range(w)]
        counts = [c + 1.0 for c in prior_counts]
        sums = [v + xv for v in prior_sums]
        shown_counts, shown_sums = (counts, sums) if spec.include_current else (prior_counts, prior_sums)
        row = out[i]
        for j in range(w):
            row[2 * j] = shown_counts[j]
            row[2 * j + 1] = shown_sums[j] / shown_counts[j] if shown_counts[j] > 0 else 0.0
        col = 2 * w
        if spec.since_last:
            row[col] = gap if seen[k] else first
            col += 1
        if spec.zscore:
            v = var if n >= least else 0.0
            std = math.sqrt(v) if v >= 0.0 else math.nan  # np.sqrt's NaN, not an exception
            z = (xv - mean) / std if std > 0 else 0.0
            row[col] = z if clip is None else min(max(z, -clip), clip)
        n_new = n + 1
        inv = 1.0 / n_new if n_new else math.inf  # numpy's 1 / 0 (a corrupt count), not an exception
        a = inv if all_events else _maximum(inv, 1.0 / span)
        delta = xv - mean
        new = [_maximum(last_ts, tv) if seen[k] else tv, n_new, mean + a * delta, (1.0 - a) * (var + a * delta * delta)]
        for j in range(w):
            new += [counts[j], sums[j]]
        cur[e] = new
    for e, new in cur.items():
        block[e] = new
