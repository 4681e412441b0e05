"""A real Prometheus (Debian package ``prometheus``) scrapes a pipeline running on the embedded
broker with drift injected; then every query of every dashboard panel, and the drift
annotation, must return data through Prometheus's HTTP API. The shipped alert rules are
loaded too, so the alerts dashboard sees the drift alert go pending.

The model's lifecycle runs as well, so its panels have data: a version 2 waits in shadow from
the start and is promoted on live labels after the drift (then guarded), by a trainer scraped
as its own job. The drift's retraining request waits for labels it will not get here
(``min_train_rows``), so the trainer decides "wait" and no other version enters the picture.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import yaml

from stream import TrainingData, train
from stream.examples.simulate import PaymentSimulator
from stream.kafka import ensure_topics, make_producer, start_client
from stream.registry import ModelStore
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from stream.training.trainer import TrainerMetrics
from stream.training.trainer_app import run_trainer
from tests.bad_models import save_version
from tests.helpers import read_topic, stop_process
from tests.sensor_domain import DOMAIN as SENSOR_DOMAIN
from tests.sensor_domain import readings

ROOT = Path(__file__).resolve().parent.parent
DRIFT_AT = 12_000
EVENTS = 30_000
SHADOW_LABELS = 3_000  # compared on the events sent after the drift was detected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(base: str, path: str, **params: Any) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def as_grafana(expr: str, model: str = ".*") -> str:
    """A panel's query as Grafana sends it, with ``$model`` set (every instance)."""
    return (expr.replace("$__rate_interval", "15s").replace("$__interval", "1s")
            .replace("$model", model).replace("$instance", ".*"))


@dataclass
class Prometheus:
    """A real Prometheus (the shipped alert rules loaded) scraping the given jobs every second."""

    proc: subprocess.Popen[bytes]
    base: str
    log: IO[bytes]

    @classmethod
    def start(cls, tmp_path: Path, jobs: dict[str, str]) -> Prometheus:
        exe = shutil.which("prometheus")
        assert exe, "prometheus is missing: run scripts/install-system-deps.sh"
        (tmp_path / "rules.yml").write_text((ROOT / "ops" / "prometheus" / "rules.yml").read_text())
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in jobs.items()],
        }))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen([exe, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
        return cls(proc, f"http://127.0.0.1:{port}", log)

    def scraping(self, job: str = "mlstream") -> bool:
        try:
            r = get(self.base, "/api/v1/query", query=f'up{{job="{job}"}} == 1')
        except OSError:
            return False
        return bool(r["data"]["result"])

    def query_range(self, query: str, start: float) -> list[dict[str, Any]]:
        r = get(self.base, "/api/v1/query_range", query=query, start=start, end=time.time(), step=1)
        assert r["status"] == "success", (query, r)
        return list(r["data"]["result"])

    def query(self, query: str) -> list[dict[str, Any]]:
        r = get(self.base, "/api/v1/query", query=query)
        assert r["status"] == "success", (query, r)
        return list(r["data"]["result"])

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every target and annotation of every dashboard."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        data = json.loads(path.read_text())
        for panel in data["panels"]:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], target["expr"]))
        for ann in data["annotations"]["list"]:
            out.append((path.stem, f"annotation {ann['name']}", ann["expr"]))
    return out


