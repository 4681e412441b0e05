"""`mlstream report`: the HTML opens in headless Chromium with every plot drawn, no console error and
no network request, from a recorded stream and from a live deployment's topics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest

from stream.examples.payments import DOMAIN
from stream.examples.simulate import WARMUP_EVENTS, PaymentSimulator
from stream.reporting.report import main, report_from_topics
from stream.reporting.report_html import write_report
from stream.registry import ModelStore
from stream.scoring.model import load_model
from tests.browser import chromium, open_page

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "models" / "fraud" / "1" / "card.json"
EVENTS = 20_000
MONITORED = len(DOMAIN.features.monitored) + 1  # and the score
# per monitored column a drift plot and a distribution, a multivariate drift plot, performance, timeline
PLOTS = 2 * MONITORED + 3

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (scripts/install-system-deps.sh)")

# Resolves once every plot container holds plotly's SVG with at least one drawn trace (or times out).
CHECK = """
new Promise((resolve) => {
  const t0 = Date.now();
  const look = () => {
    const plots = [...document.querySelectorAll('.plot')].map((d) => ({
      id: d.id,
      svg: d.querySelectorAll('svg.main-svg').length,
      traces: d.querySelectorAll('g.trace, g.point, path.point').length,
      height: d.getBoundingClientRect().height,
    }));
    const done = plots.length > 0 && plots.every((p) => p.svg > 0 && p.traces > 0);
    const summary = document.getElementById('summary').innerText;
    if (done || typeof Plotly === 'undefined' || Date.now() - t0 > 20000) resolve({plots, summary});
    else setTimeout(look, 100);
  };
  look();
})
"""


def feature_rows(path: Path, scenario: str) -> Path:
    """Monitored features, score and label per event, as a deployment's feature batches hold them."""
    sim = PaymentSimulator(seed=5, scenario=scenario, drift_at=WARMUP_EVENTS + (EVENTS - WARMUP_EVENTS) // 2)
    items = list(sim.events(EVENTS))
    events = [orjson.loads(i.value) for i in items]
    X = DOMAIN.offline_features(events)
    cols = DOMAIN.monitored_columns(DOMAIN.columns(events), X)
    cols["score"] = load_model(ModelStore(ROOT / "models"), "fraud", DOMAIN.features.columns).predict(X)
    with path.open("w") as fh:
        for i in range(WARMUP_EVENTS, EVENTS):
            row = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in cols.items()}
            fh.write(json.dumps({**row, "label": float(items[i].label or 0)}) + "\n")
    return path


async def assert_renders(html: Path, screenshot: Path, min_plots: int) -> dict:
    page = await open_page(html, screenshot, CHECK)
    assert page.errors == []
    assert [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))] == []  # offline
    plots = page.checked["plots"]
    assert len(plots) >= min_plots
    empty = [p["id"] for p in plots if not (p["svg"] and p["traces"] and p["height"] > 100)]
    assert empty == [], f"plots without a drawn trace: {empty}"
    assert screenshot.stat().st_size > 100_000  # a blank page is a few KB
    return page.checked


async def test_report_from_a_recorded_stream_opens_in_chromium(tmp_path: Path, capsys) -> None:
    rows = feature_rows(tmp_path / "rows.jsonl", "mean_shift")
    html = tmp_path / "report.html"
    assert main(["--events", str(rows), "--model-card", str(CARD), "--output", str(html)]) == 0
    out = capsys.readouterr().out
    assert "12,000 rows, model fraud version 1" in out and "drift opened on log_amount" in out
    text = html.read_text()
    assert "<script src" not in text and "cdn" not in text.lower().split("plotly.js v")[0]
    checked = await assert_renders(html, tmp_path / "report.png", min_plots=PLOTS)
    assert "drift opened on log_amount" in checked["summary"]
    ids = [p["id"] for p in checked["plots"]]
    assert "performance" in ids and "timeline" in ids


