"""Drift benchmark: ``mlstream bench-drift`` / ``make bench-drift``.

Two halves in one run: the i.i.d. streams below (known change points, stationary i.i.d.
streams), and realistic traffic (:mod:`stream.tools.bench_realistic`: seasonal,
autocorrelated, bursty, heavy-tailed and mixed stationary streams, and three drifts inside
the mixed one), plus the monitor's throughput on the demo domain.

Seeded synthetic streams with known change points go through the same monitor
code as the pipeline (:meth:`stream.monitoring.drift.DriftMonitor.update_batch`,
:meth:`stream.monitoring.labels.PerformanceMonitor.update`) and, side by side, through
river's ``ADWIN``, ``KSWIN`` and ``PageHinkley`` at their default parameters and
a windowed Evidently-style baseline (KS for numeric, chi-square for categorical
features, p < 0.05, tumbling windows of 1,000 events against the reference).

The streams themselves are :mod:`stream.tools.bench_drift_streams`. River detectors are univariate: they watch ``x`` (data streams
where ``x`` changes, and the stationary streams) or the 0/1 error indicator
(label streams). Per stream the table gives the detection delay in events
after the change (median over the seeds of a change stream; ``miss`` if none
within ``MAX_DELAY`` events; ``k/n`` when only k of n runs detected it), and
false alarms (alarms before the change, or any alarm on a stationary stream).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from stream.monitoring import drift_stats as ds
from stream.monitoring.drift import DriftMonitor, DriftSettings
from stream.monitoring.labels import PerformanceMonitor
from stream.monitoring.profile import ReferenceProfile
from stream.tools import bench_concept as bc
from stream.tools import bench_realistic as br
from stream.tools.bench_drift_streams import STREAMS, make_stream, reference_rows

__all__ = ["STREAMS", "main", "make_stream"]

WINDOW = 1000  # Evidently-style tumbling window
MAX_DELAY = 10_000
DETECTORS = ("mlstream", "ADWIN", "KSWIN", "PageHinkley", "windowed-KS/chi2")
# calibration check: the same monitor with a 1,000x shorter target run length on the stationary data streams
CALIBRATION_ERL = 10_000
CALIBRATION = f"mlstream@ERL={CALIBRATION_ERL}"

def _alarms_mlstream(cols: dict[str, Any], ref: dict[str, Any] | None, kind: str,
                     expected_run_length: int = DriftSettings.expected_run_length) -> list[int]:
    if kind in ("labels", "stationary_labels"):
        err = cols["errors"]
        pm = PerformanceMonitor(task="classification", threshold=0.5)
        # a classifier whose errors are exactly ``err``: label 1, score 0 when wrong, 1 when right
        events = []
        for s in range(0, err.size, 5000):
            e = err[s : s + 5000]
            events += pm.update(1.0 - e, np.ones_like(e))
        return [ev.index for ev in events if ev.kind == "concept_drift"]
    assert ref is not None
    mon = DriftMonitor(ReferenceProfile.from_columns(ref, seed=0), DriftSettings(expected_run_length=expected_run_length))
    n, events = len(cols["x"]), []
    for s in range(0, n, 10_000):
        events += mon.update_batch({k: v[s : s + 10_000] for k, v in cols.items()})
    return [ev.index for ev in events if ev.kind != "drift_resolved"]


def _alarms_river(detector: str, values: np.ndarray, limit: int | None) -> list[int]:
    from river import base, drift

    make: dict[str, Callable[[], base.DriftDetector]] = {
        "ADWIN": drift.ADWIN, "KSWIN": lambda: drift.KSWIN(seed=0), "PageHinkley": drift.PageHinkley}  # KSWIN samples: seeded
    det = make[detector]()
    out = []
    vals = values[:limit] if limit else values
    for i, v in enumerate(vals.tolist()):
        if v != v:  # missing: skipped
            continue
        det.update(v)
        if det.drift_detected:
            out.append(i)
    return out


def _alarms_windowed(cols: dict[str, Any], ref: dict[str, Any] | None, kind: str) -> list[int]:
    out = []
    if kind in ("labels", "stationary_labels"):
        err = cols["errors"]
        r = err[:2000]  # same reference as mlstream's PerformanceMonitor
        for s in range(2000, err.size - WINDOW + 1, WINDOW):
            w = err[s : s + WINDOW]
            stat, dof = ds.chi2_homogeneity(np.array([w.sum(), WINDOW - w.sum()]), np.array([r.sum(), r.size - r.sum()]))
            if ds.chi2_pvalue(float(stat), int(dof)) < 0.05:
                out.append(s + WINDOW - 1)
        return out
    assert ref is not None
    n = len(cols["x"])
    ref_cats = {k: i for i, k in enumerate(sorted(set(ref["c"]) | {"new"}))}
    rc = np.bincount([ref_cats[v] for v in ref["c"]], minlength=len(ref_cats))
    refs = {k: ref[k][~np.isnan(ref[k])] for k in ("x", "y")}
    codes = np.array([ref_cats.get(v, 0) for v in cols["c"]])
    for s in range(0, n - WINDOW + 1, WINDOW):
        ps = []
        for k in ("x", "y"):
            w = cols[k][s : s + WINDOW]
            ps.append(ds.ks_2samp(w[~np.isnan(w)], refs[k])[1])
        stat, dof = ds.chi2_homogeneity(np.bincount(codes[s : s + WINDOW], minlength=rc.size), rc)
        ps.append(ds.chi2_pvalue(float(stat), int(dof)))
        if min(ps) < 0.05:
            out.append(s + WINDOW - 1)
    return out


def _run(task: tuple[str, str, int, int | None, int | None]) -> tuple[str, str, dict[str, Any]]:
    name, detector, seed, n, limit = task
    spec = STREAMS[name]
    cols, change, kind = make_stream(name, spec, seed, n)
    ref = reference_rows(name, spec, seed) if kind in ("data", "stationary") else None
    t0 = time.perf_counter()
    if detector == "mlstream":
        alarms = _alarms_mlstream(cols, ref, kind)
    elif detector == CALIBRATION:
        alarms = _alarms_mlstream(cols, ref, kind, expected_run_length=CALIBRATION_ERL)
    elif detector == "windowed-KS/chi2":
        alarms = _alarms_windowed(cols, ref, kind)
    else:
        values = cols["errors"] if "errors" in cols else cols["x"]
        alarms = _alarms_river(detector, values, limit)
    events = len(cols["errors"] if "errors" in cols else cols["x"])
    seen = min(events, limit) if limit and detector in ("ADWIN", "KSWIN", "PageHinkley") else events
    res: dict[str, Any] = {"events": seen, "seconds": round(time.perf_counter() - t0, 2)}
    if change is None:
        res.update(false_alarms=len(alarms), detected=None, delay=None)
    else:
        after = [a - change for a in alarms if a >= change]
        delay = after[0] if after and after[0] <= MAX_DELAY else None
        res.update(false_alarms=sum(a < change for a in alarms), detected=delay is not None, delay=delay)
    return name, detector, res


def _applies(name: str, detector: str) -> bool:
    if detector in ("ADWIN", "KSWIN", "PageHinkley") and STREAMS[name]["kind"] == "data":
        return not any(k in STREAMS[name]["after"] for k in ("p_cats", "new_cat", "corr", "missing"))
    return True


def run(quick: bool = False, seed: int = 0, workers: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Run every stream through every detector; return the results dict.

    Change streams run ``repeats`` times with seeds ``seed, seed + 1, ...``
    (river's KSWIN, at ~0.3 ms per event, only with the first seed); each cell
    reports the median delay over the runs, counting a miss as ``MAX_DELAY``.
    """
    n_stat = 40_000 if quick else 200_000
    kswin_limit = 10_000 if quick else 40_000  # river's KSWIN costs ~0.3 ms per event
    repeats = repeats or (1 if quick else 3)
    tasks = []
    for name, spec in STREAMS.items():
        stationary = spec["kind"].startswith("stationary")
        for det in DETECTORS:
            if not _applies(name, det):
                continue
            n = n_stat if stationary else None
            limit = kswin_limit if det == "KSWIN" and stationary else None
            n_runs = 1 if stationary or det == "KSWIN" else repeats
            tasks += [(name, det, seed + r, n, limit) for r in range(n_runs)]
    tasks += [(name, CALIBRATION, seed, n_stat, None) for name, spec in STREAMS.items() if spec["kind"] == "stationary"]
    tasks.sort(key=lambda t: (t[1] != "KSWIN", t[0]))  # longest first
    real = br.tasks(quick, seed, n_stat)
    t0 = time.perf_counter()
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            real_res = pool.map(br.run_task, real)
            results = list(pool.map(_run, tasks))
            realistic = list(real_res)
    else:
        results = [_run(t) for t in tasks]
        realistic = [br.run_task(t) for t in real]
    throughput = br.monitor_throughput(rows=50_000 if quick else 200_000)
    concept = bc.run(seeds=3 if quick else 8, seed=seed, stationary_events=30_000 if quick else 100_000)
    runs_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
    cal: dict[str, float] = {"expected_run_length": CALIBRATION_ERL, "rows": 0, "false_alarms": 0}
    for name, det, res in results:
        if det == CALIBRATION:
            cal["rows"] += res["events"]
            cal["false_alarms"] += res["false_alarms"]
        else:
            runs_of.setdefault((name, det), []).append(res)
    cal["budget"] = cal["rows"] / CALIBRATION_ERL
    table: dict[str, dict[str, Any]] = {name: {} for name in STREAMS}
    for (name, det), runs in runs_of.items():
        table[name][det] = _combine(runs)
    rt = br.realistic_table(realistic)
    targets = {**_targets(table), **br.realistic_targets(rt), "monitor >= 200,000 rows per CPU second (demo domain)":
               throughput["rows_per_cpu_s"] >= 200_000,
               f"shipped concept-drift scenario found within {bc.TARGET:,} labelled events, no false opening":
               concept["within_target"] and concept["rows"]["error rate + miss rate"]["false_openings"] == 0}
    return {"seed": seed, "quick": quick, "repeats": repeats, "streams": table, "summary": _summary(table),
            "calibration_check": cal, "realistic": rt, "monitor_throughput": throughput,
            "concept_drift": concept, "targets": targets,
            "elapsed_s": round(time.perf_counter() - t0, 1)}


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"events": runs[0]["events"], "runs": len(runs), "false_alarms": sum(r["false_alarms"] for r in runs),
           "seconds": round(sum(r["seconds"] for r in runs), 2)}
    if runs[0]["detected"] is None:
        return {**out, "detected": None, "delay": None}
    delays = [r["delay"] if r["detected"] else MAX_DELAY for r in runs]
    hits = sum(bool(r["detected"]) for r in runs)
    return {**out, "detected": hits == len(runs), "detected_runs": hits, "delays": delays,
            "delay": statistics.median(delays), "max_delay": max(delays)}


