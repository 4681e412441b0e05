"""Offline throughput + equivalence harness for the drift monitor (no broker).

Usage (from the checkout whose `stream` you want to measure):
    .venv/bin/python scripts/bench_monitor.py time [--rows 200000] [--repeat 3] [--batch 500]
    .venv/bin/python scripts/bench_monitor.py dump OUT.json     # events + final statistics on fixed seeded inputs
    .venv/bin/python scripts/bench_monitor.py profile [--rows 200000]
    .venv/bin/python scripts/bench_monitor.py compare OLD.json NEW.json   # exit 1 on any difference > 1e-9 (relative)

Equivalence check (a speed-up must not change a decision): dump from a checkout of the old
commit (``git archive OLD stream | tar -x -C /tmp/base``, run there) and from this one, then
compare. The dump covers a steady 200k-row run (batches of 2,000),
mixed batch sizes, a drifted stretch (events fire), 3 % / 2 % missing values, and row-by-row update().

Mirrors stream.tools.bench_realistic.monitor_throughput: demo (payments) domain's monitored
columns plus a score, reference profile from the first half of 60k simulated events, DriftMonitor
with default settings, micro-batches of 2,000 rows (the dump also uses mixed batch sizes and a
drifted stretch so that events fire)."""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.getcwd())  # `stream` from the directory run in, not the venv's editable install

try:
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
except ImportError:
    pass

from stream.monitoring.drift import DriftMonitor
from stream.tools.bench_realistic import demo_monitor_input


def setup(n: int = 60_000, seed: int = 0):
    return demo_monitor_input(n, seed)  # the input make bench-drift times


def with_missing(live, ts, seed: int = 1):
    """The same columns with ~3 % missing numeric values (NaN) and ~2 % missing categories (None)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in live.items():
        if v.dtype.kind == "f":
            v = v.copy()
            v[rng.random(len(v)) < 0.03] = np.nan
        else:
            v = v.copy()
            v[rng.random(len(v)) < 0.02] = None
        out[k] = v
    return out


def run_rows(profile, live, ts, rows: int):
    """Row by row (DriftMonitor.update), for the equivalence dump."""
    mon = DriftMonitor(profile, model_name="m", model_version="1")
    events = []
    for i in range(rows):
        events += mon.update({k: v[i] for k, v in live.items()}, ts=float(ts[i]))
    return mon, events, 0.0


def run(profile, live, ts, rows: int, batch: int = 2_000, sizes=None, drift_from=None):
    mon = DriftMonitor(profile, model_name="m", model_version="1")
    n = len(ts)
    done, events, bi = 0, [], 0
    c0 = time.process_time()
    while done < rows:
        b = sizes[bi % len(sizes)] if sizes else batch
        bi += 1
        s = done % (n - 2_000)
        b = min(b, n - s)
        chunk = {k: v[s: s + b] for k, v in live.items()}
        if drift_from is not None and done >= drift_from:
            chunk = {k: (v * 1.5 + 0.3 if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
                     for k, v in chunk.items()}
        events += mon.update_batch(chunk, ts=ts[s: s + b] + 86_400.0 * (done // (n - 2_000)))
        done += b
    return mon, events, time.process_time() - c0


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def dump(out: str) -> None:
    profile, live, ts = setup()
    res = {}
    miss = with_missing(live, ts)
    for name, mon, events in [("missing", *run(profile, miss, ts, rows=120_000, sizes=[2_000, 900, 1_100])[:2]),
                              ("rows", *run_rows(profile, miss, ts, rows=25_000)[:2])]:
        res[name] = {"events": [e.to_dict() for e in events], "snapshot": _clean(mon.snapshot()),
                     "summary": _clean(mon.summary()), "rows_seen": mon.rows_seen, "lr": _clean(mon._lr),
                     "slow": _clean(mon._slow), "tot": _clean(mon._tot)}
        print(name, len(events), "events", file=sys.stderr)
    for name, kw in {"steady2000": dict(rows=200_000), "mixed": dict(rows=150_000, sizes=[300, 1_700, 777, 2_000, 1_000, 499]),
                     "drift": dict(rows=150_000, sizes=[2_000, 650, 1_350], drift_from=90_000)}.items():
        mon, events, _ = run(profile, live, ts, **kw)
        res[name] = {"events": [e.to_dict() for e in events], "snapshot": _clean(mon.snapshot()),
                     "summary": _clean(mon.summary()), "rows_seen": mon.rows_seen, "state_size": mon.state_size(),
                     "lr": _clean(mon._lr), "slow": _clean(mon._slow), "tot": _clean(mon._tot)}
        print(name, len(events), "events", file=sys.stderr)
    with open(out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True, default=str)


def compare(old: str, new: str) -> int:
    import math
    a, b = (json.load(open(f)) for f in (old, new))
    bad, n, worst = [], 0, 0.0

    def walk(x, y, path):
        nonlocal n, worst
        if isinstance(x, dict):
            if set(x) != set(y):
                bad.append((path, "keys", set(x) ^ set(y)))
                return
            for k in x:
                walk(x[k], y[k], f"{path}/{k}")
        elif isinstance(x, list):
            if len(x) != len(y):
                bad.append((path, "len", len(x), len(y)))
                return
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif isinstance(x, float) or isinstance(y, float):
            n += 1
            if x is None or y is None:
                bad.append((path, x, y))
            elif not (math.isnan(x) and math.isnan(y)):
                d = abs(x - y) / max(1.0, abs(x)) if math.isfinite(x) and math.isfinite(y) else (0 if x == y else math.inf)
                worst = max(worst, d)
                if d > 1e-9:
                    bad.append((path, x, y))
        elif x != y:
            bad.append((path, x, y))

    walk(a, b, "")
    print(f"{n} floats compared, max relative difference {worst:.3g}, {len(bad)} mismatches")
    for m in bad[:20]:
        print(m)
    return 1 if bad else 0


def main() -> None:
    import stream
    print('stream from', stream.__file__, file=sys.stderr)
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["time", "dump", "profile", "compare"])
    ap.add_argument("out", nargs="?")
    ap.add_argument("new", nargs="?")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2_000)
    a = ap.parse_args()
    if a.mode == "dump":
        return dump(a.out)
    if a.mode == "compare":
        sys.exit(compare(a.out, a.new))
    profile, live, ts = setup()
    run(profile, live, ts, 20_000)  # warm caches / imports
    if a.mode == "profile":
        pr = cProfile.Profile()
        pr.enable()
        run(profile, live, ts, a.rows, a.batch)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(25)
        pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
        return
    rates = []
    for _ in range(a.repeat):
        _, ev, cpu = run(profile, live, ts, a.rows, a.batch)
        rates.append(a.rows / cpu)
        print(f"{a.rows / cpu:,.0f} rows/cpu-s ({cpu:.2f} s cpu, {len(ev)} events)")
    print(f"best {max(rates):,.0f} rows/cpu-s (batch {a.batch})")


if __name__ == "__main__":
    main()
