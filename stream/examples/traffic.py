"""Realistic *stationary* traffic for drift monitors, and drifts injected into it.

Production streams are not i.i.d. even when nothing changes: means follow the day,
rolling features are autocorrelated, a heavy entity sends runs of events with its own
level and category, amounts have a Pareto tail. A training set (the monitor's
reference) is an i.i.d. sample of that same process, so every alarm on these streams
is a false one. ``mlstream simulate --scenario seasonal|autocorrelated|bursty|heavy_tailed|mixed``
writes them as JSON lines; :func:`generate` is the same in Python.

Columns: ``x`` (numeric), ``y`` (numeric, correlated 0.6 with ``x`` through their
innovations), ``amount`` (numeric, lognormal or Pareto), ``c`` (categorical, 5
categories, ``"d"`` holds 10 %), plus ``ts`` (seconds), ``entity`` and ``error``
(the model's 0/1 error, 10 %) which are not features. Scenarios switch phenomena on:

* ``seasonal``: ``x``'s mean moves +-``season_sd`` sd over 24 h, category shares and the
  error rate +-25 % (phases differ per category); with ``amount_season`` amounts follow the day
  too (x (1 +- amount_season), in phase with ``x``): features correlated across the day, not within
  an hour; with ``night_rate`` below 1 events arrive at that fraction of the busiest hour's rate
  in the quietest (quiet nights: an hour's rows differ, and the reference has few night rows);
* ``autocorrelated``: AR(1) with coefficient ``phi`` on the numeric features (marginals unchanged);
* ``bursty``: ``burst_share`` of events come in runs of 20-200 from one heavy entity
  (``entity`` ``h0``, ``h1``, ...), with that entity's own level of ``x`` and ``y`` (entity
  levels spread ``entity_sd`` sd) and its own category; the other events come from a million
  users (``u...``);
* ``heavy_tailed``: ``amount`` is Pareto (tail index 1.5);
* ``mixed``: all of them; ``iid``: none.

Drifts (``drift=``, from event ``drift_at`` on): ``mean_shift`` (``x`` + 0.5 sd),
``category_share`` (``"d"`` 10 % -> 25 %), ``error_rate`` (10 % -> 20 %).

Examples
--------
>>> cols = generate("mixed", 50_000, seed=3)
>>> sorted(cols), len(cols["x"])
(['amount', 'c', 'entity', 'error', 'ts', 'x', 'y'], 50000)
>>> ref = generate("mixed", 20_000, seed=4, iid=True)   # a training set: i.i.d. rows of the same process
>>> bool(abs(np.mean(cols["x"]) - np.mean(ref["x"])) < 0.2)
True
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["DRIFTS", "FEATURES", "SCENARIOS", "generate", "random_process", "write_jsonl"]

SCENARIOS = {
    "iid": (),
    "seasonal": ("seasonal",),
    "autocorrelated": ("ar",),
    "bursty": ("bursts",),
    "heavy_tailed": ("pareto",),
    "mixed": ("seasonal", "ar", "bursts", "pareto"),
}
DRIFTS = ("mean_shift", "category_share", "error_rate")
FEATURES = {"x": "numeric", "y": "numeric", "amount": "numeric", "c": "categorical"}
CATS = np.array(["a", "b", "c", "d", "e"], dtype=object)
P_CATS = np.array([0.35, 0.25, 0.2, 0.1, 0.1])
START_TS = 1_750_000_000.0
DAY = 86_400.0
ERROR_RATE = 0.10
USERS = 1_000_000


def _ar(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    from scipy import signal  # here: the command line lists the scenarios without scipy

    """Stationary AR(1) with unit marginal variance (started in its stationary law)."""
    if phi <= 0:
        return rng.standard_normal(n)
    e = rng.standard_normal(n) * np.sqrt(1 - phi * phi)
    e[0] = rng.standard_normal()
    return signal.lfilter([1.0], [1.0, -phi], e)


def _clock(u: np.ndarray, night_rate: float) -> np.ndarray:
    """Seconds since the start for events evenly spread in ``u`` (seconds at the day's average
    rate) when the rate follows the day from ``night_rate`` times the busiest hour's at midnight:
    the inverse of the cumulative rate ``t - a DAY / (2 pi) sin(2 pi t / DAY)``.

    >>> _clock(np.array([0.0, 43_200.0]), 1.0).tolist(), _clock(np.array([43_200.0]), 0.1).tolist()
    ([0.0, 43200.0], [43200.0])
    """
    if night_rate >= 1.0:
        return u
    a = (1.0 - night_rate) / (1.0 + night_rate)
    grid = np.linspace(0.0, DAY, 4_097)
    cum = grid - a * DAY / (2 * np.pi) * np.sin(2 * np.pi * grid / DAY)
    days, rest = np.divmod(u, DAY)
    return days * DAY + np.interp(rest, cum, grid)


def _bursts(rng: np.random.Generator, n: int, share: float, n_entities: int, iid: bool) -> np.ndarray:
    """Heavy-entity id per event (-1: ordinary traffic), in runs of 20-200 events."""
    who = np.full(n, -1)
    if share <= 0:
        return who
    if iid:  # an i.i.d. row of the process: in some burst with probability ``share``
        hit = rng.random(n) < share
        who[hit] = rng.integers(0, n_entities, hit.sum())
        return who
    mean_run = 110.0
    gap = mean_run * (1 - share) / share  # mean ordinary events between two runs
    pos = int(rng.exponential(gap))
    while pos < n:
        run = int(rng.integers(20, 201))
        who[pos : pos + run] = rng.integers(0, n_entities)
        pos += run + int(rng.exponential(gap))
    return who


def generate(scenario: str, n: int, seed: int = 0, *, iid: bool = False, drift: str | None = None,
             drift_at: int | None = None, events_per_day: int = 20_000, phi: float = 0.9,
             season_sd: float = 0.5, burst_share: float = 0.2, n_entities: int = 40, entity_sd: float = 0.5,
             population_seed: int = 0, amount_season: float = 0.0, night_rate: float = 1.0) -> dict[str, Any]:
    """``n`` events of ``scenario`` (see module docstring); ``iid=True`` gives independent rows
    of the same process at random times (a training set)."""
    from scipy import special

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
    if drift is not None and drift not in DRIFTS:
        raise ValueError(f"unknown drift {drift!r}; choose one of {DRIFTS}")
    if not 0.0 <= night_rate <= 1.0:
        raise ValueError(f"night_rate {night_rate!r}: the quietest hour's rate over the busiest's, in [0, 1]")
    on = set(SCENARIOS[scenario])
    rng = np.random.default_rng([seed, 7])
    # heavy entities are one fixed population (their levels and categories), like users
    pop = np.random.default_rng([population_seed, 11])
    ent_level, ent_cat = pop.normal(0.0, entity_sd, (n_entities, 2)), pop.choice(len(CATS), n_entities, p=P_CATS)
    ts: np.ndarray
    if iid:
        ts = START_TS + _clock(rng.random(n) * 28 * DAY, night_rate)
    else:
        ts = START_TS + _clock(np.arange(n) * (DAY / events_per_day), night_rate)
    phase = 2 * np.pi * ((ts - START_TS) % DAY) / DAY
    p = phi if "ar" in on and not iid else 0.0
    zx, zy, za = (_ar(rng, n, p) for _ in range(3))  # AR(1) on the numeric features only
    zc = rng.standard_normal(n)
    who = _bursts(rng, n, burst_share if "bursts" in on else 0.0, n_entities, iid)
    in_burst = who >= 0
    # ``x``/``y``: entity level inside bursts, unit-variance noise around it
    x, y = zx.copy(), 0.6 * zx + 0.8 * zy
    spread = np.sqrt(max(1.0 - entity_sd**2, 0.0))  # an entity's level plus its own noise: unit variance
    x[in_burst] = ent_level[who[in_burst], 0] + spread * zx[in_burst]
    y[in_burst] = ent_level[who[in_burst], 1] + spread * zy[in_burst]
    if "seasonal" in on:
        x = x + season_sd * np.sin(phase)
    u = special.ndtr(za)  # amount through a copula: marginal fixed, dependence from ``za``
    amount = 10.0 * (1 - u) ** (-1 / 1.5) if "pareto" in on else np.exp(3.4 + 0.8 * za)
    if "seasonal" in on and amount_season:
        amount = amount * (1 + amount_season * np.sin(phase))
    # category: from a latent uniform, shares follow the day
    shares = np.broadcast_to(P_CATS, (n, len(CATS))).copy()
    if "seasonal" in on:
        shares *= 1 + 0.25 * np.sin(phase[:, None] + 2 * np.pi * np.arange(len(CATS)) / len(CATS))
    err_p = np.full(n, ERROR_RATE) * ((1 + 0.25 * np.sin(phase + 1.0)) if "seasonal" in on else 1.0)
    after = np.zeros(n, dtype=bool) if drift is None or drift_at is None else np.arange(n) >= drift_at
    if drift == "mean_shift":
        x = x + 0.5 * after
    elif drift == "category_share":  # "d" 10% -> 25%, the others scaled down alike
        d = 3
        rest = shares.sum(axis=1) - shares[:, d]
        shares[after] *= (0.75 / rest[after])[:, None]
        shares[after, d] = 0.25
    elif drift == "error_rate":
        err_p = np.where(after, 2 * err_p, err_p)
    cum = np.cumsum(shares / shares.sum(axis=1, keepdims=True), axis=1)
    code = np.minimum((special.ndtr(zc)[:, None] > cum).sum(axis=1), len(CATS) - 1)
    code[in_burst] = ent_cat[who[in_burst]]
    error = (rng.random(n) < err_p).astype(float)
    # ordinary events come from a large population of users, a few events each (drawn last: the
    # other columns stay those of earlier releases)
    user = np.char.add("u", rng.integers(0, USERS, n).astype(str))
    entity = np.where(in_burst, np.char.add("h", who.astype(str)), user).tolist()
    return {"x": x, "y": y, "amount": amount, "c": CATS[code].tolist(), "ts": ts, "entity": entity, "error": error}


def random_process(rng: np.random.Generator) -> dict[str, Any]:
    """Keyword arguments of :func:`generate` drawn over the ranges the sweeps use (events per day
    10k-100k, AR 0.8-0.95, daily swing 0.3-0.7 sd, bursts 10-30 % from 10-80 entities of level
    sd 0.3-0.8): a process the method was not tuned on.

    >>> sorted(random_process(np.random.default_rng(0)))
    ['burst_share', 'entity_sd', 'events_per_day', 'n_entities', 'phi', 'population_seed', 'season_sd']
    """
    return dict(events_per_day=int(rng.integers(10_000, 100_000)), phi=float(rng.uniform(0.8, 0.95)),
                season_sd=float(rng.uniform(0.3, 0.7)), burst_share=float(rng.uniform(0.1, 0.3)),
                n_entities=int(rng.integers(10, 80)), entity_sd=float(rng.uniform(0.3, 0.8)),
                population_seed=int(rng.integers(0, 1000)))


def write_jsonl(scenario: str, n: int, path: str | None = None, **kwargs: Any) -> int:
    """Write :func:`generate`'s events as JSON lines (features, ``ts``, ``entity``, ``error``) to
    ``path`` or stdout; replay them with ``mlstream replay --time-field ts --schema ...``. Returns 0."""
    import orjson

    cols = generate(scenario, n, **kwargs)
    keys = list(cols)
    out = open(path, "wb") if path else sys.stdout.buffer
    try:
        for start in range(0, n, 10_000):
            part = {k: (cols[k][start : start + 10_000].tolist() if isinstance(cols[k], np.ndarray)
                        else cols[k][start : start + 10_000]) for k in keys}
            out.write(b"".join(orjson.dumps(dict(zip(keys, row, strict=True))) + b"\n"
                               for row in zip(*(part[k] for k in keys), strict=True)))
    finally:
        if path:
            out.close()
        else:
            out.flush()
    return 0
