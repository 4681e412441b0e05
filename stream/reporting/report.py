"""``mlstream report``: one self-contained HTML drift report, from a recorded stream or a live deployment.

Usage::

    mlstream report --events rows.jsonl --model-card card.json [--output report.html]
    mlstream report --events events.jsonl --model-card models/fraud/1/card.json [--warmup 8000]
    mlstream report --events rows.jsonl --reference ref.jsonl [--output report.html]
    mlstream report --live [--config mlstream.toml] [--max-rows 200000] [--output report.html]

From a file, each line is a flat JSON object of monitored feature values and ``score``
(what ``mlstream replay`` reads); a ``label`` field (``--label-field``) adds labelled
performance. Or each line is a raw event, as on the events topic: then the domain's features and
the model's scores are computed first (:mod:`stream.reporting.report_raw`), with the ONNX file
beside the card. Live, the report reads the deployment's topics up to their current end, bounded
by ``--max-rows`` feature rows and ``--timeout`` seconds: feature batches (features, scores,
event ids), labels (joined on ``event_id``), drift events, retraining requests and model
updates. Either way the rows go through the same drift monitor the pipeline runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.errors import MessageError, ProfileError, ReplayError, StreamError
from stream.messages import SCORE_COLUMN, DriftEvent, FeatureBatch, Label, ModelUpdate, RetrainRequest, decode
from stream.monitoring.drift import DriftSettings
from stream.monitoring.profile import ReferenceProfile
from stream.monitoring.replay import _profile, load_columns, restrict_to_present
from stream.reporting.report_data import ReportData, build_report
from stream.reporting.report_html import summary_lines, write_report
from stream.reporting.report_raw import first_row, looks_raw, rows_from_events

__all__ = ["main", "report_from_file", "report_from_topics"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlstream report", description="Write a self-contained HTML drift report.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", help="JSON lines or CSV: raw events (as on the events topic; needs --model-card) "
                     "or monitored feature rows with scores (as replay reads)")
    src.add_argument("--live", action="store_true", help="read the deployment's topics (settings' broker)")
    p.add_argument("--model-card", help="model card JSON with a reference_profile (with --events)")
    p.add_argument("--reference", help="reference rows, JSON lines or CSV (with --events, instead of a card)")
    p.add_argument("--label-field", default="label", help="label field of feature rows (with --events)")
    p.add_argument("--domain", help="package.module:NAME of raw events (default: settings domain)")
    p.add_argument("--warmup", type=int, default=0,
                   help="leading raw events that only build entity state (with --events)")
    p.add_argument("--config", help="TOML settings file (broker, topics, domain, monitor settings)")
    p.add_argument("--model-version", help="reference profile of this version (with --live; default: newest seen)")
    p.add_argument("--max-rows", type=int, default=200_000, help="newest feature rows read (with --live)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to spend reading topics (with --live)")
    p.add_argument("--output", default="mlstream-report.html")
    p.add_argument("--title", default=None)
    return p


def report_from_file(args: argparse.Namespace) -> ReportData:
    if not (args.model_card or args.reference):
        raise ReplayError("--events needs --model-card or --reference")
    from stream.config_load import load_settings

    # as replay reads the file: the label is not a feature, time and entity columns are guessed
    args.schema, args.seed, args.file, args.ignore = None, 0, args.events, args.label_field
    args.time_field = args.entity_field = None
    profile, name, version, roles = _profile(args)
    model: dict[str, Any] = {"name": name, "version": version}
    title = args.title or f"Drift report: {Path(args.events).name}"
    notes = list(roles.notes)
    settings = load_settings(args.config)
    drift = DriftSettings(expected_run_length=settings.monitor.expected_run_length)  # as the deployment's
    if args.model_card:
        from stream.domain import load_domain

        card = orjson.loads(Path(args.model_card).read_bytes())
        model.update(task=card.get("task", "classification"), threshold=card.get("threshold", 0.5))
        domain = load_domain(args.domain or settings.domain)
        if looks_raw(first_row(args.events), domain):
            columns, labels, invalid, entities = rows_from_events(args.events, args.model_card, domain,
                                                                 warmup=args.warmup)
            notes.append(f"raw events: features computed with domain {domain.name!r}, scored by the model"
                         + (f"; {invalid} events failed the schema and are left out" if invalid else "")
                         + (f"; the first {args.warmup} only build entity state" if args.warmup else ""))
            data = build_report(profile, columns, labels=labels, model=model, title=title, settings=drift,
                                entities=entities)
            data.notes += notes
            return data
        profile = restrict_to_present(profile, args.events, f"model card {args.model_card}")
    cols = load_columns(args.events)
    n = len(next(iter(cols.values()), []))
    columns = {f: np.asarray(cols.get(f, [None] * n), dtype=np.float64) if kind == "numeric"
               else cols.get(f, [None] * n) for f, kind in profile.features.items()}
    labels = None
    if args.label_field in cols:
        labels = np.array([np.nan if v is None else float(v) for v in cols[args.label_field]])
    data = build_report(profile, columns, labels=labels, model=model, title=title, settings=drift)
    data.notes += notes
    return data


async def _read(settings: Any, limits: dict[str, tuple[int, type[Any]]], deadline: float, *, rows_topic: str,
                model: str) -> tuple[dict[str, list[tuple[int, Any]]], bool]:
    """Records of each topic, decoded as the type given with its limit (malformed ones skipped, as the
    monitor skips them): at most the newest ``limits[topic][0]`` per partition, up to the
    high watermark seen at the first fetch. In ``rows_topic`` only ``model``'s feature batches are kept,
    the oldest dropped beyond ``limits[rows_topic]`` rows: memory stays bounded however big the batches.
    Also says whether ``rows_topic`` was read from its beginning (nothing skipped or dropped)."""
    from collections import deque

    from aiokafka import TopicPartition

    from stream.kafka import make_consumer, start_client

    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    out: dict[str, deque[tuple[int, Any]]] = {t: deque() for t in limits}
    rows, complete = 0, True
    try:
        tps = []
        for topic in limits:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return {t: list(v) for t, v in out.items()}, complete
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # End offsets come from fetch responses' high watermarks, not ListOffsets (which the
        # embedded broker answers wrongly for batched produces; see README "The embedded broker").
        end: dict[TopicPartition, int] = {}
        pending = set(tps)
        while pending and time.monotonic() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=5_000)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if tp not in end and hw is not None:
                    end[tp] = hw
                    first = max(hw - limits[tp.topic][0], await consumer.position(tp))
                    if first > await consumer.position(tp):  # skip to the newest messages
                        consumer.seek(tp, first)
                        batches.pop(tp, None)
                        complete = complete and tp.topic != rows_topic
            for tp, recs in batches.items():
                for r in recs:
                    if tp not in end or r.offset >= end[tp]:
                        continue
                    try:
                        value = decode(r.value, limits[tp.topic][1])
                    except MessageError:
                        continue
                    if tp.topic == rows_topic:
                        if value.model != model:
                            continue
                        rows += len(value.event_ids)
                    out[tp.topic].append((int(r.timestamp), value))
            rq = out[rows_topic]
            while rq and rows - len(rq[0][1].event_ids) >= limits[rows_topic][0]:
                rows -= len(rq.popleft()[1].event_ids)
                complete = False
            for tp in list(pending):
                if tp in end and await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        if pending:
            print(f"report: warning: stopped reading after --timeout; {len(pending)} partition(s) not read to "
                  "their end", file=sys.stderr)
        return {t: list(v) for t, v in out.items()}, complete
    finally:
        await consumer.stop()


def report_from_topics(settings: Any, *, model_version: str | None, max_rows: int, timeout: float,
                       title: str | None = None) -> ReportData:
    from stream.registry import ModelStore

    t = settings.topics
    # a feature batch holds at least one row: max_rows batches always hold the newest max_rows rows
    limits: dict[str, tuple[int, type[Any]]] = {
        t.features: (max_rows, FeatureBatch), t.labels: (2 * max_rows, Label), t.drift: (10_000, DriftEvent),
        t.retrain: (10_000, RetrainRequest), t.model_updates: (10_000, ModelUpdate)}
    topics, complete = asyncio.run(_read(settings, limits, time.monotonic() + timeout, rows_topic=t.features,
                                         model=settings.model_name))
    batches = topics[t.features]
    if not batches:
        raise ReplayError(f"no feature batches of model {settings.model_name!r} in topic {t.features!r} "
                          f"at {settings.kafka.bootstrap_servers} (is a worker running with the monitor on?)")
    versions = sorted({b.model_version for _, b in batches}, key=_version_key)
    version = model_version or versions[-1]
    card, _ = ModelStore(settings.model_store).load(settings.model_name, version)
    if card.reference_profile is None:
        raise ProfileError(f"model {card.name} version {card.version} has no reference_profile")
    profile = ReferenceProfile.from_dict(card.reference_profile)
    # rows in event-time order, as the monitor merges partitions
    event_ts = np.concatenate([np.array(b.event_ts, dtype=np.float64) for _, b in batches])  # null -> NaN
    kafka_ts = np.concatenate([np.full(len(b.event_ids), ts / 1000.0) for ts, b in batches])
    served = [b.model_version for _, b in batches for _ in b.event_ids]
    order = np.argsort(event_ts, kind="stable")[-max_rows:]
    ids = [i for _, b in batches for i in b.event_ids]
    ids = [ids[i] for i in order]
    columns: dict[str, Any] = {}
    for name, kind in profile.features.items():
        if name == SCORE_COLUMN:
            vals: list[Any] = [v for _, b in batches for v in b.scores]
        else:  # a column a batch lacks (another model version's features) reads as missing
            vals = [v for _, b in batches for v in (b.column(name) if name in b.columns else [None] * len(b.event_ids))]
        columns[name] = (np.array([np.nan if v is None else v for v in vals], dtype=np.float64)[order]
                         if kind == "numeric" else [vals[i] for i in order])
    # each row's entity (the event's key), as the deployment's monitor caps and counts them
    ents = [e for _, b in batches for e in (b.entity_ids if b.entity_ids is not None else [None] * len(b.event_ids))]
    entities: list[Any] | None = [ents[i] for i in order] if any(e is not None for e in ents) else None
    label_of = {v.event_id: float(v.label) for _, v in topics[t.labels]}
    labels = np.array([label_of.get(str(i), np.nan) for i in ids]) if label_of else None
    s = DriftSettings(expected_run_length=settings.monitor.expected_run_length)
    # the deployment's monitor skipped its first warmup_rows rows: so does the report, when it read
    # the stream from its start (the row axes then match and its events carry the same indices)
    skip = min(settings.monitor.warmup_rows, len(order)) if complete else 0
    if skip:
        columns = {k: v[skip:] for k, v in columns.items()}
        labels = labels[skip:] if labels is not None else None
        entities = entities[skip:] if entities is not None else None
    # wall-clock moments -> the (tested) row the monitor had reached by then
    reached = np.sort(kafka_ts[order][skip:])

    def row_at(seconds: float) -> int:
        return max(int(np.searchsorted(reached, seconds, side="right")) - 1, 0)

    timeline = _timeline(topics, t, row_at, [served[i] for i in order][skip:], by_index=complete)
    data = build_report(profile, columns, labels=labels, settings=s, timeline=timeline, entities=entities,
                        model={"name": card.name, "version": card.version, "task": card.task,
                               "threshold": card.data.get("threshold", 0.5)},
                        title=title or f"Drift report: {card.name} on {settings.kafka.bootstrap_servers}")
    if len(versions) > 1:
        data.notes.append(f"rows were scored by versions {', '.join(versions)}; the reference profile is version "
                          f"{card.version}'s")
    if skip:
        data.notes.append(f"the first {skip} rows only build entity state (monitor.warmup_rows) and are not tested")
    if not complete:
        data.notes.append(f"the newest {len(order):,} rows (--max-rows); row 0 is the first of them, and the "
                          "deployment's alerts are placed by their time")
    return data


def _timeline(topics: dict[str, list[tuple[int, Any]]], t: Any, row_at: Any, served: list[str], *,
              by_index: bool) -> list[dict[str, Any]]:
    """Drift alerts, retraining requests and model updates placed on the row axis: by the row index
    the deployment's monitor gave them when the report read the stream from its start (the same
    count of tested rows), else by their time."""
    out: list[dict[str, Any]] = []
    for i, v in enumerate(served):
        if i == 0 or v != served[i - 1]:
            out.append({"index": i, "lane": "serving version", "text": f"version {v} serving"})
    for _, d in topics[t.drift]:
        out.append({"index": d.index if by_index else row_at(d.detected_at), "lane": "drift alert (deployment)",
                    "text": f"{d.kind}: {', '.join(d.features)} (version {d.model_version})"})
    request_row = {}
    for _, r in topics[t.retrain]:
        at = r.drift_index if by_index and r.drift_index is not None else row_at(r.requested_at)
        request_row[r.request_id] = at
        out.append({"index": at, "lane": "retraining requested",
                    "text": f"{r.reason} on {', '.join(r.features)} (version {r.model_version})"})
    lanes = {"promote": "challenger promoted", "reject": "challenger rejected"}
    for ts, u in topics[t.model_updates]:
        # an update answers a request: drawn at that request's row when it is known
        at = request_row.get(u.request_id, row_at(u.decided_at or ts / 1000.0))
        out.append({"index": at, "lane": lanes.get(u.decision, "model update"),
                    "text": f"{u.decision}: version {u.challenger_version} vs {u.champion_version}: {u.reason}"})
    return out


def _version_key(v: str) -> tuple[int, Any]:
    return (0, int(v)) if v.isdigit() else (1, v)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlstream report``; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.live:
            from stream.config_load import load_settings

            settings = load_settings(args.config)
            data = report_from_topics(settings, model_version=args.model_version, max_rows=args.max_rows,
                                      timeout=args.timeout, title=args.title)
        else:
            data = report_from_file(args)
        path = write_report(data, args.output)
    except (OSError, StreamError, ValueError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(data)))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
    return 0
