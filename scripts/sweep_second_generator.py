"""False openings and drift delays on a second traffic generator, written apart from
:mod:`stream.examples.traffic` so the monitor is checked on choices its own generator does not
make (README, "Drift detection"):

- arrivals follow the day (``night``: the quietest hour's rate over the busiest's), so the
  reference has few night rows;
- the daily profile a sine or a business-hours step (``step``), shared by ``x`` and ``amount``
  (``amount_season``): correlated across the day, not within an hour;
- category shares +-``cat_swing`` with phases of their own, a Pareto tail of index ``alpha``;
- AR(1) ``phi`` and bursts of heavy entities (``burst_share``, levels ``ent_sd``);
- with ``--extra``: a 60-merchant Zipf category with daily shares, a daily Poisson count and a
  missing rate of ``y`` that follows the day (``miss``), ``y`` seasonal too (``all_season``).

The reference is a random sample of a long stream of the same process: an i.i.d. training set.

Usage::

    .venv/bin/python scripts/sweep_second_generator.py fa 0 6                # 8 kinds x seeds 0-5
    .venv/bin/python scripts/sweep_second_generator.py mean_shift 0 3        # x + 0.5 sd at event 100,000
    .venv/bin/python scripts/sweep_second_generator.py category_share 0 2    # "d" 10 % -> 25 %
    .venv/bin/python scripts/sweep_second_generator.py fa 0 4 --extra        # the extra features' kinds
"""
from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from scipy import signal, special

from stream.monitoring.drift import DriftMonitor
from stream.monitoring.profile import ReferenceProfile

DAY = 86_400.0
CATS = np.array(list("abcde"), dtype=object)
N, CHANGE = 200_000, 100_000
KINDS = {
    "base": {}, "step": {"step": True}, "night0.1": {"night": 0.1}, "night0.03": {"night": 0.03},
    "swing0.3_alpha1.2": {"cat_swing": 0.3, "alpha": 1.2}, "perday5k": {"per_day": 5_000},
    "perday100k": {"per_day": 100_000}, "noburst_phi0.95": {"burst_share": 0.0, "phi": 0.95},
    "burst0.3_ent0.8": {"burst_share": 0.3, "ent_sd": 0.8},
}
EXTRA_KINDS = {
    "plain": {}, "miss": {"miss": 0.05}, "all_season": {"all_season": True},
    "step_all": {"all_season": True, "step": True, "miss": 0.05},
    "perday100k_all": {"all_season": True, "per_day": 100_000},
    "night_all": {"all_season": True, "miss": 0.05, "night": 0.1},
}


