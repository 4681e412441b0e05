"""End to end on Apache Kafka (and the first test on the embedded broker too): every event
accounted for, features online == offline across a restart, a model hot-swap."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from stream.examples.payments import DOMAIN
from stream.messages import FeatureBatch, decode
from stream.registry import ModelStore
from stream.schema import REASONS
from stream.scoring.model import load_model
from stream.examples.simulate import PaymentSimulator
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from tests.helpers import read_topic

ON_KAFKA = pytest.mark.parametrize("broker_kind", ["kafka"])


async def _outputs(settings, expected: int, timeout_s: float = 60.0):
    predictions, dead = [], []

    async def refresh() -> int:
        predictions[:] = await read_topic(settings, settings.topics.predictions)
        dead[:] = await read_topic(settings, settings.topics.dead_letter)
        return len(predictions) + len(dead)

    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while await refresh() < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # re-reading the topics; the condition is checked each round
    return predictions, dead


@pytest.mark.parametrize("broker_kind", ["embedded", "kafka"])
async def test_every_event_gets_one_prediction_or_a_dead_letter(settings, start_worker):
    sim = PaymentSimulator(seed=11, invalid_rate=0.05)
    items = list(sim.events(3_000))
    valid_ids = {i.event_id for i in items if i.event_id}
    invalid_values = sorted(i.value for i in items if i.event_id is None)
    assert len(invalid_values) > 50

    worker = start_worker(settings, roles=("scorer",))
    await produce(settings, sim, 3_000, rate=0)
    predictions, dead = await _outputs(settings, len(items))

    ids = [orjson.loads(r.value)["event_id"] for r in predictions]
    assert len(ids) == len(set(ids)) == len(valid_ids)
    assert set(ids) == valid_ids
    first = orjson.loads(predictions[0].value)
    assert first["model"] == "fraud" and first["model_version"] == "1"
    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "prediction.schema.json").read_text())
    for rec in predictions[:200]:  # what a consumer of the topic reads matches the published schema
        jsonschema.validate(orjson.loads(rec.value), schema)
    assert 0.0 <= first["score"] <= 1.0 and first["scored_ts_ms"] >= first["ingest_ts_ms"]

    assert sorted(r.value for r in dead) == invalid_values  # original bytes kept
    sources = {(r.partition, r.offset): r.value for r in await read_topic(settings, settings.topics.events)}
    for rec in dead:
        headers = dict(rec.headers)
        assert headers["mlstream.error.reason"].decode() in REASONS
        assert headers["mlstream.error.message"]
        assert headers["mlstream.source.topic"].decode() == settings.topics.events
        # the headers point at the record it came from, on the same partition number
        source = (int(headers["mlstream.source.partition"]), int(headers["mlstream.source.offset"]))
        assert source[0] == rec.partition and sources[source] == rec.value
    reasons = {dict(r.headers)["mlstream.error.reason"].decode() for r in dead}
    assert {"not_json", "missing_field", "not_finite", "out_of_range", "wrong_type", "unknown_field"} <= reasons

    m = worker.metrics.registry.get_sample_value
    assert m("mlstream_predictions_total", {"model": "fraud", "version": "1"}) == len(valid_ids)
    assert sum(m("mlstream_events_dead_lettered_total", {"reason": r}) or 0 for r in REASONS) == len(dead)


@ON_KAFKA
async def test_online_features_equal_offline_across_a_restart(settings, start_worker, model_store):
    """State survives a worker restart through the changelog: features equal the offline ones."""
    sim = PaymentSimulator(seed=5, n_users=50)
    items = list(sim.events(4_000))
    first = start_worker(settings, roles=("scorer",))
    await produce(settings, sim, 2_000, rate=0)
    await _outputs(settings, 2_000)
    await first.close()

    second = start_worker(settings, roles=("scorer",))
    await produce(settings, sim, 2_000, rate=0, start=2_000)
    predictions, _ = await _outputs(settings, 4_000)
    assert len(predictions) == 4_000
    assert second.metrics.registry.get_sample_value("mlstream_state_restored_records_total") > 0

    # feature batches go out with the commit after their predictions (once per commit interval):
    # wait until every event's row is there
    import asyncio
    import time

    deadline = time.monotonic() + 60.0
    while True:
        records = await read_topic(settings, settings.topics.features)
        seen = {eid for r in records for eid in decode(r.value, FeatureBatch).event_ids}
        if len(seen) >= len(items) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)  # re-reading the topic; the condition is checked each round
    batches = [orjson.loads(r.value) for r in records]
    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "feature-batch.schema.json").read_text())
    for b in batches[:20]:
        jsonschema.validate(b, schema)
    online: dict[str, dict[str, float]] = {}
    for rec in records:
        fb = decode(rec.value, FeatureBatch)
        cols = {name: fb.column(name) for name in fb.columns}
        for j, event_id in enumerate(fb.event_ids):
            online.setdefault(event_id, {name: col[j] for name, col in cols.items()})
            online[event_id]["score"] = fb.scores[j]

    events = [orjson.loads(i.value) for i in items]
    X = DOMAIN.offline_features(events)
    model = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns)
    offline_scores = model.predict(X)
    columns = DOMAIN.features.columns
    numeric = [c for c, k in DOMAIN.features.monitored.items() if k == "numeric"]
    assert len(online) == len(events)
    for i, e in enumerate(events):
        got = online[e["event_id"]]
        for name in numeric:
            assert np.isclose(got[name], X[i, columns.index(name)], rtol=1e-6, atol=1e-9), (i, name)
        assert got["merchant_category"] == e["merchant_category"]
        assert np.isclose(got["score"], offline_scores[i], rtol=1e-6)


@ON_KAFKA
async def test_a_promoted_model_is_swapped_in_without_losing_an_event(settings, start_worker, model_store):
    import json
    import shutil

    from stream.registry import ModelStore

    # store-only mode: the worker polls the store it shares with whoever promotes
    settings = settings.model_copy(update={"model_feed": settings.model_feed.model_copy(update={"mode": "store"})})
    worker = start_worker(settings, roles=("scorer",))
    sim = PaymentSimulator(seed=8)
    await produce(settings, sim, 1_000, rate=0)
    await _outputs(settings, 1_000)

    # a challenger: same ONNX bytes, new version; promoting it flips CURRENT atomically
    src = model_store / "fraud" / "1"
    card = json.loads((src / "card.json").read_text())
    ModelStore(model_store).save({**card, "version": "2"}, (src / "model.onnx").read_bytes())
    await produce(settings, sim, 6_000, rate=2_000, start=1_000)
    predictions, _ = await _outputs(settings, 7_000)

    version_of = {p["event_id"]: p["model_version"] for p in (orjson.loads(r.value) for r in predictions)}
    assert len(version_of) == len(predictions) == 7_000
    assert all(version_of[f"e8-{i}"] == "1" for i in range(1_000))  # scored before the promotion
    assert version_of["e8-6999"] == "2"
    m = worker.metrics.registry.get_sample_value
    assert m("mlstream_model_loads_total", {"outcome": "swap_ok"}) == 1
    assert m("mlstream_model_info", {"model": "fraud", "version": "2", "sha256": card["sha256"]}) == 1
    shutil.rmtree(src)  # the old version may go once nothing serves it


@pytest.mark.parametrize("broker_kind", ["embedded", "kafka"])
async def test_a_restore_applies_the_changelog_as_of_the_offset_processing_resumes_from(settings):
    """Records whose state is as of a later input offset than the restore's are skipped (their
    events are processed again); untagged records (format 1) and tombstones always apply. A
    record as of an older offset than one already read for its entity was written late (a worker
    paused past its session timeout, writing after its partition moved on): the newer state stands."""
    from stream.kafka import make_producer
    from stream.scoring.restore import restore_state
    from stream.scoring.state import encode_state

    width = DOMAIN.features.state_width
    producer = make_producer(settings)
    await producer.start()
    try:
        for key, n, upto in [("u1", 1.0, 10), ("u2", 2.0, None), ("u1", 3.0, 20), ("u3", 4.0, 20),
                             ("u3", 5.0, 15)]:  # the last one late
            await producer.send_and_wait(settings.topics.changelog, encode_state(np.full(width, n), upto),
                                         key=key.encode(), partition=0)
        await producer.send_and_wait(settings.topics.changelog, None, key=b"u2", partition=0)
    finally:
        await producer.stop()
    states = {}
    for upto in (None, 10, 15, 20):
        store = (await restore_state(settings, width, [0], max_entities=100, upto={0: upto}))[0]
        states[upto] = {k: store.matrix[r][0] for k, r in store.rows.items()}
        assert store.position == upto
    assert states[None] == states[20] == {"u1": 3.0, "u3": 4.0}
    assert states[10] == {"u1": 1.0}
    assert states[15] == {"u1": 1.0, "u3": 5.0}


@ON_KAFKA
async def test_events_replayed_after_a_crash_between_changelog_and_offset_commit_count_once(
        settings, model_store, monkeypatch):
    """At-least-once: a worker's changelog for events 10..19 is acknowledged, but it dies before
    their offsets are committed. The next owner processes 10..19 again: their effect must not be
    in the state it restores, or they count twice in their entities' rolling features (every
    score after them differed from the offline one). Duplicates, yes; wrong scores, no."""
    import asyncio
    import collections

    from stream.metrics import Metrics
    from stream.scoring.worker import ScoringWorker
    from stream.tools.tally import wait_until

    def sim() -> PaymentSimulator:
        return PaymentSimulator(seed=7, n_users=3)  # a few entities: each sees many events

    async def scorer(*batches: tuple[int, bool]) -> None:
        """A worker that processes each batch of ten events (from ``start``), its offset commits
        reaching the broker or not (the crash window), then stops."""
        worker = ScoringWorker(settings, DOMAIN, Metrics.create(), emit_features=False)
        stop = asyncio.Event()
        task = asyncio.ensure_future(worker.run(stop))
        try:
            for n, (start, committed) in enumerate(batches, 1):
                if not committed:
                    async def acknowledged_only(consumer, futures, writes, offsets) -> None:
                        await worker.commits._deliver(futures, writes)  # outputs and changelog acknowledged, no commit
                    monkeypatch.setattr(worker.commits, "_finish", acknowledged_only)
                if start >= 0:
                    await produce(settings, sim(), 10, rate=0, start=start)
                assert await wait_until(lambda n=n: worker.processed >= 10 * n or task.done(), 60)
                await worker.flush()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    await scorer((0, True), (10, False))  # 0..9 committed; 10..19 processed, state written, not committed
    await produce(settings, sim(), 10, rate=0, start=20)
    await scorer((-1, True), (-1, True))  # the next owner: 10..29

    predictions = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.predictions)]
    events = [orjson.loads(i.value) for i in sim().events(30)]
    seen = collections.Counter(p["event_id"] for p in predictions)
    assert sorted(seen.values()) == [1] * 20 + [2] * 10  # 10..19 replayed
    offline = dict(zip((e["event_id"] for e in events), load_model(ModelStore(model_store), "fraud",
                       DOMAIN.features.columns).predict(DOMAIN.offline_features(events)), strict=True))
    wrong = [(p["event_id"], p["score"], offline[p["event_id"]]) for p in predictions
             if not np.isclose(p["score"], offline[p["event_id"]], rtol=1e-6)]
    assert wrong == []


@ON_KAFKA
async def test_state_is_restored_again_when_processing_starts_past_the_offset_it_was_restored_as_of(
        settings, model_store, monkeypatch, caplog):
    """The committed offset a restore goes by is looked up apart from the consumer's own: if the
    consumer starts further on (a commit landed between the two), the state restored as of the
    older offset lacks events that will not be processed again. The worker sees it at the first
    record and restores that partition again, as of where it starts: every score stays right."""
    import asyncio
    import logging

    from stream.metrics import Metrics
    from stream.scoring.commits import Commits
    from stream.scoring.worker import ScoringWorker
    from stream.tools.tally import wait_until

    caplog.set_level(logging.WARNING)

    def sim() -> PaymentSimulator:
        return PaymentSimulator(seed=9, n_users=3)

    async def scorer(start: int) -> None:
        worker = ScoringWorker(settings, DOMAIN, Metrics.create(), emit_features=False)
        stop = asyncio.Event()
        task = asyncio.ensure_future(worker.run(stop))
        try:
            await produce(settings, sim(), 10, rate=0, start=start)
            assert await wait_until(lambda: worker.processed >= 10 or task.done(), 60)
            await worker.flush()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    await scorer(0)

    async def looked_up_too_early(self, consumer, partitions):  # the commit of 0..9 not seen yet
        return dict.fromkeys(partitions, 0)
    monkeypatch.setattr(Commits, "resume_offsets", looked_up_too_early)
    await scorer(10)

    predictions = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.predictions)]
    events = [orjson.loads(i.value) for i in sim().events(20)]
    assert sorted(p["event_id"] for p in predictions) == sorted(e["event_id"] for e in events)
    offline = dict(zip((e["event_id"] for e in events), load_model(ModelStore(model_store), "fraud",
                       DOMAIN.features.columns).predict(DOMAIN.offline_features(events)), strict=True))
    assert [p for p in predictions if not np.isclose(p["score"], offline[p["event_id"]], rtol=1e-6)] == []
    assert "state is rebuilt" in caplog.text
