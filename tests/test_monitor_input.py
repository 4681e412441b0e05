"""The monitor reads the scorer's feature batches and users' labels through the message records:
a bad message is counted in mlstream_processing_errors_total{stage="monitor"} and skipped, the
good ones around it are monitored, and nothing stops the worker. No broker needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import TopicPartition

from stream.config import Settings
from stream.examples.payments import DOMAIN
from stream.examples.simulate import PaymentSimulator, label_record
from stream.metrics import Metrics
from stream.monitoring.worker import MonitorWorker
from stream.registry import ModelStore
from stream.scoring.feature_rows import encode_batches
from stream.scoring.model import load_model
from stream.scoring.pipeline import BatchScorer
from stream.scoring.state import EntityStore


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 1_750_000_000_000
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def feature_batches(model_store: Path, n: int) -> tuple[list[bytes], list[str]]:
    """Real feature-batch messages from the scorer, and the event ids they carry."""
    model = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns)
    items = list(PaymentSimulator(seed=11, invalid_rate=0.0).events(n))
    records = [Rec("events", 0, i, it.key, it.value) for i, it in enumerate(items)]
    scorer = BatchScorer(DOMAIN, model, Metrics.create())
    stores = {0: EntityStore(DOMAIN.features.state_width)}
    half = n // 2
    out = [scorer.process({0: chunk}, stores, now=1_750_000_000.0).partitions[0].features
           for chunk in (records[:half], records[half:])]
    return [b for rows in out if rows is not None for b in encode_batches(0, [rows], half)], \
        [str(it.event_id) for it in items]


def test_bad_feature_batches_and_labels_are_counted_and_skipped(model_store: Path) -> None:
    metrics = Metrics.create()
    worker = MonitorWorker(Settings(model_store=model_store), metrics)
    (first, second), ids = feature_batches(model_store, 400)
    bad_batches = [b"{not json", b"", b'{"model": "fraud"}',  # not JSON, empty, fields missing
                   first.replace(b'"event_ids":["', b'"event_ids":["extra","', 1)]  # lengths differ
    tp = TopicPartition("features", 0)
    worker.merger.track(tp, 0.0)
    values = [first, *bad_batches, second]
    worker.hold({tp: [Rec("features", 0, i, None, v) for i, v in enumerate(values)]}, now=0.0)
    errors = lambda: metrics.registry.get_sample_value(
        "mlstream_processing_errors_total", {"stage": "monitor"})
    assert errors() == len(bad_batches)

    labels = [label_record(ids[0], 1, 0.0), b'{"event_id": "x"}', b"\xff", label_record(ids[1], 0, 0.0),
              b'{"event_id": "' + ids[2].encode() + b'", "label": true}']
    released, offsets = worker.merger.release(now=10.0)
    drift, retrain = worker.handle(released, [Rec("labels", 0, i, None, v) for i, v in enumerate(labels)],
                                   now=10.0)
    assert errors() == len(bad_batches) + 2
    assert metrics.registry.get_sample_value("mlstream_monitor_rows_total") == 400  # both good batches
    assert metrics.registry.get_sample_value("mlstream_labels_total", {"outcome": "matched"}) == 3
    assert offsets[tp] == len(values)  # the bad ones are committed with the rest, never replayed
    assert drift == [] and retrain == []


def test_the_scorers_entity_ids_reach_the_drift_monitor(model_store: Path) -> None:
    """Feature batches carry each row's entity (the event's key): the monitor caps one entity's
    rows in the category shares, and takes rows of a scorer that sent none as entity-less."""
    from stream.messages import FeatureBatch, decode, encode

    worker = MonitorWorker(Settings(model_store=model_store), Metrics.create())
    (first, second), _ = feature_batches(model_store, 400)
    fb = decode(first, FeatureBatch)
    assert fb.entity_ids is not None and len(fb.entity_ids) == len(fb.event_ids)
    heavy = encode(FeatureBatch(**{**{f: getattr(fb, f) for f in fb.__struct_fields__},
                                   "entity_ids": ["one-heavy-user"] * len(fb.event_ids)}))
    tp = TopicPartition("features", 0)
    worker.merger.track(tp, 0.0)
    worker.hold({tp: [Rec("features", 0, 0, None, heavy), Rec("features", 0, 1, None, second)]}, now=0.0)
    released, _ = worker.merger.release(now=10.0)
    worker.handle(released, [], now=10.0)
    mon = worker.monitors["fraud:1"].drift
    # the heavy user's rows past the first 3 of the window, plus the simulated users' own repeats
    assert mon.entity_cap is not None and len(fb.event_ids) - 3 <= mon.entity_cap.capped < len(fb.event_ids) + 20
    from stream.monitoring.exporter import DriftCollector

    ratio = [s.value for f in DriftCollector(worker).collect() for s in f.samples
             if s.name == "mlstream_drift_entity_capped_ratio"]
    # counted as the monitor's blocks are processed (400 rows: all of them)
    assert mon.capped_rows() == (mon.entity_cap.capped, mon.entity_cap.rows) == (mon.entity_cap.capped, 400)
    assert ratio == [mon.entity_cap.capped / mon.entity_cap.rows] and 0.4 < ratio[0] < 0.6  # 200 of 400 rows


def test_a_batchs_inputs_are_read_when_a_label_joins_and_a_broken_one_costs_only_its_examples(
        model_store: Path) -> None:
    """The model inputs a feature batch carries are decoded only for a row a label joins (most
    never do): inputs of the wrong size still fail the batch at once; inputs whose base64 is broken
    cost the labelled examples of that batch (counted), not its monitoring nor the other batches'."""
    from stream.messages import FeatureBatch, decode, encode

    metrics = Metrics.create()
    worker = MonitorWorker(Settings(model_store=model_store), metrics)
    (first, second), ids = feature_batches(model_store, 400)
    fb = decode(first, FeatureBatch)
    assert fb.inputs is not None
    fields = {f: getattr(fb, f) for f in fb.__struct_fields__}
    broken = encode(FeatureBatch(**{**fields, "inputs": type(fb.inputs)(shape=fb.inputs.shape,
                                                                       b64="*" + fb.inputs.b64[1:])}))
    short = encode(FeatureBatch(**{**fields, "inputs": type(fb.inputs)(shape=fb.inputs.shape,
                                                                      b64=fb.inputs.b64[:-8])}))
    tp = TopicPartition("features", 0)
    worker.merger.track(tp, 0.0)
    worker.hold({tp: [Rec("features", 0, i, None, v) for i, v in enumerate([broken, short, second])]}, now=0.0)
    errors = lambda: metrics.registry.get_sample_value("mlstream_processing_errors_total", {"stage": "monitor"})
    assert errors() == 1  # the short inputs: the batch is set aside at decode
    labels = [label_record(ids[0], 1, 0.0), label_record(ids[1], 0, 0.0), label_record(ids[-1], 1, 0.0)]
    released, _ = worker.merger.release(now=10.0)
    worker.handle(released, [Rec("labels", 0, i, None, v) for i, v in enumerate(labels)], now=10.0)
    assert metrics.registry.get_sample_value("mlstream_monitor_rows_total") == 400  # broken inputs: still monitored
    assert metrics.registry.get_sample_value("mlstream_labels_total", {"outcome": "matched"}) == 3
    assert errors() == 1 + 2  # the two examples of the broken batch
    examples = [orjson.loads(m.value) for m in worker.examples_out]
    assert [e["event_id"] for e in examples] == [ids[-1]] and len(examples[0]["inputs"]) == fb.inputs.shape[1]


def test_an_ingest_time_from_the_future_does_not_pin_the_serving_version(model_store: Path) -> None:
    """The version serving now is the one that scored the newest ingest time; one batch stamped in
    the far future (no broker gives it) had held that place for good, so the labelled performance of
    every later version went unexported."""
    from stream.messages import FeatureBatch, decode, encode

    worker = MonitorWorker(Settings(model_store=model_store), Metrics.create())
    (first, second), _ = feature_batches(model_store, 400)
    fb = decode(first, FeatureBatch)
    future = encode(FeatureBatch(**{**{f: getattr(fb, f) for f in fb.__struct_fields__},
                                    "ingest_ts_ms": [9_000_000_000_000_000_000] * len(fb.event_ids)}))
    tp = TopicPartition("features", 0)
    worker.merger.track(tp, 0.0)
    worker.hold({tp: [Rec("features", 0, 0, None, future), Rec("features", 0, 1, None, second)]}, now=0.0)
    newest, version = worker.serving["fraud"]
    assert version == "1" and newest == max(decode(second, FeatureBatch).ingest_ts_ms)
