"""docs/metrics.md lists exactly the metrics a running pipeline exports, with their labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream.examples.simulate import PaymentSimulator
from stream.tools.tally import wait_until
from stream.tools.traffic import produce

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
ROW = re.compile(r"^\|\s*`(mlstream_\w+)`\s*\|\s*(\w+)\s*\|\s*([^|]*)\|", re.M)


def documented(trainer: bool = False) -> dict[str, tuple[str, set[str]]]:
    """The worker table, or (``trainer``) the trainer's ``mlstream_trainer_*`` table."""
    rows = ROW.findall(DOC.read_text())
    assert len(rows) == len({r[0] for r in rows}), "a metric is documented twice"
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
            if name.startswith("mlstream_trainer_") == trainer}


def test_documented_trainer_metrics_equal_the_exported_ones():
    from stream.training.trainer import TrainerMetrics

    got = {k: v for k, v in exported(TrainerMetrics().registry).items() if k.startswith("mlstream_trainer_")}
    doc = documented(trainer=True)
    assert sorted(doc) == sorted(got)
    for name, (kind, labels) in got.items():
        assert doc[name][0] == kind and labels <= doc[name][1], name


def exported(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """Name as scraped (counters with ``_total``), type and label names, per family."""
    out: dict[str, tuple[str, set[str]]] = {}
    for fam in registry.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels: set[str] = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le"}
        out[name] = (fam.type, labels)
    return out


async def test_documented_metrics_equal_the_exported_ones(settings, start_worker):
    worker = start_worker(settings, roles=("scorer", "monitor"))
    sim = PaymentSimulator(seed=3, invalid_rate=0.02)
    await produce(settings, sim, 6_000, rate=0, label_delay=500)
    reg = worker.metrics.registry

    def ready() -> bool:
        if worker.task.done():
            return True  # failed: reported below
        names = {f.name for f in reg.collect() if f.samples}
        return {"mlstream_drift_statistic", "mlstream_model_performance_ratio"} <= names and (
            reg.get_sample_value("mlstream_labels_total", {"outcome": "matched"}) or 0) > 0

    assert await wait_until(ready, 90), (
        "the monitor exported no drift or performance metrics: "
        f"{sorted(f.name for f in reg.collect() if f.samples and 'drift' in f.name or 'perf' in f.name)}, "
        f"labels {[(s.labels, s.value) for f in reg.collect() if f.name == 'mlstream_labels' for s in f.samples]}, "
        f"rows {reg.get_sample_value('mlstream_monitor_rows_total')}")
    if worker.task.done():
        worker.task.result()  # the worker's own error
        raise AssertionError("the worker stopped early")
    got = exported(reg)
    doc = documented()
    assert sorted(doc) == sorted(got), "docs/metrics.md and the exported metrics differ"
    for name, (kind, labels) in got.items():
        if labels:  # a family with no sample yet shows no labels; the doc still lists them
            assert doc[name] == (kind, labels), name
        else:
            assert doc[name][0] == kind, name
