"""Backtest the drift monitor on a recorded stream: ``mlstream replay``.

Usage::

    mlstream replay --reference REF.jsonl FILE.jsonl [--schema SCHEMA.json] [--output OUT.jsonl] [--json]
    mlstream replay --model-card card.json FILE.jsonl [--output OUT.jsonl] [--json]

Each line of REF.jsonl and FILE.jsonl is a flat JSON object of feature values
(numbers, strings for categories, ``null`` for missing); CSV or TSV files with a header row
(plain, .gz, .bz2 or .xz) are read as well (:mod:`stream.monitoring.replay_files`). Feature kinds are
inferred from the reference or given by ``--schema`` (``{"name": "numeric" |
"categorical"}``). With ``--model-card`` the profile is the card's
``reference_profile`` and only its features are read from each line. The stream
is fed in chunks of 2,000 rows to :meth:`stream.monitoring.drift.DriftMonitor.update_batch`, the
same code the pipeline's monitor runs on its feature batches (row by row gives the same events,
~5x slower). stdout gets a short summary (rows, drift windows, drift openings
per feature, or "no drift"); ``--json`` prints each drift event as one JSON line
instead (``index`` and ``kind`` first), and ``--output`` writes them to a file.
With ``--time-field``, event times of FILE feed the monitor's daily profile and those of
REF.jsonl give it the training data's own daily cycle from the first row. With
``--entity-field``, one entity counts at most ``entity_max_rows`` rows of every
``entity_window`` in the category shares (a heavy entity's burst repeats its own category).
Not given, both are guessed (:mod:`stream.monitoring.replay_columns`: a clock tested as a
feature drifts by construction), and each guess is printed.
Features of the card that no row of FILE holds (raw events instead of feature
rows, say) are left out with a warning, rather than reported as "missing" drift.

Examples
--------
>>> import json, os, tempfile
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> d = tempfile.mkdtemp()
>>> with open(os.path.join(d, "ref.jsonl"), "w") as f:
...     for v in rng.normal(size=5000):
...         _ = f.write(json.dumps({"x": float(v)}) + "\\n")
>>> with open(os.path.join(d, "live.jsonl"), "w") as f:
...     for v in np.concatenate([rng.normal(size=3000), rng.normal(2.0, 1.0, size=2000)]):
...         _ = f.write(json.dumps({"x": float(v)}) + "\\n")
>>> main(["--reference", os.path.join(d, "ref.jsonl"), os.path.join(d, "live.jsonl"),
...       "--output", os.path.join(d, "out.jsonl")])
5,000 rows replayed; drift windows 500, 2000, 4000, 8000, 32000 rows, tested every 100, 400, 800, 1600, 6400 rows
drift on x: opened 1× (row 3599)
0
>>> [(e["index"], e["kind"], e["features"]) for e in map(json.loads, open(os.path.join(d, "out.jsonl")))]
[(3599, 'data_drift', ['x'])]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from itertools import islice
from typing import IO, Any

import numpy as np

from stream.errors import ProfileError, ReplayError
from stream.monitoring.drift import DriftEvent, DriftMonitor, DriftSettings
from stream.monitoring.profile import ReferenceProfile
from stream.monitoring.replay_columns import Roles, epoch_seconds, guess_roles
from stream.monitoring.replay_files import FORMATS, RowSource, read_rows
from stream.reporting.report_data import opened_on

__all__ = ["load_columns", "main", "replay_rows"]


def load_columns(path: str) -> dict[str, list[Any]]:
    """Read a file of rows (JSON lines or CSV: :func:`read_rows`) into columns (keys in order of
    first appearance, None if absent)."""
    cols: dict[str, list[Any]] = {}
    n = 0
    for row in read_rows(path):
        for key in row:
            if key not in cols:
                cols[key] = [None] * n
        for key, values in cols.items():
            values.append(row.get(key))
        n += 1
    return cols


CHUNK_ROWS = 2_000  # rows per update_batch call


def replay_rows(monitor: DriftMonitor, rows: Iterator[dict[str, Any]], time_field: str | None = None,
                entity_field: str | None = None, chunk: int = CHUNK_ROWS) -> Iterator[DriftEvent]:
    """Feed rows to ``monitor`` in chunks of ``chunk`` rows as columns, as the live monitor takes
    feature batches (with their event time from ``time_field`` and entity id from ``entity_field``);
    yield its events. Rows or columns give the same events (:meth:`DriftMonitor.update_batch`)."""
    features = list(monitor.profile.features)
    while batch := list(islice(rows, chunk)):
        cols = {f: [r.get(f) for r in batch] for f in features}
        ts = None
        if time_field:
            ts = np.array([np.nan if (t := r.get(time_field)) is None else epoch_seconds(t) for r in batch])
        entities = None
        if entity_field:
            ids = [None if (e := r.get(entity_field)) is None else str(e) for r in batch]
            entities = ids if any(e is not None for e in ids) else None
        yield from monitor.update_batch(cols, ts=ts, entities=entities)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlstream replay",
                                description=f"Replay a recorded stream ({FORMATS}) through the drift monitor.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", help="reference data (training rows): JSON lines or CSV, like the stream")
    src.add_argument("--model-card", help="model card JSON with a reference_profile")
    p.add_argument("file", help=f"stream to replay: {FORMATS}; '-' reads standard input")
    p.add_argument("--schema", help='JSON object {"feature": "numeric" | "categorical"}')
    p.add_argument("--output", help="also write the events here (JSON lines)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines instead of a summary")
    p.add_argument("--expected-run-length", type=int, default=DriftSettings.expected_run_length,
                   help="target rows between false alarms (default %(default)s)")
    p.add_argument("--no-resolved", action="store_true", help="do not emit drift_resolved events")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference profile subsample")
    p.add_argument("--time-field", default=None,
                   help="column of event times (epoch seconds or milliseconds, ISO 8601): not a feature, feeds "
                        "the monitor's daily profile (default: guessed, a column of times named like a time or "
                        "in order; '' for none)")
    p.add_argument("--entity-field", default=None,
                   help="column of entity ids (user, merchant): not a feature; one entity's burst counts at most "
                        "entity_max_rows rows per entity_window in the category shares (default: guessed, an "
                        "id-named column whose values repeat; '' for none: runs of one category far longer "
                        "than chance stand for bursts)")
    p.add_argument("--ignore", default="", help="comma-separated columns that are not features (ids, labels)")
    return p


def _probe(src: str | RowSource, rows: int = 1_000) -> list[dict[str, Any]]:
    """The stream's first ``rows`` rows."""
    return (src if isinstance(src, RowSource) else RowSource(src)).head(rows)