def _summary(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for det in DETECTORS:
        rows = [(n, r[det]) for n, r in table.items() if det in r]
        change = [(n, r) for n, r in rows if r["detected"] is not None]
        stat = [r for n, r in rows if r["detected"] is None]
        delays = [r["delay"] for _, r in change]
        stat_events = sum(r["events"] for r in stat)
        stat_fa = sum(r["false_alarms"] for r in stat)
        out[det] = {
            "detected": sum(bool(r["detected"]) for _, r in change), "streams": len(change),
            "median_delay": statistics.median(delays) if delays else None,
            "false_alarms_stationary": stat_fa, "stationary_events": stat_events,
            "false_alarms_per_100k": round(stat_fa / stat_events * 1e5, 3) if stat_events else None,
            "false_alarms_before_change": sum(r["false_alarms"] for _, r in change),
            # mlstream's median delay on the same change streams, for a like-for-like comparison
            "mlstream_median_delay_same_streams": statistics.median(
                [table[n]["mlstream"]["delay"] for n, _ in change]) if change else None,
        }
    return out


def _targets(table: dict[str, dict[str, Any]]) -> dict[str, bool]:
    summ = _summary(table)
    ml = {n: r["mlstream"] for n, r in table.items()}
    within = all(ml[n]["detected"] and ml[n]["max_delay"] <= s["target"] for n, s in STREAMS.items() if s.get("target"))
    # median over the streams each baseline is run on, against mlstream's median on the same streams
    beats, qualifying = True, []
    for det in DETECTORS[1:]:
        s = summ[det]
        if s["false_alarms_per_100k"] is None or s["false_alarms_per_100k"] >= 1.0:
            continue
        qualifying.append(det)
        common = [n for n, r in table.items() if det in r and r[det]["detected"] is not None]
        mine = [ml[n]["delay"] for n in common]
        theirs = [table[n][det]["delay"] for n in common]
        beats &= statistics.median(mine) < statistics.median(theirs)
    return {
        "at most 1 false alarm on stationary streams": summ["mlstream"]["false_alarms_stationary"] <= 1,
        "targeted changes detected in time": within,
        f"median delay below every baseline with < 1 FA/100k ({', '.join(qualifying) or 'none qualifies'})": beats,
    }


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if r["detected"] is None:
        return f"{r['false_alarms']} FA"
    text = "miss" if r["detected_runs"] == 0 else f"+{r['delay']:g}"
    if 0 < r["detected_runs"] < r["runs"]:
        text += f" {r['detected_runs']}/{r['runs']}"
    return text + (f" ({r['false_alarms']} FA)" if r["false_alarms"] else "")


def format_table(res: dict[str, Any]) -> str:
    """Readable fixed-width table of :func:`run`'s result."""
    w0, w = 24, 19
    lines = ["stream".ljust(w0) + "events".rjust(8) + "  " + "".join(d.ljust(w) for d in DETECTORS)]
    for name, row in res["streams"].items():
        events = max(r["events"] for r in row.values())
        lines.append(name.ljust(w0) + str(events).rjust(8) + "  " + "".join(_cell(row.get(d)).ljust(w) for d in DETECTORS))
    lines.append("")
    lines.append("summary".ljust(w0) + " " * 10 + "".join(d.ljust(w) for d in DETECTORS))
    for key, label in [("detected", "detected"), ("median_delay", "median delay"),
                       ("false_alarms_stationary", "FA stationary"), ("stationary_events", "stationary events"),
                       ("false_alarms_per_100k", "FA / 100k events"), ("false_alarms_before_change", "FA before change"),
                       ("mlstream_median_delay_same_streams", "mlstream, same streams")]:
        cells = []
        for d in DETECTORS:
            v = res["summary"][d][key]
            cells.append((f"{v}/{res['summary'][d]['streams']}" if key == "detected" else str(v)).ljust(w))
        lines.append(label.ljust(w0) + " " * 10 + "".join(cells))
    cal = res["calibration_check"]
    lines.append("")
    lines.append(f"calibration check: at expected_run_length={cal['expected_run_length']:,} mlstream raised "
                 f"{cal['false_alarms']} false alarms in {cal['rows']:,} stationary rows (budget {cal['budget']:.0f})")
    lines.append("")
    if "realistic" in res:
        lines += [br.format_realistic(res), ""]
    if "concept_drift" in res:
        lines += [bc.format_concept(res["concept_drift"]), ""]
    for target, ok in res["targets"].items():
        lines.append(f"[{'ok' if ok else 'FAIL'}] {target}")
    lines.append(f"elapsed {res['elapsed_s']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, out: Callable[[str], Any] = print) -> int:
    """Entry point of ``mlstream bench-drift``; exit code 0 when all targets hold, 1 otherwise."""
    p = argparse.ArgumentParser(prog="mlstream bench-drift", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quick", action="store_true", help="shorter stationary streams (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=None, help="seeds per change stream (default 3, 1 with --quick)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    args = p.parse_args(argv)
    res = run(quick=args.quick, seed=args.seed, workers=args.workers, repeats=args.repeats)
    out(json.dumps(res, sort_keys=True) if args.json else format_table(res))
    return 0 if all(res["targets"].values()) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
