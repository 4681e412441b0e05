"""Shadow, then promotion; the guard after a promotion, with automatic rollback.

End to end on the embedded broker (scorer, monitor and trainer as a user runs them), asserted
from what a user observes: the topics, the registry, the metrics and Slack. The pure parts
(live verdicts, the registry's shadow and guard, a shadow that fails) without a broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from stream.config import Settings
from stream.examples.payments import DOMAIN
from stream.examples.simulate import PaymentSimulator
from stream.feed_publish import publish
from stream.kafka import ensure_topics
from stream.messages import ShadowPrediction, ShadowVerdict, decode
from stream.metrics import Metrics
from stream.monitoring.shadow import ShadowComparator
from stream.registry import ModelStore
from stream.scoring.canary import Canary, in_canary
from stream.scoring.model import load_model
from stream.scoring.pipeline import BatchScorer
from stream.scoring.shadow import ShadowScorer
from stream.scoring.state import EntityStore
from stream.tools.tally import read_all, wait_until
from stream.tools.traffic import produce
from stream.training.trainer import TrainerMetrics
from stream.training.trainer_app import run_trainer
from stream.training.verdicts import act_on_verdict, decide_overdue
from tests.bad_models import inverted_model, save_version
from tests.slack_standin import SlackStandIn


def v1_bytes(model_store: Path) -> bytes:
    return (model_store / "fraud" / "1" / "model.onnx").read_bytes()


# -- without a broker ------------------------------------------------------------------------


def test_the_registry_names_the_shadow_and_guards_each_promotion(model_store):
    store = ModelStore(model_store)
    save_version(model_store, "2", v1_bytes(model_store), promote=False)
    assert store.shadow_version("fraud") is None and store.guarded_version("fraud") is None
    store.set_state("fraud", "2", "shadow", "passed the holdout")
    assert store.shadow_version("fraud") == "2" and store.current_version("fraud") == "1"
    store.promote("fraud", "2")
    assert store.shadow_version("fraud") is None and store.guarded_version("fraud") == "1"
    store.close_guard("fraud")
    assert store.guarded_version("fraud") is None
    save_version(model_store, "3", v1_bytes(model_store))  # promoted: guarded by 2
    assert store.guarded_version("fraud") == "2"
    assert store.rollback("fraud") == "2"
    assert store.guarded_version("fraud") is None and store.state("fraud", "3") == "rejected"


def _verdict(role: str, version: str, champion: str, verdict: str) -> ShadowVerdict:
    return ShadowVerdict(verdict_id=f"fraud:{role}:{version}:{champion}", model="fraud", role=role,  # type: ignore[arg-type]
                         model_version=version, champion_version=champion, verdict=verdict,  # type: ignore[arg-type]
                         labelled=1000, reasons=["numbers"], metrics={"difference": {"mean": 0.1}},
                         primary_metric="log_loss")


def test_the_trainer_acts_on_verdicts_once_and_ignores_stale_ones(model_store):
    store = ModelStore(model_store)
    save_version(model_store, "2", v1_bytes(model_store), promote=False)
    store.set_state("fraud", "2", "shadow")
    assert act_on_verdict(store, _verdict("shadow", "2", "0", "promote")) is None  # another champion
    update = act_on_verdict(store, _verdict("shadow", "2", "1", "promote"))
    assert update is not None and update.decision == "promote" and update.promoted
    assert update.model_version == "2" and update.previous_version == "1" and update.reasons == ["numbers"]
    assert act_on_verdict(store, _verdict("shadow", "2", "1", "promote")) is None  # a repeat
    rollback = act_on_verdict(store, _verdict("previous", "1", "2", "rollback"))
    assert rollback is not None and rollback.decision == "rollback" and rollback.model_version == "1"
    assert store.current_version("fraud") == "1" and store.state("fraud", "2") == "rejected"
    assert act_on_verdict(store, _verdict("previous", "1", "2", "rollback")) is None
    save_version(model_store, "3", v1_bytes(model_store), promote=False)
    store.set_state("fraud", "3", "shadow")
    reject = act_on_verdict(store, _verdict("shadow", "3", "1", "reject"))
    assert reject is not None and reject.decision == "reject" and store.state("fraud", "3") == "rejected"


def test_a_shadow_or_guard_without_a_verdict_is_decided_after_the_timeout(model_store):
    """A comparison the monitor dropped, or too few labels: the shadow is rejected, the guard
    closed, once ``verdict_timeout_s`` has passed since it opened; not before, not at 0."""
    import time

    store = ModelStore(model_store)
    save_version(model_store, "2", v1_bytes(model_store), promote=False)
    store.set_state("fraud", "2", "shadow", "passed the holdout")
    now = time.time()
    assert decide_overdue(store, "fraud", 3_600.0, now + 3_000) == []
    assert decide_overdue(store, "fraud", 0.0, now + 10**6) == []  # 0: wait for ever
    assert store.state("fraud", "2") == "shadow"
    [reject] = decide_overdue(store, "fraud", 3_600.0, now + 3_700)
    assert reject.decision == "reject" and reject.challenger_version == "2" and reject.model_version == "1"
    assert store.state("fraud", "2") == "rejected" and "no live verdict within 3600s" in reject.reason
    assert store.current_version("fraud") == "1"

    save_version(model_store, "3", v1_bytes(model_store))  # promoted: the guard on 1 opens
    assert store.guarded_version("fraud") == "1"
    assert decide_overdue(store, "fraud", 3_600.0, time.time() + 60) == []
    [keep] = decide_overdue(store, "fraud", 3_600.0, time.time() + 3_700)
    assert keep.decision == "keep" and keep.previous_version == "1" and store.guarded_version("fraud") is None
    assert store.current_version("fraud") == "3"
    assert decide_overdue(store, "fraud", 3_600.0, time.time() + 10**6) == []  # decided once


def test_a_shadow_that_raises_or_scores_nan_never_touches_the_champions_outputs(model_store):
    store = ModelStore(model_store)
    metrics = Metrics.create()
    champion = load_model(store, "fraud", DOMAIN.features.columns)
    scorer = BatchScorer(DOMAIN, champion, metrics, max_future_s=86_400)
    sim = PaymentSimulator(seed=4)
    records = [SimpleNamespace(topic="events", partition=0, offset=i, key=item.key, value=item.value,
                               timestamp=1_750_000_000_000, headers=[])
               for i, item in enumerate(sim.events(300))]
    entities = {0: EntityStore(DOMAIN.features.state_width)}
    out = scorer.process({0: records}, entities, now=1_750_000_000.0)
    before = list(out.partitions[0].prediction_values)
    assert len(before) == 300

    settings = Settings(model_store=model_store, scoring={"invalid_score_window": 200})
    shadows = ShadowScorer(store, settings, DOMAIN.features.columns, metrics)
    save_version(model_store, "2", v1_bytes(model_store), promote=False)
    shadows.models["shadow"] = load_model(store, "fraud", DOMAIN.features.columns, "2")
    sent = shadows.score(out)
    rows = [orjson.loads(v) for v in sent[0][1]]
    assert len(rows) == 300 and {r["role"] for r in rows} == {"shadow"}
    assert all(r["score"] == r["champion_score"] for r in rows)  # the same rows, the same model

    def nan(X):
        return np.full(len(X), np.nan)

    def boom(X):
        raise RuntimeError("onnxruntime: index out of bounds")

    # past the load checks (those refuse both at load), broken on live data
    for predict, name in ((nan, "3"), (boom, "4")):
        shadows.models["shadow"] = SimpleNamespace(version=name, card=champion.card, predict=predict)  # type: ignore[assignment]
        assert shadows.score(out) in ({}, {0: ([], [])})
        assert "shadow" not in shadows.models  # dropped: every score of a whole window was bad
        assert out.partitions[0].prediction_values == before
    get = metrics.registry.get_sample_value
    assert get("mlstream_shadow_predictions_total", {"model": "fraud", "version": "3", "role": "shadow",
                                                     "outcome": "invalid"}) == 300
    assert get("mlstream_shadow_predictions_total", {"model": "fraud", "version": "4", "role": "shadow",
                                                     "outcome": "failed"}) == 300


def test_a_canary_serves_a_stable_share_of_entities_with_the_challengers_scores(model_store):
    store = ModelStore(model_store)
    metrics = Metrics.create()
    champion = load_model(store, "fraud", DOMAIN.features.columns)
    save_version(model_store, "2", inverted_model(v1_bytes(model_store)), promote=False)
    challenger = load_model(store, "fraud", DOMAIN.features.columns, "2")
    canary = Canary(0.3)
    scorer = BatchScorer(DOMAIN, champion, metrics, max_future_s=86_400, canary=canary)
    events = list(PaymentSimulator(seed=4).events(600))
    records = [SimpleNamespace(topic="events", partition=0, offset=i, key=item.key, value=item.value,
                               timestamp=1_750_000_000_000, headers=[]) for i, item in enumerate(events)]

    def run(batch):
        out = scorer.process({0: batch}, {0: EntityStore(DOMAIN.features.state_width)}, now=1_750_000_000.0)
        po = out.partitions[0]
        return [orjson.loads(v) for v in po.prediction_values], po

    alone, _ = run(records)  # no challenger yet: the champion serves everyone
    assert {p["model_version"] for p in alone} == {"1"}
    canary.follow(challenger)
    served, po = run(records)
    entities = [p["entity_id"] for p in served]
    chosen = in_canary(entities, "2", 0.3)
    assert 0.15 < chosen.mean() < 0.45
    for p, mine, before, champion_score in zip(served, chosen.tolist(), alone, po.scores.tolist(), strict=True):
        assert p["event_id"] == before["event_id"]
        assert p["model_version"] == ("2" if mine else "1")
        # the inverted challenger's score where it serves; the champion still measured on every row
        assert p["score"] == pytest.approx(1 - champion_score if mine else champion_score, abs=1e-6)
    assert po.scores.tolist() == [p["score"] for p in alone]  # the monitor sees the champion's scores
    get = metrics.registry.get_sample_value
    assert get("mlstream_predictions_total", {"model": "fraud", "version": "2"}) == chosen.sum()
    assert get("mlstream_predictions_total", {"model": "fraud", "version": "1"}) == 2 * 600 - chosen.sum()

    # a challenger that scores NaN or raises on live data: the champion serves its entities
    for predict in (lambda X: np.full(len(X), np.nan), lambda X: 1 / 0):
        canary.follow(SimpleNamespace(version="2", card=champion.card, predict=predict))  # type: ignore[arg-type]
        broken, _ = run(records)
        assert [(p["model_version"], p["score"]) for p in broken] == [("1", p["score"]) for p in alone]
    canary.follow(None)  # rejected or promoted: nobody is served by it any more
    assert {p["model_version"] for p in run(records)[0]} == {"1"}
    with pytest.raises(ValueError, match="canary share"):
        Canary(0.9)


def test_labels_that_reach_the_monitor_before_the_shadows_first_predictions_are_compared():
    comparator = ShadowComparator(Settings(trainer={"shadow_labels": 300, "bootstrap": 100}), Metrics.create(),
                                  task_of=lambda name, version: "classification")
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.3).astype(float)
    ids = [f"e{i}" for i in range(400)]
    comparator.add_labels(ids[:150], y[:150], now=10.0)  # labels faster than the shadow topic
    comparator.add_labels(ids[150:], y[150:], now=11.0)
    comparator.add([ShadowPrediction(event_id=ids[i], entity_id="c", score=0.9 if y[i] else 0.1, model="fraud",
                                     model_version="2", role="shadow", champion_version="1", champion_score=0.5,
                                     ingest_ts_ms=0, scored_ts_ms=0) for i in range(400)], now=12.0)
    [verdict] = comparator.take()
    assert (verdict.verdict, verdict.labelled) == ("promote", 300)


# -- end to end on the embedded broker ------------------------------------------------------


async def drive(settings, sim, sent: int, done, *, chunk: int = 2_000, rounds: int = 8,
                timeout_s: float = 30.0) -> int:
    """Keep the stream going (events with delayed labels) until ``done()``; returns events sent."""
    for _ in range(rounds):
        if await wait_until(done, timeout_s):
            return sent
        await produce(settings, sim, chunk, rate=0, label_delay=500, start=sent)
        sent += chunk
    assert await wait_until(done, timeout_s)
    return sent


async def outputs(settings, sent: int) -> list[dict]:
    """Every prediction, once every event has one (or a dead letter)."""
    got: list = []

    async def all_in() -> bool:
        got[:] = [orjson.loads(r.value) for r in await read_all(settings, settings.topics.predictions)]
        dead = await read_all(settings, settings.topics.dead_letter)
        return len(got) + len(dead) >= sent

    for _ in range(120):  # re-reading the topics until they hold every event's outcome
        if await all_in():
            break
    return got


def decisions(metrics: TrainerMetrics, decision: str) -> float:
    return metrics.decisions.labels("fraud", decision)._value.get()


async def test_a_shadow_is_scored_beside_the_champion_then_promoted_on_live_labels(
        make_settings, model_store, start_worker):
    settings = make_settings(trainer={"shadow_labels": 1_500, "guard_labels": 1_500, "bootstrap": 300},
                             scoring={"model_poll_interval_s": 0.2})
    await ensure_topics(settings)
    store = ModelStore(model_store)
    save_version(model_store, "2", v1_bytes(model_store), promote=False)  # as good as the champion
    store.set_state("fraud", "2", "shadow", "passed the holdout")
    worker = start_worker(settings, roles=("scorer", "monitor"))
    reg = worker.metrics.registry
    metrics = TrainerMetrics()
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop, metrics=metrics))
    try:
        sim = PaymentSimulator(seed=21)
        sent = await produce(settings, sim, 3_000, rate=0, label_delay=500)
        sent = await drive(settings, sim, sent, lambda: decisions(metrics, "promote") >= 1 or trainer.done())
        assert not trainer.done(), trainer.exception()
        swapped = lambda: (reg.get_sample_value("mlstream_model_loads_total", {"outcome": "swap_ok"}) or 0) >= 1
        # the scorer hears of the promotion through the model feed; where it stopped, if it did not
        if not await wait_until(swapped, 60):  # where it stopped, in full (a string is not cut short)
            counted = sorted((x.name, sorted(x.labels.items()), x.value) for m in reg.collect() for x in m.samples
                             if x.name.startswith(("mlstream_model_", "mlstream_shadow_"))
                             and not x.name.endswith("_created") and x.value)
            feed = [(r.offset, r.key, len(r.value or b"")) for r in await read_all(settings, settings.topics.models)]
            registry = model_store / "fraud" / "REGISTRY.json"
            pytest.fail(f"no swap to version 2 within 60 s: current {store.current_version('fraud')}, "
                        f"registry {registry.read_text() if registry.is_file() else '-'}, metrics {counted}, "
                        f"models topic {feed}", pytrace=False)
        # the guard after the promotion: version 1 scored beside 2 until its verdict
        sent = await drive(settings, sim, sent, lambda: decisions(metrics, "keep") >= 1 or trainer.done())
        tail = sent
        sent += await produce(settings, sim, 1_000, rate=0, label_delay=500, start=sent)

        predictions = await outputs(settings, sent)
        ids = [p["event_id"] for p in predictions]
        assert len(ids) == len(set(ids)) == sent  # none lost, none scored twice across the swap
        assert all("role" not in p for p in predictions)
        by_id = {p["event_id"]: p for p in predictions}
        shadow = [orjson.loads(r.value) for r in await read_all(settings, settings.topics.shadow_predictions)]
        as_shadow = [s for s in shadow if s["role"] == "shadow"]
        assert len(as_shadow) >= 1_500 and {s["model_version"] for s in as_shadow} == {"2"}
        # version 2's shadow scores never reached predictions: version 1 served those events
        assert {by_id[s["event_id"]]["model_version"] for s in as_shadow} == {"1"}
        assert all(abs(by_id[s["event_id"]]["score"] - s["champion_score"]) < 1e-12 for s in as_shadow)
        previous = [s for s in shadow if s["role"] == "previous"]
        assert {(s["model_version"], s["champion_version"]) for s in previous} == {("1", "2")}
        assert {by_id[s["event_id"]]["model_version"] for s in previous} == {"2"}
        # later predictions carry the promoted version; after the guard, version 1 stops
        assert {p["model_version"] for p in predictions if int(p["event_id"].rsplit("-", 1)[1]) >= tail} == {"2"}

        updates = [orjson.loads(r.value) for r in await read_all(settings, settings.topics.model_updates)]
        promote = next(u for u in updates if u["decision"] == "promote")
        assert promote["model_version"] == "2" and promote["previous_version"] == "1" and promote["promoted"]
        assert promote["metrics"]["labelled"]["rows"] == 1_500 and promote["primary_metric"] == "log_loss"
        assert promote["reasons"][0].startswith("shadow log loss ")
        keep = next(u for u in updates if u["decision"] == "keep")
        assert keep["model_version"] == "2" and keep["previous_version"] == "1"
        assert store.current_version("fraud") == "2" and store.state("fraud", "1") == "retired"
        assert store.guarded_version("fraud") is None
        verdicts = [decode(r.value, ShadowVerdict) for r in await read_all(settings, settings.topics.shadow_verdicts)]
        assert [(v.role, v.verdict) for v in verdicts] == [("shadow", "promote"), ("previous", "keep")]
        get = reg.get_sample_value
        assert get("mlstream_shadow_predictions_total",
                   {"model": "fraud", "version": "2", "role": "shadow", "outcome": "scored"}) >= 1_500
        assert get("mlstream_shadow_verdicts_total", {"model": "fraud", "role": "shadow", "verdict": "promote"}) == 1
        assert get("mlstream_live_labelled_loss", {"model": "fraud", "version": "2", "role": "shadow"}) > 0
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)


async def test_a_canary_serves_its_entities_until_the_challenger_is_rejected(make_settings, model_store, start_worker):
    settings = make_settings(scoring={"model_poll_interval_s": 0.2, "canary_share": 0.25},
                             model_feed={"mode": "store"})
    await ensure_topics(settings)
    store = ModelStore(model_store)
    save_version(model_store, "2", inverted_model(v1_bytes(model_store)), promote=False)
    store.set_state("fraud", "2", "shadow", "passed the holdout")
    worker = start_worker(settings, roles=("scorer",))
    reg = worker.metrics.registry
    sim = PaymentSimulator(seed=23)
    sent = await produce(settings, sim, 2_000, rate=0)
    share = lambda: reg.get_sample_value("mlstream_canary_share", {"model": "fraud", "version": "2"})
    assert await wait_until(lambda: (reg.get_sample_value("mlstream_events_valid_total") or 0) >= 1_900, 60)
    assert share() == 0.25
    store.set_state("fraud", "2", "rejected", "worse than the champion on live labels")
    assert await wait_until(lambda: share() is None, 30)  # the canary is off
    tail = sent
    sent += await produce(settings, sim, 1_000, rate=0, start=sent)

    predictions = await outputs(settings, sent)
    ids = [p["event_id"] for p in predictions]
    assert len(ids) == len(set(ids)) == sent  # none lost, none scored twice
    early = [p for p in predictions if int(p["event_id"].rsplit("-", 1)[1]) < tail]
    chosen = in_canary([p["entity_id"] for p in early], "2", 0.25)
    assert 0.1 < chosen.mean() < 0.4
    assert [p["model_version"] for p in early] == ["2" if c else "1" for c in chosen.tolist()]
    # the challenger is still compared on every event, canary or not
    shadow = [orjson.loads(r.value) for r in await read_all(settings, settings.topics.shadow_predictions)]
    assert {s["event_id"] for s in shadow} >= {p["event_id"] for p in early}
    by_id = {p["event_id"]: p for p in early}
    assert all(abs(by_id[s["event_id"]]["score"] - s["score"]) < 1e-9 for s in shadow
               if s["event_id"] in by_id and by_id[s["event_id"]]["model_version"] == "2")
    # rejected: from then on the champion serves everyone
    assert {p["model_version"] for p in predictions if int(p["event_id"].rsplit("-", 1)[1]) >= tail} == {"1"}


async def test_a_bad_promotion_is_rolled_back_by_the_guard(make_settings, model_store, start_worker, tmp_path):
    with SlackStandIn() as slack:
        settings = make_settings(trainer={"guard_labels": 1_000, "bootstrap": 300},
                                 scoring={"model_poll_interval_s": 0.2},
                                 alerts={"slack_webhook_url": slack.url()})
        await ensure_topics(settings)
        store = ModelStore(model_store)  # the operator's and the trainer's
        # the scorer keeps its own store, filled from the model feed, as in production: one
        # shared with the trainer could take the trainer's start-up publish after the hand
        # promotion below and lose it
        worker = start_worker(settings.model_copy(update={"model_store": tmp_path / "scorer-store"}),
                              roles=("scorer", "monitor"))
        reg = worker.metrics.registry
        metrics = TrainerMetrics()
        stop = asyncio.Event()
        trainer = asyncio.create_task(run_trainer(settings, stop, metrics=metrics))
        try:
            # version 1 serves before the bad promotion (else the worker could load 2 at start)
            assert await wait_until(lambda: worker.metrics.health.ready()[0], 60)
            sim = PaymentSimulator(seed=22)
            sent = await produce(settings, sim, 2_000, rate=0, label_delay=500)
            # valid probabilities, passes every check, and inverted: a label flipped upstream
            save_version(model_store, "2", inverted_model(v1_bytes(model_store)), promote=True)
            await publish(settings, store, "fraud", "promoted by hand")  # what `models promote` does
            assert store.guarded_version("fraud") == "1"
            swaps = lambda n: (lambda: (reg.get_sample_value(
                "mlstream_model_loads_total", {"outcome": "swap_ok"}) or 0) >= n)
            assert await wait_until(swaps(1), 30)
            sent = await drive(settings, sim, sent, lambda: decisions(metrics, "rollback") >= 1 or trainer.done())
            assert await wait_until(swaps(2), 30)  # the scorer serves version 1 again
            tail = sent
            sent += await produce(settings, sim, 1_000, rate=0, label_delay=500, start=sent)

            predictions = await outputs(settings, sent)
            ids = [p["event_id"] for p in predictions]
            assert len(ids) == len(set(ids)) == sent  # none lost, none scored twice across both swaps
            versions = {p["model_version"] for p in predictions}
            assert versions == {"1", "2"}
            assert {p["model_version"] for p in predictions if int(p["event_id"].rsplit("-", 1)[1]) >= tail} == {"1"}
            updates = [orjson.loads(r.value) for r in await read_all(settings, settings.topics.model_updates)]
            rollback = [u for u in updates if u["decision"] == "rollback"]
            assert len(rollback) == 1
            r = rollback[0]
            assert r["model_version"] == "1" and r["previous_version"] == "2"
            assert r["metrics"]["difference"]["ci_low"] > r["metrics"]["difference"]["margin"]
            assert r["metrics"]["champion"]["log_loss"] > 10 * r["metrics"]["previous"]["log_loss"]
            assert r["reasons"][1].startswith("worse than the previous champion")
            assert store.current_version("fraud") == "1" and store.state("fraud", "2") == "rejected"
            assert store.guarded_version("fraud") is None
            assert await wait_until(lambda: any("version 2 rolled back to 1" in m.json()["text"]
                                                for m in list(slack.received)), 30)
            assert reg.get_sample_value("mlstream_shadow_verdicts_total",
                                        {"model": "fraud", "role": "previous", "verdict": "rollback"}) == 1
            assert np.isfinite(reg.get_sample_value("mlstream_live_labelled_loss",
                                                    {"model": "fraud", "version": "2", "role": "champion"}))
        finally:
            stop.set()
            await asyncio.wait_for(trainer, 60)
