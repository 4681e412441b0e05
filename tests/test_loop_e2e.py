"""The whole loop on the embedded broker, the trainer reading only the stream: concept drift,
detection, a request dated at the onset, a challenger fitted on the labelled examples the label
join wrote, promoted on the holdout, served, and credited with its own labels."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson

from stream.examples.payments import DOMAIN
from stream.examples.simulate import WARMUP_EVENTS, PaymentSimulator
from stream.kafka import ensure_topics
from stream.registry import ModelStore
from stream.scoring.model import load_model
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from stream.training.trainer import TrainerMetrics
from stream.training.trainer_app import run_trainer
from tests.helpers import read_topic

DRIFT_AT = 8_000


def diagnosis(*registries) -> list[tuple[str, dict[str, str], float]]:
    """Where the loop stalled, when it did: the worker's and the trainer's counters that say how
    far the rows got (scored, monitored, labelled, drifting, requested, decided)."""
    wanted = ("mlstream_events", "mlstream_predictions_total", "mlstream_monitor_rows", "mlstream_label",
              "mlstream_labelled", "mlstream_processing_errors", "mlstream_drift_state", "mlstream_drift_warming",
              "mlstream_model_performance_drifting", "mlstream_trainer", "mlstream_monitor_active")
    return [(s.name, s.labels, s.value) for r in registries for f in r.collect() for s in f.samples
            if s.name.startswith(wanted) and not s.name.endswith("_created")][:80]


async def test_the_loop_learns_concept_drift_from_the_stream(make_settings, model_store, start_worker):
    settings = make_settings(
        monitor={"warmup_rows": WARMUP_EVENTS},
        trainer={"holdout_rows": 2_500, "min_holdout": 2_000, "min_train_rows": 3_000,
                 "retry_interval_s": 2.0, "bootstrap": 300})
    await ensure_topics(settings)
    worker = start_worker(settings, roles=("scorer", "monitor"))
    metrics = TrainerMetrics()
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop, metrics=metrics))
    try:
        sim = PaymentSimulator(seed=11, scenario="concept_drift", drift_at=DRIFT_AT)
        await produce(settings, sim, 20_000, rate=0, label_delay=500)
        sent = 20_000
        promoted = lambda: metrics.decisions.labels("fraud", "promote")._value.get() >= 1  # noqa: E731
        for _ in range(6):  # the stream goes on while the trainer waits for post-onset labels
            if await wait_until(lambda: promoted() or trainer.done() or worker.task.done(), 40):
                break
            await produce(settings, sim, 2_000, rate=0, label_delay=500, start=sent)
            sent += 2_000
        updates = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.model_updates)]
        requests = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.retrain)]
        assert not worker.task.done(), f"the worker stopped: {worker.task.exception()!r}"
        assert promoted(), (
            [(r["reason"], r.get("onset_event_ts"), r["drift_index"], [e.get("window") for e in r["evidence"]]) for r in requests],
            diagnosis(worker.metrics.registry, metrics.registry))
        update = updates[-1]
        assert update["decision"] == "promote" and update["challenger_version"] == "2", update["reasons"]
        requests = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.retrain)]
        onset = requests[0]["onset_event_ts"]
        assert onset is not None, [(r["reason"], r["drift_index"], [(e.get("window"), e.get("feature")) for e in r["evidence"]]) for r in requests]
        assert update["training_window"]["event_ts"][0] >= onset
        assert update["training_window"]["rows"] >= 3_000
        assert update["metrics"]["difference"]["ci_high"] < 0
        store = ModelStore(model_store)
        assert store.current_version("fraud") == "2" and store.state("fraud", "2") == "champion"
        assert store.state("fraud", "1") == "retired"

        # the examples are the inputs exactly as scored: the champion reproduces each score
        examples = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.labelled_examples)]
        assert len(examples) >= update["training_window"]["rows"] + update["holdout_window"]["rows"]
        predictions = {p["event_id"]: p for p in
                       (orjson.loads(r.value) for r in await read_topic(settings, settings.topics.predictions))}
        v1 = [e for e in examples if e["model_version"] == "1"][:2_000]
        champion = load_model(store, "fraud", DOMAIN.features.columns, "1")
        again = champion.predict(np.array([e["inputs"] for e in v1], dtype=np.float32))
        assert np.allclose(again, [e["score"] for e in v1], atol=1e-6)
        assert all(predictions[e["event_id"]]["score"] == e["score"] for e in v1)
        reg = worker.metrics.registry
        # the monitor's counters reach this registry a moment after its records reach the topic
        counted = lambda: reg.get_sample_value("mlstream_labelled_examples_total") == len(examples)  # noqa: E731
        assert await wait_until(counted, 30), (reg.get_sample_value("mlstream_labelled_examples_total"), len(examples))
        assert 0.5 < reg.get_sample_value("mlstream_label_coverage_ratio") <= 1.0

        # the new champion serves (once the scorer has swapped it in); its labels are credited to
        # it, the retired version stops exporting
        swapped = lambda: (reg.get_sample_value("mlstream_model_loads_total", {"outcome": "swap_ok"}) or 0) >= 1  # noqa: E731
        assert await wait_until(swapped, 60), "the scorer never swapped in the promoted version"
        await produce(settings, sim, 4_000, rate=0, label_delay=500, start=sent)

        def v2_performance() -> float | None:
            return reg.get_sample_value("mlstream_model_performance_ratio", {"model": "fraud", "version": "2", "metric": "auc"})

        assert await wait_until(lambda: v2_performance() is not None, 120), (
            [(s.labels, s.value) for f in reg.collect() if f.name in ("mlstream_predictions", "mlstream_model_loads")
             for s in f.samples if s.name.endswith("_total")],
            [(s.labels, s.value) for f in reg.collect() if f.name == "mlstream_model_performance_ratio" for s in f.samples][:3])
        assert reg.get_sample_value("mlstream_model_performance_ratio",
                                    {"model": "fraud", "version": "1", "metric": "auc"}) is None
        later = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.labelled_examples)]
        assert {e["model_version"] for e in later[len(examples):]} <= {"1", "2"}
        assert any(e["model_version"] == "2" for e in later)
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)