def _profile(args: argparse.Namespace, src: RowSource | None = None) -> tuple[ReferenceProfile, str | None, str | None, Roles]:
    probe = _probe(args.file if src is None else src)
    if args.model_card:
        with open(args.model_card, encoding="utf-8") as f:
            card = json.load(f)
        if not isinstance(card, dict) or "reference_profile" not in card:
            raise ReplayError(f"{args.model_card}: no reference_profile in the model card")
        version = card.get("version")
        profile = ReferenceProfile.from_dict(card["reference_profile"])
        # the card names the features: only the stream's other columns may be its time or entity
        names = dict.fromkeys(k for r in probe for k in r if k not in profile.features)
        others = {k: [r.get(k) for r in probe] for k in names}
        roles = guess_roles(others, probe, time_field=args.time_field, entity_field=args.entity_field)
        return profile, card.get("name"), None if version is None else str(version), roles
    kinds = None
    if args.schema:
        with open(args.schema, encoding="utf-8") as f:
            kinds = json.load(f)
        if not isinstance(kinds, dict):
            raise ReplayError(f"{args.schema}: expected a JSON object of feature kinds")
    cols = load_columns(args.reference)
    ignore = list(filter(None, args.ignore.split(",")))
    roles = guess_roles({k: v for k, v in cols.items() if k not in ignore and k not in (kinds or {})}, probe,
                        time_field=args.time_field, entity_field=args.entity_field)
    # the reference's own event times give the monitor its daily cycle from the first row
    times = cols.get(roles.time_field) if roles.time_field else None
    for skip in [roles.time_field, roles.entity_field, *roles.ignored, *ignore]:
        cols.pop(skip, None)
    if kinds:
        cols = {k: cols.get(k, [None] * len(next(iter(cols.values()), []))) for k in kinds}
    if not cols or not next(iter(cols.values())):
        raise ReplayError(f"{args.reference}: no reference rows")
    try:
        event_ts = None if times is None else [None if t is None else epoch_seconds(t) for t in times]
    except (TypeError, ValueError):  # the profile is still good without its daily cycle
        print(f"replay: warning: {roles.time_field} of {args.reference} is not in epoch seconds or ISO 8601: the reference's "
              "daily cycle is not used", file=sys.stderr)
        event_ts = None
    return ReferenceProfile.from_columns(cols, kinds, seed=args.seed, event_ts=event_ts), None, None, roles