def test_report_from_raw_events_equals_the_one_from_feature_rows(tmp_path: Path, capsys) -> None:
    """A recording of the events topic: features and scores computed with the scorer's code first."""
    sim = PaymentSimulator(seed=5, scenario="mean_shift", drift_at=WARMUP_EVENTS + (EVENTS - WARMUP_EVENTS) // 2)
    raw = tmp_path / "events.jsonl"
    with raw.open("w") as fh:
        for item in sim.events(EVENTS):
            fh.write(json.dumps({**orjson.loads(item.value), "label": int(item.label or 0)}) + "\n")
        fh.write('{"event_id": "bad"}\n')  # fails the schema: left out, counted
    assert main(["--events", str(raw), "--model-card", str(CARD), "--warmup", str(WARMUP_EVENTS),
                 "--output", str(tmp_path / "raw.html")]) == 0
    from_raw = capsys.readouterr().out.splitlines()
    assert main(["--events", str(feature_rows(tmp_path / "rows.jsonl", "mean_shift")), "--model-card", str(CARD),
                 "--output", str(tmp_path / "rows.html")]) == 0
    from_rows = capsys.readouterr().out.splitlines()
    assert from_raw[:-1] == from_rows[:-1] and any(line.startswith("drift opened on log_amount") for line in from_raw)
    assert "1 events failed the schema" in (tmp_path / "raw.html").read_text()


async def test_the_browser_check_fails_on_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><ul id='summary'></ul><div class='plot' id='p'></div>"
                    "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    with pytest.raises(AssertionError):
        await assert_renders(page, tmp_path / "broken.png", min_plots=1)
    result = await open_page(page, tmp_path / "broken.png", "1")
    assert any("boom" in e for e in result.errors) and any("undefinedFunction" in e for e in result.errors)


async def test_report_from_a_live_deployment(make_settings, start_worker, tmp_path: Path) -> None:
    from stream.kafka import ensure_topics, make_producer, start_client
    from stream.tools.tally import wait_until
    from stream.messages import ModelUpdate, encode
    from tests.helpers import read_topic
    from stream.tools.traffic import produce

    settings = make_settings(monitor={"warmup_rows": WARMUP_EVENTS},
                             topics={"model_updates": f"t{tmp_path.name}.updates"})
    await ensure_topics(settings)
    worker = start_worker(settings)
    sim = PaymentSimulator(seed=21, scenario="mean_shift", drift_at=WARMUP_EVENTS + 6_000)
    await produce(settings, sim, EVENTS, rate=0, label_delay=500)
    rows = lambda: worker.metrics.registry.get_sample_value("mlstream_monitor_rows_total") or 0
    assert await wait_until(lambda: rows() >= EVENTS, 120)
    requests = lambda: worker.metrics.registry.get_sample_value("mlstream_retrain_requests_total") or 0
    assert await wait_until(lambda: requests() >= 1, 15)

    # the trainer's answer, as `mlstream trainer` publishes it (its own test runs the real one)
    request = orjson.loads((await read_topic(settings, settings.topics.retrain))[0].value)
    update = ModelUpdate(request_id=request["request_id"], model="fraud", model_version="2", decision="promote",
                         promoted=True, champion_version="1", challenger_version="2",
                         reason="holdout log loss 0.0400 vs champion 0.0500")
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    try:
        await producer.send_and_wait(settings.topics.model_updates, encode(update))
    finally:
        await producer.stop()

    data = await asyncio.to_thread(report_from_topics, settings, model_version=None, max_rows=50_000, timeout=60)
    assert data.rows == EVENTS - WARMUP_EVENTS
    assert "log_amount" in data.summary()["drift_openings"]
    lanes = {t["lane"]: t for t in data.timeline}
    assert {"serving version", "drift alert (deployment)", "retraining requested", "challenger promoted"} <= set(lanes)
    # the report runs the deployment's monitor code on the same rows: the same drift events
    published = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.drift)]
    assert sorted((d["index"], d["kind"], d["features"]) for d in published) == \
        sorted((e["index"], e["kind"], e["features"]) for e in data.events)
    # the promotion answers the request: drawn at the row of the drift that asked for it
    assert lanes["challenger promoted"]["index"] == lanes["retraining requested"]["index"] == request["drift_index"]
    assert data.performance["labelled"]["roc_auc"] and data.performance["estimated"]["roc_auc"]
    # bounded: only the newest rows, the deployment's alerts then placed by time
    newest = await asyncio.to_thread(report_from_topics, settings, model_version=None, max_rows=5_000, timeout=60)
    assert 5_000 <= newest.rows < 5_000 + settings.scoring.max_batch_size and "--max-rows" in newest.notes[-1]
    html = write_report(data, tmp_path / "live.html")
    await assert_renders(html, tmp_path / "live.png", min_plots=PLOTS)


def test_report_from_rows_and_a_reference_file(tmp_path: Path, capsys) -> None:
    """``--events`` with ``--reference`` (no model card): the report reads the rows as replay does, the
    label left out of the features and the clock taken as the event time, not tested as a feature
    (before, this path stopped with an AttributeError)."""
    from stream.examples.traffic import write_jsonl

    ref, live = tmp_path / "ref.jsonl", tmp_path / "live.jsonl"
    write_jsonl("mixed", 20_000, str(ref), seed=10_003, iid=True)
    write_jsonl("mixed", 20_000, str(live), seed=3)
    out = tmp_path / "ref.html"
    assert main(["--events", str(live), "--reference", str(ref), "--label-field", "error",
                 "--output", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "20,000 rows" in summary and "No drift detected" in summary
    page = out.read_text()
    assert "ts holds times: taken as the event time" in page
