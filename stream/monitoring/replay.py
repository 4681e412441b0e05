"""Backtest the drift monitor on a recorded stream: ``mlstream replay``.

Usage::

    mlstream replay --reference REF.jsonl FILE.jsonl [--schema SCHEMA.json] [--output OUT.jsonl]
    mlstream replay --model-card card.json FILE.jsonl [--output OUT.jsonl]

Each line of REF.jsonl and FILE.jsonl is a flat JSON object of feature values
(numbers, strings for categories, ``null`` for missing). Feature kinds are
inferred from the reference or given by ``--schema`` (``{"name": "numeric" |
"categorical"}``). With ``--model-card`` the profile is the card's
``reference_profile`` and only its features are read from each line. The stream
is fed row by row to :meth:`stream.monitoring.drift.DriftMonitor.update`, the same code the
pipeline runs, and each drift event is written as one JSON line.

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
0
>>> [(e["index"], e["kind"], e["features"]) for e in map(json.loads, open(os.path.join(d, "out.jsonl")))]
[(3099, 'data_drift', ['x'])]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from stream.monitoring.drift import DriftEvent, DriftMonitor, DriftSettings
from stream.errors import ProfileError, ReplayError
from stream.monitoring.profile import ReferenceProfile

__all__ = ["load_columns", "main", "replay_rows"]


def _read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise ReplayError(f"{path}:{lineno}: expected a JSON object")
            yield row


def load_columns(path: str) -> dict[str, list[Any]]:
    """Read a JSON-lines file into columns (keys in order of first appearance, None if absent)."""
    cols: dict[str, list[Any]] = {}
    n = 0
    for row in _read_jsonl(path):
        for key in row:
            if key not in cols:
                cols[key] = [None] * n
        for key, values in cols.items():
            values.append(row.get(key))
        n += 1
    return cols


def replay_rows(monitor: DriftMonitor, rows: Iterator[dict[str, Any]]) -> Iterator[DriftEvent]:
    """Feed rows one by one to ``monitor``; yield its events as they fire."""
    for row in rows:
        yield from monitor.update(row)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlstream replay",
                                description="Replay a JSON-lines stream through the drift monitor.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", help="reference data, JSON lines")
    src.add_argument("--model-card", help="model card JSON with a reference_profile")
    p.add_argument("file", help="stream to replay, JSON lines")
    p.add_argument("--schema", help='JSON object {"feature": "numeric" | "categorical"}')
    p.add_argument("--output", help="write events here (JSON lines) instead of stdout")
    p.add_argument("--expected-run-length", type=int, default=DriftSettings.expected_run_length,
                   help="target rows between false alarms (default %(default)s)")
    p.add_argument("--no-resolved", action="store_true", help="do not emit drift_resolved events")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference profile subsample")
    return p


def _profile(args: argparse.Namespace) -> tuple[ReferenceProfile, str | None, str | None]:
    if args.model_card:
        with open(args.model_card, encoding="utf-8") as f:
            card = json.load(f)
        if not isinstance(card, dict) or "reference_profile" not in card:
            raise ReplayError(f"{args.model_card}: no reference_profile in the model card")
        version = card.get("version")
        return (ReferenceProfile.from_dict(card["reference_profile"]), card.get("name"),
                None if version is None else str(version))
    kinds = None
    if args.schema:
        with open(args.schema, encoding="utf-8") as f:
            kinds = json.load(f)
        if not isinstance(kinds, dict):
            raise ReplayError(f"{args.schema}: expected a JSON object of feature kinds")
    cols = load_columns(args.reference)
    if kinds:
        cols = {k: cols.get(k, [None] * len(next(iter(cols.values()), []))) for k in kinds}
    if not cols or not next(iter(cols.values())):
        raise ReplayError(f"{args.reference}: no reference rows")
    return ReferenceProfile.from_columns(cols, kinds, seed=args.seed), None, None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlstream replay``; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        profile, name, version = _profile(args)
        settings = DriftSettings(expected_run_length=args.expected_run_length, emit_resolved=not args.no_resolved)
        monitor = DriftMonitor(profile, settings, model_name=name, model_version=version)
        features = list(profile.features)
        rows = ({k: row.get(k) for k in features} for row in _read_jsonl(args.file))
        out: IO[str] = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        try:
            for event in replay_rows(monitor, rows):
                out.write(json.dumps(event.to_dict(), sort_keys=True) + "\n")
        finally:
            if args.output:
                out.close()
    except (OSError, ReplayError, ProfileError, ValueError) as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2
    return 0