def generate(n: int, seed: int, *, per_day: int = 20_000, night: float = 0.3, step: bool = False,
             season_sd: float = 0.5, cat_swing: float = 0.3, alpha: float = 1.5, phi: float = 0.9,
             burst_share: float = 0.2, n_ent: int = 40, ent_sd: float = 0.5, amount_season: float = 0.3,
             extra: bool = False, miss: float = 0.0, all_season: bool = False,
             drift: str | None = None, drift_at: int = CHANGE) -> dict[str, Any]:
    rng, pop = np.random.default_rng(seed), np.random.default_rng(99)
    a = (1 - night) / (1 + night)
    grid = np.linspace(0.0, DAY, 4_097)
    cum = grid - a * DAY / (2 * np.pi) * np.sin(2 * np.pi * grid / DAY)  # cumulative rate, low at midnight
    u = rng.random() * DAY + np.cumsum(rng.exponential(DAY / per_day, n))
    days, rest = np.divmod(u, DAY)
    t = 1.75e9 + days * DAY + np.interp(rest, cum, grid)
    ph = 2 * np.pi * (t % DAY) / DAY
    prof = np.tanh(4 * np.sin(ph - np.pi / 2)) if step else np.sin(ph)

    def ar() -> np.ndarray:
        e = rng.standard_normal(n) * np.sqrt(1 - phi * phi)
        e[0] = rng.standard_normal()
        return signal.lfilter([1.0], [1.0, -phi], e)

    zx, zy, za, zc = ar(), ar(), ar(), rng.standard_normal(n)
    who = np.full(n, -1)
    if burst_share > 0:
        gap = 110 * (1 - burst_share) / burst_share
        pos = int(rng.exponential(gap))
        while pos < n:
            run = int(rng.integers(20, 201))
            who[pos : pos + run] = rng.integers(0, n_ent)
            pos += run + int(rng.exponential(gap))
    lev, ecat = pop.normal(0, ent_sd, (n_ent, 2)), pop.choice(5, n_ent, p=[0.35, 0.25, 0.2, 0.1, 0.1])
    hb = who >= 0
    x, y = zx + season_sd * prof, 0.6 * zx + 0.8 * zy
    sp = np.sqrt(1 - ent_sd**2)
    x[hb] = lev[who[hb], 0] + sp * zx[hb] + season_sd * prof[hb]
    y[hb] = lev[who[hb], 1] + sp * zy[hb]
    amount = 10 * (1 - special.ndtr(za)) ** (-1 / alpha) * (1 + amount_season * prof)
    phases = pop.random(5)[None, :] * 2 * np.pi
    shares = np.array([0.35, 0.25, 0.2, 0.1, 0.1])[None, :] * (1 + cat_swing * np.sin(ph[:, None] + phases))
    after = np.arange(n) >= drift_at if drift else np.zeros(n, bool)
    if drift == "mean_shift":
        x = x + 0.5 * after
    elif drift == "category_share":
        rest_ = shares.sum(1) - shares[:, 3]
        shares[after] *= (0.75 / rest_[after])[:, None]
        shares[after, 3] = 0.25
    code = np.minimum((special.ndtr(zc)[:, None] > np.cumsum(shares / shares.sum(1, keepdims=True), 1)).sum(1), 4)
    code[hb] = ecat[who[hb]]
    entity = np.where(hb, np.char.add("h", who.astype(str)), np.char.add("u", rng.integers(0, 10**6, n).astype(str)))
    cols: dict[str, Any] = {"x": x, "y": y, "amount": amount, "c": CATS[code].tolist(), "ts": t, "entity": entity.tolist()}
    if extra:
        rx = np.random.default_rng([seed, 3])
        if all_season:
            cols["y"] = cols["y"] + 0.4 * np.sin(ph + 2.0)
        base = 1 / np.arange(1, 61) ** 1.1
        phases = np.random.default_rng(77).random(60) * 2 * np.pi
        hour = (t % DAY // 3600).astype(int)
        m = np.empty(n, dtype=object)
        names = np.array([f"m{i}" for i in range(60)], dtype=object)
        for h in range(24):
            idx = np.flatnonzero(hour == h)
            p = base * (1 + 0.3 * np.sin(2 * np.pi * (h + 0.5) / 24 + phases))
            m[idx] = names[rx.choice(60, idx.size, p=p / p.sum())]
        cols["m"] = m.tolist()
        cols["k"] = rx.poisson(2.0 * (1 + 0.3 * np.sin(ph))).astype(float)
        if miss:
            cols["y"] = np.where(rx.random(n) < miss * (1 + 0.8 * np.sin(ph)), np.nan, cols["y"])
    return cols


def features(extra: bool) -> dict[str, str]:
    out = {"x": "numeric", "y": "numeric", "amount": "numeric", "c": "categorical"}
    return {**out, "m": "categorical", "k": "numeric"} if extra else out


def run(task: tuple[str, int, dict[str, Any], str, bool]) -> tuple[str, list[tuple[int, tuple[str, ...], str]]]:
    label, seed, kind, mode, extra = task
    kw = {**kind, "extra": extra}
    cols = generate(N, seed, **kw, drift=None if mode == "fa" else mode)
    big = generate(1_000_000 if not extra else 600_000, seed + 5_000, **kw)
    rows = np.sort(np.random.default_rng(seed).choice(len(big["x"]), 20_000, replace=False))
    ref = {k: (v[rows] if isinstance(v, np.ndarray) else [v[i] for i in rows]) for k, v in big.items()}
    feats = features(extra)
    mon = DriftMonitor(ReferenceProfile.from_columns({k: ref[k] for k in feats}, feats, seed=0, event_ts=ref["ts"]))
    events = []
    for s in range(0, N, 10_000):
        events += mon.update_batch({k: cols[k][s : s + 10_000] for k in feats}, ts=cols["ts"][s : s + 10_000],
                                   entities=cols["entity"][s : s + 10_000])
    return label, [(e.index, e.features, e.evidence[0].get("test")) for e in events if e.kind != "drift_resolved"]


def main(argv: list[str]) -> int:
    extra = "--extra" in argv
    mode, lo, hi = [a for a in argv if a != "--extra"][:3]
    kinds = EXTRA_KINDS if extra else KINDS
    tasks = [(f"{k} s{s}", s, kw, mode, extra) for s in range(int(lo), int(hi)) for k, kw in kinds.items()]
    total = streams = 0
    with ProcessPoolExecutor(2) as pool:
        for label, opened in pool.map(run, tasks):
            if mode == "fa":
                total, streams = total + len(opened), streams + bool(opened)
                print(label, len(opened), opened[:3], flush=True)
                continue
            feature = "x" if mode == "mean_shift" else "c"
            hit = [o for o in opened if o[0] >= CHANGE and feature in o[1]]
            before = sum(o[0] < CHANGE for o in opened)
            print(label, "delay", hit[0][0] - CHANGE if hit else None, "false before", before, flush=True)
    if mode == "fa":
        print(f"streams with an opening: {streams} of {len(tasks)}; openings: {total} in {len(tasks) * N:,} events")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