async def test_every_dashboard_query_returns_data(make_settings, start_worker, model_store, tmp_path):
    # store mode: the scorer polls the store the shadow state is written to (no feed publisher here)
    settings = make_settings(monitor={"warmup_rows": 5_000}, scoring={"model_poll_interval_s": 0.2},
                             model_feed={"mode": "store"},
                             trainer={"shadow_labels": SHADOW_LABELS, "guard_labels": 1_000, "bootstrap": 300,
                                      "min_train_rows": 1_000_000})
    await ensure_topics(settings)
    # version 2 (version 1's model under another number) waits in shadow
    save_version(model_store, "2", (model_store / "fraud" / "1" / "model.onnx").read_bytes(), promote=False)
    ModelStore(model_store).set_state("fraud", "2", "shadow", "passed the holdout")
    trainer_port = free_port()
    trainer_metrics = TrainerMetrics()
    stop_trainer = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings.model_copy(update={"metrics_port": trainer_port}),
                                              stop_trainer, metrics=trainer_metrics))
    worker = start_worker(settings, roles=("scorer", "monitor"))
    # Prometheus scrapes the worker's own /metrics endpoint (ephemeral port, reported on start)
    assert await wait_until(lambda: worker.metrics_port is not None or worker.task.done(), 30), \
        "the worker never reported its /metrics port"
    if worker.task.done():
        worker.task.result()
        raise AssertionError("the worker stopped before serving /metrics")
    target = f"{settings.metrics_host}:{worker.metrics_port}"

    prometheus = Prometheus.start(tmp_path, {
        "mlstream": target, "mlstream-trainer": f"{settings.metrics_host}:{trainer_port}"})
    try:
        t0 = time.time()
        assert await wait_until(prometheus.scraping, 60), "Prometheus never scraped the worker"
        sim = PaymentSimulator(seed=21, scenario="mean_shift", drift_at=DRIFT_AT, invalid_rate=0.02)
        sent = await produce(settings, sim, EVENTS, rate=0, label_delay=1_000)
        reg = worker.metrics.registry

        def drifted() -> bool:
            return worker.task.done() or (
                (reg.get_sample_value("mlstream_monitor_rows_total") or 0) >= EVENTS * 0.9
                and sum(s.value for f in reg.collect() if f.name == "mlstream_drift_events"
                        for s in f.samples if s.name.endswith("_total")) > 0)

        assert await wait_until(drifted, 120), "no drift event from the injected mean shift"
        if worker.task.done():
            worker.task.result()
            raise AssertionError("the worker stopped early")

        def decided(decision: str) -> bool:
            return trainer.done() or trainer_metrics.decisions.labels("fraud", decision)._value.get() >= 1

        # the drift's request waits for labels; the shadow is promoted on its live verdict
        assert await wait_until(lambda: decided("wait"), 60), "the trainer never answered the drift's request"
        # the stream goes on (as traffic does) until the shadow has its labelled events
        for _ in range(10):
            if await wait_until(lambda: decided("promote"), 20):
                break
            sent += await produce(settings, sim, 2_000, rate=0, label_delay=500, start=sent)
        assert await wait_until(lambda: decided("promote"), 30), (
            "the shadow was never promoted: labelled events compared "
            f"{reg.get_sample_value('mlstream_shadow_labelled_events', {'model': 'fraud', 'version': '2', 'role': 'shadow'})}, "
            f"shadow predictions {[(x.labels, x.value) for f in reg.collect() if f.name == 'mlstream_shadow_predictions' for x in f.samples]}, "
            f"decisions {[(x.labels, x.value) for f in trainer_metrics.registry.collect() if f.name == 'mlstream_trainer_decisions' for x in f.samples]}")
        if trainer.done():
            trainer.result()
            raise AssertionError("the trainer stopped early")

        queries = panel_queries()
        assert len(queries) > 20
        missing: list[str] = []

        def all_have_data() -> bool:
            missing.clear()
            for dash, title, expr in queries:
                series = prometheus.query_range(as_grafana(expr), t0)
                if not any(s["values"] for s in series):
                    missing.append(f"{dash} / {title}: {expr}")
            return not missing

        # scrapes and rule evaluations are every second; give them a few rounds to catch up
        await wait_until(all_have_data, 60, poll_s=2.0)
        assert missing == [], "panels without data:\n" + "\n".join(missing)
    finally:
        prometheus.stop()
        stop_trainer.set()
        await asyncio.wait_for(trainer, 60)
        await worker.close()


