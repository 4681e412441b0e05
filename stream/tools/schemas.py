"""Writes (or checks) the JSON Schemas in ``schemas/`` from the records in :mod:`stream.messages`.

``python -m stream.tools.schemas [--check] [DIR]``; ``tests/test_messages.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

from stream.messages import (
    ERROR_CLASS_HEADER,
    MESSAGE_HEADER,
    PRODUCER_HEADER_PREFIX,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    DeadLetterHeaders,
    DriftEvent,
    FeatureBatch,
    Label,
    LabelledExample,
    ModelChunk,
    ModelStates,
    ModelUpdate,
    Prediction,
    RetrainRequest,
    ShadowPrediction,
    ShadowVerdict,
)

# file stem -> (record, title, description)
SCHEMAS: dict[str, tuple[type, str, str | None]] = {
    "prediction": (Prediction, "Prediction (topic `predictions`, keyed by entity)", None),
    "dead-letter": (DeadLetterHeaders, "Dead letter (topic `events.dlq`)",
                    "The record value and key are the original event's bytes, unchanged (a tombstone "
                    "stays one). These headers (UTF-8) say why: " + ", ".join((
                        REASON_HEADER + " (one of the listed codes)", MESSAGE_HEADER,
                        ERROR_CLASS_HEADER + " (processing_error only)", SOURCE_TOPIC_HEADER,
                        SOURCE_PARTITION_HEADER, SOURCE_OFFSET_HEADER))
                    + "; the original headers follow, a header named like one of these renamed "
                    + PRODUCER_HEADER_PREFIX + "<name>. This schema describes the headers as an object."),
    "feature-batch": (FeatureBatch, "Feature batch (internal topic `mlstream.features`, one message "
                      "per partition and micro-batch)",
                      "The monitor's input: columns of monitored features for the rows of one "
                      "micro-batch of one partition. Numeric columns use null for missing."),
    "label": (Label, "Delayed label (topic `labels`)",
              "Produce keyed by the same entity key as the event, so the label lands in the "
              "partition of its prediction."),
    "drift-event": (DriftEvent, "Drift event (topic `mlstream.drift`)", None),
    "retrain-request": (RetrainRequest, "Retraining request (topic `mlstream.retrain-requests`, "
                        "keyed by request_id)",
                        "request_id is deterministic (model, version, reason, features, cooldown "
                        "period), so repeats can be de-duplicated; at most one request per model "
                        "version per cooldown."),
    "labelled-example": (LabelledExample, "Labelled example (topic `mlstream.labelled-examples`, keyed by event_id)",
                         "A scored event's model inputs exactly as scored, joined with its delayed label "
                         "by the monitor; the trainer learns from these. Bounded by time and size retention."),
    "model-chunk": (ModelChunk, "Model chunk (compacted topic `mlstream.models`, keyed "
                    "`<model>/<version>/<file>/<index>`)",
                    "One piece of a model version's card.json or model.onnx; data is base64. A file "
                    "larger than a message travels as `count` chunks, each with the whole file's size "
                    "and sha256; readers refuse a file whose reassembled bytes do not match."),
    "model-states": (ModelStates, "Model states (compacted topic `mlstream.models`, keyed `<model>/states`)",
                     "The registry as scorers need it: the champion to serve, every version's state, "
                     "and the sha256 of the versions whose files are on the topic. Published after them."),
    "model-update": (ModelUpdate, "Model update (topic `mlstream.model-updates`, keyed by request_id)",
                     "The trainer's decision on a retraining request (promote, shadow, reject, wait, "
                     "expired, failed), or on a shadow verdict (promote, reject, rollback, keep), "
                     "with the compared versions, the paired-bootstrap metrics, the reasons and "
                     "the training and holdout windows."),
    "shadow-prediction": (ShadowPrediction, "Shadow prediction (topic `mlstream.shadow-predictions`, "
                          "keyed by entity)",
                          "A score of a version that does not serve (role shadow: waiting for promotion; "
                          "role previous: the champion before a promotion, guarding it), with the "
                          "champion's score of the same feature row. Never on `predictions`."),
    "shadow-verdict": (ShadowVerdict, "Shadow verdict (topic `mlstream.shadow-verdicts`, keyed by verdict_id)",
                       "The monitor's paired comparison of a shadow (or previous champion) with the "
                       "champion on the same live labelled events; the trainer acts on it."),
}


def json_schemas() -> dict[str, str]:
    """File name -> JSON Schema text, generated from the records (sorted keys, stable)."""
    out = {}
    for stem, (record, title, description) in SCHEMAS.items():
        generated = msgspec.json.schema(record)
        defs = generated.pop("$defs", {})
        top = defs.pop(record.__name__)
        top.pop("description", None)  # the class docstring is for Python readers
        if description:
            top["description"] = description
        doc = {"$schema": "https://json-schema.org/draft/2020-12/schema",
               "$id": f"https://mlstream.dev/schemas/{stem}.schema.json", **top, "title": title}
        if defs:
            doc["$defs"] = defs
        out[f"{stem}.schema.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m stream.tools.schemas [--check] [DIR]``: write (or compare) the schemas."""
    p = argparse.ArgumentParser(prog="python -m stream.tools.schemas", description=main.__doc__)
    p.add_argument("directory", nargs="?", default="schemas", type=Path)
    p.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = p.parse_args(argv)
    stale = []
    for name, text in json_schemas().items():
        path = args.directory / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} schema(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
