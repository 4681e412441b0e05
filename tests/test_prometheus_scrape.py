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
from pathlib import Path
from typing import Any

import yaml

from stream.kafka import ensure_topics
from stream.examples.simulate import PaymentSimulator
from stream.registry import ModelStore
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from stream.training.trainer import TrainerMetrics, run_trainer
from tests.bad_models import save_version
from tests.helpers import stop_process

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
    exe = shutil.which("prometheus")
    assert exe, "prometheus is missing: run scripts/install-system-deps.sh"
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

    (tmp_path / "rules.yml").write_text((ROOT / "ops" / "prometheus" / "rules.yml").read_text())
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [{"job_name": "mlstream", "static_configs": [{"targets": [target]}]},
                           {"job_name": "mlstream-trainer", "static_configs": [
                               {"targets": [f"{settings.metrics_host}:{trainer_port}"]}]}],
    }))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([exe, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()

        def scraping() -> bool:
            try:
                r = get(base, "/api/v1/query", query='up{job="mlstream"} == 1')
            except OSError:
                return False
            return bool(r["data"]["result"])

        assert await wait_until(scraping, 60), "Prometheus never scraped the worker"
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
                # Grafana's interpolation with every variable at "All"
                q = (expr.replace("$__rate_interval", "15s").replace("$__interval", "1s")
                     .replace("$model", ".*").replace("$instance", ".*"))
                r = get(base, "/api/v1/query_range", query=q, start=t0, end=time.time(), step=1)
                assert r["status"] == "success", (dash, title, r)
                if not any(series["values"] for series in r["data"]["result"]):
                    missing.append(f"{dash} / {title}: {expr}")
            return not missing

        # scrapes and rule evaluations are every second; give them a few rounds to catch up
        await wait_until(all_have_data, 60, poll_s=2.0)
        assert missing == [], "panels without data:\n" + "\n".join(missing)
    finally:
        stop_process(proc)
        log.close()
        stop_trainer.set()
        await asyncio.wait_for(trainer, 60)
        await worker.close()