async def test_a_regression_models_panels_speak_its_unit(make_settings, start_worker, tmp_path):
    """The sensor domain's power model (kW): its score heatmap has the card's kW edges, its loss
    panel shows MAE and RMSE in kW, and no panel shows it a classifier's AUC or log loss."""
    store = ModelStore(tmp_path / "store")
    events, power = readings(3_000, seed=1)
    card = train(SENSOR_DOMAIN, TrainingData(events, power), store, name="power", seed=0, warmup=100)
    settings = make_settings(domain="tests.sensor_domain:DOMAIN", model_name="power", model_store=tmp_path / "store",
                             monitor={"warmup_rows": 500})
    await ensure_topics(settings)
    worker = start_worker(settings, roles=("scorer", "monitor"))
    assert await wait_until(lambda: worker.metrics_port is not None or worker.task.done(), 30)
    if worker.task.done():
        worker.task.result()
    prometheus = Prometheus.start(tmp_path, {"mlstream": f"{settings.metrics_host}:{worker.metrics_port}"})
    try:
        t0 = time.time()
        assert await wait_until(prometheus.scraping, 60), "Prometheus never scraped the worker"
        live, truth = readings(2_000, seed=2)
        producer = make_producer(settings)
        await start_client(producer, settings.kafka.bootstrap_servers)
        try:
            for e in live:
                await producer.send(settings.topics.events, orjson.dumps(e), key=e["sensor_id"].encode())
            for e, y in zip(live, truth, strict=True):
                await producer.send(settings.topics.labels, orjson.dumps({"event_id": e["reading_id"], "label": float(y)}),
                                    key=e["sensor_id"].encode())
        finally:
            await producer.stop()
        loss_expr = next(expr for dash, title, expr in panel_queries() if title == "Loss (labelled)")

        def losses() -> dict[str, float]:
            return {s["metric"]["metric"]: float(s["value"][1])
                    for s in prometheus.query(as_grafana(loss_expr, "power"))}

        assert await wait_until(lambda: worker.task.done() or set(losses()) == {"mae", "rmse"}, 90, poll_s=1.0), \
            f"the loss panel never showed MAE and RMSE: {losses()}"
        got = losses()
        # the live readings' noise is 2 kW (sd): errors in kW, not in probability units
        assert 0.5 < got["mae"] < 5 and got["mae"] <= got["rmse"] < 7, got

        # the heatmap's rows are the card's kW edges, and its median is the live scores' median
        heat_expr = next(expr for dash, title, expr in panel_queries() if title == "Score distribution")
        heatmap = lambda: prometheus.query_range(as_grafana(heat_expr, "power"), t0)
        # increase() needs two scrapes of the score buckets, which the loss panel does not
        assert await wait_until(lambda: worker.task.done() or heatmap(), 60, poll_s=1.0), "the heatmap never had rows"
        rows = heatmap()
        edges = sorted(float(s["metric"]["le"]) for s in rows if s["metric"]["le"] != "+Inf")
        assert len(edges) >= 5 and edges[0] > 1.0 and edges[-1] < 500, edges
        preds = await read_topic(settings, settings.topics.predictions)
        scores = [orjson.loads(r.value)["score"] for r in preds]
        assert len(scores) == len(live)
        median = prometheus.query('histogram_quantile(0.5, sum by (le) (mlstream_score_bucket{model="power"}))')
        est = float(median[0]["value"][1])
        # buckets are quantile edges: linear interpolation inside one lands within its width
        true_median = float(np.median(scores))
        width = next(b - a for a, b in zip([0.0, *edges], edges, strict=False) if b >= true_median)
        assert abs(est - true_median) <= width, (est, true_median, edges)

        # no panel shows the regression model a classifier's metric
        classifier_only = {"auc", "log_loss", "precision", "recall", "accuracy"}
        for dash, title, expr in panel_queries():
            if "$model" in expr:
                shown = {s["metric"].get("metric") for s in prometheus.query_range(as_grafana(expr, "power"), t0)}
                assert not shown & classifier_only, (dash, title, shown)
        assert card["task"] == "regression"
    finally:
        prometheus.stop()