def event_json(event: DriftEvent) -> str:
    """One event as a JSON line, ``index``, ``kind`` and ``features`` first, the evidence last."""
    d = event.to_dict()
    head = {k: d.pop(k) for k in ("index", "kind", "features")}
    evidence = d.pop("evidence", [])
    return json.dumps({**head, **dict(sorted(d.items())), "evidence": evidence})


def present_features(path: str | RowSource, features: list[str], probe_rows: int = 1_000) -> tuple[list[str], int]:
    """The features that occur in the first ``probe_rows`` rows of ``path``, and the rows read."""
    rows = _probe(path, probe_rows)
    seen = {k for row in rows for k, v in row.items() if v is not None}
    return [f for f in features if f in seen], len(rows)


def restrict_to_present(profile: ReferenceProfile, path: str | RowSource, source: str) -> ReferenceProfile:
    """Leave out (with a warning) profile features absent from the stream, instead of reporting them missing."""
    features = list(profile.features)
    present, probed = present_features(path, features)
    if not probed:
        return profile
    absent = [f for f in features if f not in present]
    if not present:
        raise ReplayError(f"{path}: none of the {len(features)} features of {source} ({', '.join(features[:4])}, …) "
                          "occurs in its rows; replay reads feature rows (a deployment's feature batches, "
                          "or training features), not raw events")
    if absent:
        print(f"replay: warning: {len(absent)} of {len(features)} features of {source} are absent from the first "
              f"{probed} rows of {path} and are not tested: {', '.join(absent[:8])}"
              f"{', …' if len(absent) > 8 else ''} (raw events instead of feature rows?)", file=sys.stderr)
        return profile.subset(present)
    return profile


def summary(rows: int, settings: DriftSettings, events: list[DriftEvent]) -> list[str]:
    """The human summary: rows, windows, drift openings per feature (or no drift)."""
    lines = [f"{rows:,} rows replayed; drift windows {', '.join(map(str, settings.windows))} rows, "
             f"tested every {', '.join(map(str, settings.steps()))} rows"]
    opened: dict[str, list[int]] = {}
    for e in events:
        for f in opened_on(e.kind, e.features):
            opened.setdefault(f, []).append(e.index)
    if not opened:
        return lines + ["no drift: every test stayed within its threshold"]
    for f, at in sorted(opened.items()):
        rows_at = ", ".join(str(i) for i in at[:5]) + (", …" if len(at) > 5 else "")
        lines.append(f"drift on {f}: opened {len(at)}× (row {rows_at})")
    resolved = sum(1 for e in events if e.kind == "drift_resolved")
    return lines + ([f"{resolved} drift state(s) resolved"] if resolved else [])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlstream replay``; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        src = RowSource(args.file)  # read once: standard input too
        profile, name, version, roles = _profile(args, src)
        for note in roles.notes:
            print(f"replay: {note}", file=sys.stderr)
        if (small := profile.small_warning()) is not None:
            print(f"replay: warning: {small}", file=sys.stderr)
        if not roles.time_field:  # README, "What it cannot see": a long day's swings latch as drift
            print("replay: note: no event times (name their field with --time-field): a daily cycle in the "
                  "rows cannot be told from drift", file=sys.stderr)
        elif profile.hourly is None:  # the first day blind to the cycle (README)
            print(f"replay: warning: the reference has no event times ({roles.time_field}): a daily cycle in the "
                  "rows reads as drift until a day of them is seen", file=sys.stderr)
        if args.model_card:
            profile = restrict_to_present(profile, src, f"model card {args.model_card}")
        settings = DriftSettings(expected_run_length=args.expected_run_length, emit_resolved=not args.no_resolved)
        monitor = DriftMonitor(profile, settings, model_name=name, model_version=version)
        features = list(profile.features)
        keep = features + [f for f in (roles.time_field, roles.entity_field) if f]
        rows = ({k: row.get(k) for k in keep} for row in src)
        out: IO[str] | None = open(args.output, "w", encoding="utf-8") if args.output else None
        events: list[DriftEvent] = []
        try:
            for event in replay_rows(monitor, rows, roles.time_field, roles.entity_field):
                events.append(event)
                line = event_json(event) + "\n"
                if out is not None:
                    out.write(line)
                if args.json:
                    sys.stdout.write(line)
        finally:
            if out is not None:
                out.close()
    except (OSError, ReplayError, ProfileError, ValueError) as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print("\n".join(summary(monitor.rows_seen, settings, events)))
    return 0
