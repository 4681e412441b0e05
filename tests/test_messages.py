"""The records are the contract: committed schemas are the generated ones, every record's
encoding validates against its schema, and bad bytes give one clear line, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from stream.errors import MessageError, StreamError
from stream.messages import (
    CategoryCodes,
    DeadLetter,
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
    decode,
    encode,
)
from stream.tools.schemas import json_schemas, main

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
EVIDENCE = [{"feature": "amount", "test": "ks", "statistic": 0.3, "threshold": 0.1, "p_value": float("nan"),
             "effect_size": np.float64(0.8), "window": 500, "reference": {"bins": np.arange(3)}}]


def test_committed_schemas_are_the_generated_ones() -> None:
    generated = json_schemas()
    stale = [name for name, text in generated.items()
             if not (SCHEMAS / name).exists() or (SCHEMAS / name).read_text() != text]
    assert stale == [], f"run `python -m stream.tools.schemas` to regenerate {stale}"
    assert main(["--check", str(SCHEMAS)]) == 0


def test_the_check_reports_a_stale_file(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    (tmp_path / "label.schema.json").write_text("{}\n")
    assert main(["--check", str(tmp_path)]) == 1


def samples() -> dict[str, object]:
    rng = np.random.default_rng(5)
    return {
        "prediction": Prediction(event_id="e1", entity_id="u1", score=float(rng.random()), model="fraud",
                                 model_version="1", ingest_ts_ms=1, scored_ts_ms=2),
        "dead-letter": DeadLetterHeaders(reason="not_json", message="x", source_topic="events",
                                         source_partition="0", source_offset="7"),
        "feature-batch": FeatureBatch.from_arrays(
            partition=1, model="fraud", model_version="1", event_ids=["a", "b", "c"],
            ingest_ts_ms=np.array([1, 2, 3]), event_ts=rng.random(3), scores=rng.random(3).astype(np.float32),
            columns={"amount": np.array([1.0, np.nan, 3.0]), "country": np.array(["DE", "FR", "DE"], dtype=object),
                     "channel": CategoryCodes(np.array([0, 2, 1]), ["web", "pos", None])},
            entity_ids=["u1", "u2", "u1"]),
        "label": Label(event_id="e1", label=True, ts=3.0),
        "drift-event": DriftEvent(index=5, kind="data_drift", features=["amount"], evidence=EVIDENCE,
                                  model="fraud", model_version="1", detected_at=1.0),
        "retrain-request": RetrainRequest(schema_version=1, request_id="0" * 32, model="fraud", model_version="1",
                                          reason="data_drift", features=["amount"], evidence=EVIDENCE,
                                          drift_index=5, requested_at=1.0, cooldown_s=3600.0),
        "model-update": ModelUpdate(request_id="0" * 32, model="fraud", model_version="2", decision="promote",
                                    promoted=True, champion_version="1", challenger_version="2",
                                    metrics={"challenger": {"auc": np.float64(0.9)}},
                                    training_window={"rows": 3_000, "event_ts": [1.0, 2.0]}),
        "model-chunk": ModelChunk(model="fraud", model_version="2", file="model.onnx", index=1, count=3,
                                  size=10, sha256="a" * 64, data=b"\x00\xffonnx"),
        "model-states": ModelStates(model="fraud", champion="2", states={"1": "retired", "2": "champion"},
                                    files={"1": "b" * 64, "2": "c" * 64}, reason="promoted", published_at=5.0),
        "labelled-example": LabelledExample(event_id="e1", event_ts=60.0, model="fraud", model_version="1",
                                            inputs=[1.5, 0.0], categories={"channel": "web"}, score=0.2,
                                            label=1.0, labelled_at=61.0),
        "shadow-prediction": ShadowPrediction(event_id="e1", entity_id="c1", score=0.2, model="fraud",
                                              model_version="2", role="shadow", champion_version="1",
                                              champion_score=0.25, ingest_ts_ms=1, scored_ts_ms=2),
        "shadow-verdict": ShadowVerdict(verdict_id="fraud:previous:1:2", model="fraud", role="previous",
                                        model_version="1", champion_version="2", verdict="rollback",
                                        labelled=1_000, reasons=["worse"], primary_metric="log_loss",
                                        metrics={"difference": {"ci_low": np.float64(0.5)}}, decided_at=3.0),
    }


@pytest.mark.parametrize("stem", [name.removesuffix(".schema.json") for name in json_schemas()])
def test_each_encoded_record_matches_its_schema_and_decodes_back(stem: str) -> None:
    record = samples()[stem]
    raw = encode(record)  # type: ignore[arg-type]  # every sample is a Struct
    doc = json.loads(raw)
    jsonschema.validate(doc, json.loads((SCHEMAS / f"{stem}.schema.json").read_text()))
    assert json.loads(encode(decode(raw, type(record)))) == doc  # nothing lost on the way back


def test_numpy_and_nan_become_plain_json() -> None:
    doc = json.loads(encode(samples()["drift-event"]))  # type: ignore[arg-type]
    assert doc["evidence"][0]["p_value"] is None and doc["evidence"][0]["reference"] == {"bins": [0, 1, 2]}
    fb = decode(encode(samples()["feature-batch"]), FeatureBatch)  # type: ignore[arg-type]
    assert fb.column("amount") == [1.0, None, 3.0]


def test_float_columns_are_packed_and_json_arrays_still_read() -> None:
    raw = encode(samples()["feature-batch"])  # type: ignore[arg-type]
    doc = json.loads(raw)
    assert set(doc["columns"]["amount"]) == {"dtype", "b64"} and doc["columns"]["country"] == ["DE", "FR", "DE"]
    doc["columns"]["amount"] = [1.0, None, 3.0]  # a scorer from before packing
    kinds = {"amount": "numeric", "country": "categorical"}
    for fb in (decode(raw, FeatureBatch), decode(json.dumps(doc).encode(), FeatureBatch)):
        cols = fb.monitor_columns(kinds)
        assert np.array_equal(cols["amount"], [1.0, np.nan, 3.0], equal_nan=True)
        assert cols["country"] == ["DE", "FR", "DE"]


def test_category_columns_are_packed_as_a_table_and_codes_and_read_back_as_values() -> None:
    raw = encode(samples()["feature-batch"])  # type: ignore[arg-type]
    doc = json.loads(raw)
    assert doc["columns"]["channel"]["dtype"] == "category" and doc["columns"]["channel"]["values"] == ["web", "pos", None]
    fb = decode(raw, FeatureBatch)
    assert fb.column("channel") == ["web", None, "pos"]
    coded = fb.monitor_columns({"channel": "categorical"})["channel"]
    assert isinstance(coded, CategoryCodes) and coded.tolist() == ["web", None, "pos"] and coded[1] is None
    # a code off its table decodes (its size is right) but no column comes of it: the monitor's
    # error policy dead-letters the batch with this reason
    doc["columns"]["channel"]["values"] = ["web"]
    with pytest.raises(ValueError, match="codes 3 values but has a table of 1"):
        decode(json.dumps(doc).encode(), FeatureBatch).monitor_columns({"channel": "categorical"})
    doc["columns"]["channel"]["b64"] = "AAAAAA=="  # one code for three rows
    with pytest.raises(MessageError, match="3 event ids but 1 packed values of channel"):
        decode(json.dumps(doc).encode(), FeatureBatch)


def test_feature_batches_carry_entity_ids_and_read_without_them() -> None:
    doc = json.loads(encode(samples()["feature-batch"]))  # type: ignore[arg-type]
    assert doc["entity_ids"] == ["u1", "u2", "u1"]
    assert decode(json.dumps({**doc, "entity_ids": None}).encode(), FeatureBatch).entity_ids is None
    old = {k: v for k, v in doc.items() if k != "entity_ids"}  # a scorer from before entity ids
    assert decode(json.dumps(old).encode(), FeatureBatch).entity_ids is None
    with pytest.raises(MessageError, match="3 event ids but 2 entity ids"):
        decode(json.dumps({**doc, "entity_ids": ["u1", "u2"]}).encode(), FeatureBatch)


@pytest.mark.parametrize("b64, says", [
    ("AAAAAAAA8D8=", "3 event ids but 1 packed values of amount"),
    ("AAAA", "a packed column of 3 bytes is not whole float64 values"),
    ("AAA*AAAAAAAA", r"Invalid base64 encoded string - at `\$.columns\[...\].b64`"),  # read as it is parsed
])
def test_a_packed_column_of_the_wrong_size_is_refused_at_decode(b64: str, says: str) -> None:
    doc = json.loads(encode(samples()["feature-batch"]))  # type: ignore[arg-type]
    doc["columns"]["amount"] = {"dtype": "float64", "b64": b64}
    with pytest.raises(MessageError, match=says):
        decode(json.dumps(doc).encode(), FeatureBatch)


@pytest.mark.parametrize("raw, kind, says", [
    (b"", Label, "malformed Label: Input data was truncated"),
    (b"{nope", FeatureBatch, "malformed FeatureBatch: JSON is malformed"),
    (b'{"event_id": 7, "label": 1}', Label, "Expected `str`, got `int` - at `$.event_id`"),
    (b'{"event_id": "a"}', Label, "missing required field `label`"),
    (b'{"partition":0,"model":"m","model_version":"1","event_ids":["a"],"ingest_ts_ms":[1],'
     b'"event_ts":[1.0],"scores":[],"columns":{}}', FeatureBatch, "1 event ids but 0 scores"),
    (b'{"schema_version": 2}', RetrainRequest, "Invalid enum value 2"),
])
def test_bad_bytes_give_one_line_that_says_why(raw: bytes, kind: type, says: str) -> None:
    with pytest.raises(MessageError) as info:
        decode(raw, kind)
    assert isinstance(info.value, StreamError)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_dead_letter_keeps_the_original_bytes_and_headers() -> None:
    dl = DeadLetter(key=b"u1", value=b"\xff\x00raw", reason="too_large", message="m" * 5_000,
                    source_topic="events", source_partition=2, source_offset=10,
                    headers=[("trace", b"t1")], timestamp_ms=99)
    m = dl.to_message()
    assert (m.key, m.value, m.timestamp_ms) == (b"u1", b"\xff\x00raw", 99)
    headers = dict(m.headers or [])
    assert headers["trace"] == b"t1" and len(headers["mlstream.error.message"]) == 1_000
    back = DeadLetter.from_kafka(m.key, m.value, m.headers or [], m.timestamp_ms)
    assert (back.reason, back.source_partition, back.source_offset, back.headers) == ("too_large", 2, 10,
                                                                                       [("trace", b"t1")])


def test_a_category_table_value_that_cannot_be_a_key_reads_as_its_text() -> None:
    """A JSON object in a packed column's table (a producer's bug) is read as its text, as the
    monitor files any such value; merging two batches' tables had raised TypeError."""
    doc = json.loads(encode(samples()["feature-batch"]))  # type: ignore[arg-type]
    doc["columns"]["channel"]["values"] = ["web", {"k": 1}, None]
    coded = decode(json.dumps(doc).encode(), FeatureBatch).monitor_columns({"channel": "categorical"})["channel"]
    both = CategoryCodes.concat([coded, coded])
    assert both.tolist() == ["web", None, "{'k': 1}"] * 2
