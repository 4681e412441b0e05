"""Models reach scorers that share no filesystem: the compacted models topic (stream/model_feed.py).

On the embedded broker: versions chunked small reassemble byte-identical into an empty store; a
bad record is refused, counted and logged once while the old version keeps serving; a worker
with an empty local store gets the champion from the feed (or exits in one line); two scorer
processes with separate local stores both serve a version promoted from a third store, with no
event lost or scored twice across the swap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from stream.config import Settings
from stream.examples.simulate import PaymentSimulator
from stream.kafka import ensure_topics, make_producer, start_client
from stream.messages import ModelChunk, decode, encode
from stream.metrics import Metrics
from stream.feed_publish import FeedMoved, publish
from stream.model_feed import feed_records, states_token
from stream.registry import CARD_FILE, MODEL_FILE, ModelStore
from stream.scoring.feed import FeedReader, sync_store
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from stream.training.models_cli import _change
from tests.faults.harness import ROOT, Produced, produce_at, sequenced, verify, worker_env
from tests.helpers import read_topic


def source_store(model_store: Path, where: Path, *, promote: bool = True) -> ModelStore:
    """A third store (the trainer's, an operator's) with version 2: the shipped model's bytes
    under a new version, promoted (1 retired) unless ``promote`` is False."""
    shutil.copytree(model_store, where)
    store = ModelStore(where)
    src = where / "fraud" / "1"
    card = json.loads((src / CARD_FILE).read_text())
    store.save({**card, "version": "2"}, (src / MODEL_FILE).read_bytes(), promote=promote, reason="test")
    return store


async def send_raw(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    try:
        for key, value in records:
            await producer.send(settings.topics.models, value, key=key, partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def predictions_of(settings: Settings) -> list[dict]:
    return [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.predictions)]


async def test_small_chunks_reassemble_byte_identical_into_an_empty_store(make_settings, model_store, tmp_path):
    settings = make_settings(model_feed={"max_message_bytes": 4_096})
    await ensure_topics(settings)
    src = source_store(model_store, tmp_path / "src")
    sent = await publish(settings, src, "fraud", "test")

    records = await read_topic(settings, settings.topics.models)
    assert len(records) == sent > 100  # a 250 kB card in 4 kB records, for each of versions 1 and 2
    assert max(len(r.value) for r in records) <= 4_096
    assert records[-1].key == b"fraud/states"  # the states come after the chunks they name

    local = tmp_path / "local"
    reader = FeedReader(settings.model_copy(update={"model_store": local}), Metrics.create())
    await asyncio.wait_for(reader.start(asyncio.Event()), 60)
    await reader.close()
    for version in ("1", "2"):
        for file in (CARD_FILE, MODEL_FILE):
            assert (local / "fraud" / version / file).read_bytes() == \
                (tmp_path / "src" / "fraud" / version / file).read_bytes(), (version, file)
    store = ModelStore(local)
    assert store.current_version("fraud") == "2"
    assert (store.state("fraud", "1"), store.state("fraud", "2")) == ("retired", "champion")
    assert reader.metrics.registry.get_sample_value("mlstream_model_feed_versions_total") == 2


def test_states_this_store_already_holds_never_undo_a_decision_awaiting_its_publish(model_store, tmp_path):
    """A scorer sharing its store with the trainer (one machine, as in the tests and the demo)
    read states again that the store had published itself, between the trainer's promotion and
    its publish: mirrored back, they put the old champion back, the publish then sent that, and
    the promotion never reached a scorer. No broker: the records go straight to the reader."""
    settings = Settings(model_store=tmp_path / "shared")
    store = source_store(model_store, tmp_path / "shared", promote=False)  # 1 champion, 2 a candidate
    store.set_state("fraud", "2", "shadow", "passed the holdout")
    published = feed_records(settings, store, "fraud", "trainer started")
    store.set_feed_mark("fraud", states_token(published[-1].value))  # what a publish does once acknowledged
    reader = FeedReader(settings, Metrics.create(), store)
    for m in published:
        reader.handle(m.key, m.value)
    assert store.current_version("fraud") == "1" and store.state("fraud", "2") == "shadow"

    store.promote("fraud", "2", reason="live shadow comparison")  # the trainer's decision...
    reader.changed.clear()
    reader.handle(published[-1].key, published[-1].value)  # ...and a late read of the states before it
    assert store.current_version("fraud") == "2" and store.guarded_version("fraud") == "1"
    assert reader.changed.is_set()  # the worker still looks at the store
    assert feed_records(settings, store, "fraud")[-1].value != published[-1].value  # the publish sends 2

    # states published by another store are taken as they come
    other = source_store(model_store, tmp_path / "other", promote=False)
    reader.handle(b"fraud/states", feed_records(settings, other, "fraud", "an operator")[-1].value)
    assert store.current_version("fraud") == "1" and store.state("fraud", "2") == "candidate"


async def test_an_empty_store_serves_the_older_champion_when_the_newest_never_arrives_whole(make_settings, model_store,
                                                                                           tmp_path):
    """A new scorer takes only the newest states; when they name a version whose chunks never all
    reached the feed they are refused, and the versions that did arrive whole, with no state of
    their own yet, serve (here version 1) instead of waiting for a version that may never come."""
    settings = make_settings(model_feed={"start_timeout_s": 5})
    await ensure_topics(settings)
    src = source_store(model_store, tmp_path / "src", promote=False)  # 1 champion, 2 a candidate
    await publish(settings, src, "fraud", "first")
    src.promote("fraud", "2", reason="test")
    await send_raw(settings, [(m.key, m.value) for m in feed_records(settings, src, "fraud", "test")
                              if m.key != b"fraud/2/card.json/0"])
    local = tmp_path / "local"
    reader = FeedReader(settings.model_copy(update={"model_store": local}), Metrics.create())
    await asyncio.wait_for(reader.start(asyncio.Event()), 30)
    await reader.close()
    assert ModelStore(local).current_version("fraud") == "1"
    assert reader.metrics.registry.get_sample_value("mlstream_model_feed_refused_total", {"reason": "missing_chunk"}) == 1


async def test_bad_records_are_refused_and_the_old_version_keeps_serving(make_settings, start_worker,
                                                                         model_store, tmp_path):
    settings = make_settings(model_feed={"max_message_bytes": 8_192})
    await ensure_topics(settings)
    worker = start_worker(settings, roles=("scorer",))
    refused = lambda reason: worker.metrics.registry.get_sample_value(
        "mlstream_model_feed_refused_total", {"reason": reason})
    assert await wait_until(lambda: worker.metrics.registry.get_sample_value(
        "mlstream_model_loads_total", {"outcome": "load_ok"}) == 1, 60)

    src = source_store(model_store, tmp_path / "src")
    good = feed_records(settings, src, "fraud", "test")
    # version 2 with one chunk of its card altered, then states naming it champion
    bad = []
    for m in good:
        value = m.value
        if m.key == b"fraud/2/card.json/3":
            chunk = decode(m.value, ModelChunk)
            value = encode(msgspec.structs.replace(chunk, data=chunk.data[::-1]))
        bad.append((m.key, value))
    garbled = [(b"fraud/2/model.onnx/0", b"{not json"), (b"fraud/9/model.onnx/0", b"x" * 9_000)]
    await send_raw(settings, garbled + bad)
    assert await wait_until(lambda: refused("checksum") == 1, 30)
    assert await wait_until(lambda: refused("malformed") == 1 and refused("oversized") == 1, 30)

    # version 3 announced as champion, one of its chunks never sent
    shutil.copytree(tmp_path / "src" / "fraud" / "2", tmp_path / "src" / "fraud" / "3")
    card3 = json.loads((tmp_path / "src" / "fraud" / "3" / CARD_FILE).read_text())
    (tmp_path / "src" / "fraud" / "3" / CARD_FILE).write_text(json.dumps({**card3, "version": "3"}))
    src.promote("fraud", "3", reason="test")
    partial = [(m.key, m.value) for m in feed_records(settings, src, "fraud", "test")
               if m.key != b"fraud/3/card.json/5" and not m.key.startswith(b"fraud/2/")]
    await send_raw(settings, partial)
    assert await wait_until(lambda: refused("missing_chunk") == 1, 30)

    sim = PaymentSimulator(seed=5)
    await produce(settings, sim, 500, rate=0)
    assert await wait_until(lambda: worker.metrics.registry.get_sample_value(
        "mlstream_predictions_total", {"model": "fraud", "version": "1"}) == 500, 60)
    assert {p["model_version"] for p in await predictions_of(settings)} == {"1"}
    assert ModelStore(model_store).current_version("fraud") == "1"
    assert worker.metrics.registry.get_sample_value("mlstream_model_loads_total", {"outcome": "swap_ok"}) == 0
    assert (refused("checksum"), refused("missing_chunk")) == (1, 1)  # counted once each

    # the good version 2 published again: served
    src.promote("fraud", "2", reason="test")
    await publish(settings, src, "fraud", "test")
    assert await wait_until(lambda: worker.metrics.registry.get_sample_value(
        "mlstream_model_loads_total", {"outcome": "swap_ok"}) == 1, 60)
    await produce(settings, sim, 200, rate=0, start=500)
    assert await wait_until(lambda: worker.metrics.registry.get_sample_value(
        "mlstream_predictions_total", {"model": "fraud", "version": "2"}) == 200, 60)


async def test_a_worker_with_an_empty_store_gets_the_champion_from_the_feed(make_settings, start_worker,
                                                                             model_store, tmp_path):
    local = tmp_path / "empty"
    local.mkdir()
    settings = make_settings(model_store=local)
    await ensure_topics(settings)
    worker = start_worker(settings, roles=("scorer",))
    assert not await wait_until(lambda: worker.task.done(), 1.0)  # waiting for the feed, not failing
    await publish(settings, ModelStore(model_store), "fraud", "first deployment")
    assert await wait_until(lambda: worker.metrics.registry.get_sample_value(
        "mlstream_model_loads_total", {"outcome": "load_ok"}) == 1 or worker.task.done(), 60)
    assert not worker.task.done()
    await produce(settings, PaymentSimulator(seed=6), 300, rate=0)
    assert await wait_until(lambda: worker.metrics.registry.get_sample_value(
        "mlstream_predictions_total", {"model": "fraud", "version": "1"}) == 300, 60)
    assert (local / "fraud" / "1" / MODEL_FILE).read_bytes() == (model_store / "fraud" / "1" / MODEL_FILE).read_bytes()


async def test_a_worker_with_an_empty_store_and_no_champion_exits_in_one_line(make_settings, tmp_path):
    local = tmp_path / "empty"
    local.mkdir()
    settings = make_settings(model_store=local)
    await ensure_topics(settings)
    env = {**worker_env(settings, local), "MLSTREAM_MODEL_FEED__START_TIMEOUT_S": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.cli", "worker", "--role", "scorer", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines[-1].startswith("mlstream: error: ") and "MLSTREAM_MODEL_FEED__START_TIMEOUT_S" in lines[-1]


async def test_two_workers_with_separate_stores_serve_a_version_promoted_elsewhere(make_settings, model_store,
                                                                                   tmp_path):
    settings = make_settings()
    await ensure_topics(settings)
    stores = [tmp_path / "a", tmp_path / "b"]
    for store in stores:
        shutil.copytree(model_store, store)
    third = source_store(model_store, tmp_path / "third", promote=False)  # version 2, a candidate
    logs = []
    procs = []
    for i, store in enumerate(stores):
        log = (tmp_path / f"worker-{i}.log").open("wb")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--role", "scorer"],  # noqa: ASYNC220
                                      cwd=ROOT, env={**worker_env(settings, store), "MLSTREAM_LOG_LEVEL": "INFO"},
                                      stdout=log, stderr=log,
                                      start_new_session=True))
    try:
        events = sequenced(9_000, seed=3)
        produced = Produced()
        await produce_at(settings, events[:1_000], 100_000, produced, idempotent=False)
        seen = lambda predictions: {p["event_id"] for p in predictions}
        first = []

        async def accounted(n: int) -> bool:
            first[:] = await predictions_of(settings)
            return len(seen(first)) >= n

        assert await _eventually(lambda: accounted(1_000), 120), _tails(tmp_path)
        # traffic flows while an operator promotes version 2 in a store no worker reads
        traffic = asyncio.ensure_future(produce_at(settings, events[1_000:6_000], 1_000, produced, idempotent=False))
        assert await _eventually(lambda: accounted(2_000), 60), _tails(tmp_path)  # mid-traffic
        env = worker_env(settings, tmp_path / "third")
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream.cli", "models", "promote", "2", "--reason", "by hand", cwd=ROOT,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(cli.communicate(), 120)
        assert cli.returncode == 0, err.decode()
        assert "champion 1 -> 2" in out.decode() and "published fraud" in out.decode()
        assert third.current_version("fraud") == "2"
        swapped = lambda: all(ModelStore(s).current_version("fraud") == "2" for s in stores)
        assert await wait_until(swapped, 60), _tails(tmp_path)
        await traffic
        assert await _eventually(lambda: accounted(6_000), 120), _tails(tmp_path)
        # both workers say they serve version 2 (swapped between two batches)
        served = lambda: all("version 2 (swap_ok)" in p.read_text(errors="replace")
                             for p in tmp_path.glob("worker-*.log"))
        assert await wait_until(served, 60), _tails(tmp_path)
        await produce_at(settings, events[6_000:], 100_000, produced, idempotent=False)
        assert await _eventually(lambda: accounted(9_000), 120), _tails(tmp_path)

        verdict = await verify(settings, events, produced)
        assert (verdict.lost, verdict.duplicates, verdict.predicted) == (0, 0, 9_000), verdict
        records = await read_topic(settings, settings.topics.predictions)
        version = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value)["model_version"] for r in records}
        assert {version[e[2]] for e in events[:1_000]} == {"1"}
        assert {version[e[2]] for e in events[6_000:]} == {"2"}  # every partition, so both workers
        parts = {r.partition for r in records if orjson.loads(r.value)["event_id"] in {e[2] for e in events[6_000:]}}
        assert parts == {0, 1, 2, 3}
        for store in stores:  # each local store now caches version 2 and the states
            assert ModelStore(store).state("fraud", "2") == "champion"
            assert (store / "fraud" / "2" / MODEL_FILE).read_bytes() == \
                (tmp_path / "third" / "fraud" / "2" / MODEL_FILE).read_bytes()
        for proc in procs:
            assert proc.poll() is None, _tails(tmp_path)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in logs:
            log.close()


async def _eventually(check, timeout_s: float) -> bool:
    """Re-evaluate an async condition until it holds or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.3)  # re-reading the output topic; the condition is checked each round
    return bool(await check())


def _tails(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                     for p in sorted(tmp_path.glob("worker-*.log")))



def test_a_change_from_a_stale_store_is_made_on_the_newest_publish(make_settings, model_store, tmp_path):
    """Several publishers with their own stores: each change is made on the newest published
    states, and the newest change wins (not the last publish of a stale store)."""
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    trainer = source_store(model_store, tmp_path / "trainer")  # promoted 2
    asyncio.run(publish(settings, trainer, "fraud", "trainer promoted 2"))
    shutil.copytree(model_store, tmp_path / "laptop")
    laptop = ModelStore(tmp_path / "laptop")  # an operator's copy from before: 1 is its champion

    def newest_states() -> dict:
        records = asyncio.run(read_topic(settings, settings.topics.models))
        return orjson.loads([r.value for r in records if r.key == b"fraud/states"][-1])

    # `mlstream models publish` from the stale copy used to send scorers back to version 1
    _change(argparse.Namespace(verb="publish"), settings, laptop, "fraud")
    assert newest_states()["champion"] == "2"
    assert laptop.current_version("fraud") == "2" and laptop.state("fraud", "1") == "retired"

    # the operator's rollback, made on the newest states, reaches the trainer before its next decision
    _change(argparse.Namespace(verb="rollback", reason="by hand"), settings, laptop, "fraud")
    assert newest_states()["champion"] == "1" and newest_states()["states"]["2"] == "rejected"

    async def catch_up(store: ModelStore) -> None:
        reader = FeedReader(settings, Metrics.create(), store)
        try:
            assert await reader.catch_up(30)
        finally:
            await reader.close()

    asyncio.run(catch_up(trainer))
    assert trainer.current_version("fraud") == "1" and trainer.state("fraud", "2") == "rejected"
    # a change newer than every publish (its own publish failed) is kept, to be published next
    card = json.loads((trainer.root / "fraud" / "1" / CARD_FILE).read_text())
    trainer.save({**card, "version": "3"}, (trainer.root / "fraud" / "1" / MODEL_FILE).read_bytes(),
                 promote=True, reason="publish failed")
    asyncio.run(catch_up(trainer))
    assert trainer.current_version("fraud") == "3"

    async def restart_scorer(store: ModelStore) -> None:  # its reader reads the feed from the beginning
        reader = FeedReader(settings.model_copy(update={"model_store": store.root}), Metrics.create(), store)
        try:
            await asyncio.wait_for(reader.start(asyncio.Event()), 60)
        finally:
            await reader.close()

    # a scorer sharing the trainer's store restarts: the change still waiting for its publish stays
    asyncio.run(restart_scorer(trainer))
    assert trainer.current_version("fraud") == "3" and trainer.state("fraud", "2") == "rejected"


@pytest.mark.parametrize("broker_kind", ["kafka"])
def test_a_publish_made_on_states_the_feed_moved_past_is_refused_not_undoing_the_newer(
        make_settings, bootstrap, model_store, tmp_path):
    """The moment between a publisher's read of the feed and its publish: another publisher's
    change landing there used to be overwritten by the later publish (the last one won). On
    Apache Kafka a publish is a compare-and-set under the model's transactional id: made on
    states the feed has moved past, it is refused (FeedMoved), and made again on the newer ones;
    of two publishes at the same instant, one wins and the other is refused."""
    settings = make_settings(kafka={"bootstrap_servers": bootstrap})
    asyncio.run(ensure_topics(settings))
    trainer = source_store(model_store, tmp_path / "trainer")  # promoted 2
    asyncio.run(publish(settings, trainer, "fraud", "trainer promoted 2"))
    operator = ModelStore(shutil.copytree(model_store, tmp_path / "operator"))
    asyncio.run(sync_store(settings, operator, "test"))  # the operator's read of the feed: 2 serves
    assert operator.current_version("fraud") == "2"

    # the trainer rolls back and publishes after that read...
    trainer.rollback("fraud", reason="worse live")
    asyncio.run(publish(settings, trainer, "fraud", "trainer rolled back 2"))
    # ...then the operator's promotion of 2, made on what it read, is published: refused
    operator.promote("fraud", "2", reason="by hand")
    with pytest.raises(FeedMoved, match="newer states"):
        asyncio.run(publish(settings, operator, "fraud", "operator promoted 2"))
    assert asyncio.run(newest_champion(settings)) == "1"  # the trainer's rollback stands

    # the command reads the feed first: its promotion is made on the trainer's states
    _change(argparse.Namespace(verb="promote", version="2", reason="by hand"), settings, operator, "fraud")
    assert asyncio.run(newest_champion(settings)) == "2"

    # two publishes at the same instant, made on the same states: one wins, one is refused
    a = ModelStore(shutil.copytree(model_store, tmp_path / "a"))
    b = ModelStore(shutil.copytree(model_store, tmp_path / "b"))
    for store in (a, b):  # each as `mlstream models publish` would
        asyncio.run(sync_store(settings, store, "test"))

    async def both() -> list[Any]:
        return await asyncio.gather(publish(settings, a, "fraud", "a"), publish(settings, b, "fraud", "b"),
                                    return_exceptions=True)

    outcomes = asyncio.run(both())
    assert sorted(type(o).__name__ for o in outcomes) == ["FeedMoved", "int"], outcomes


async def newest_champion(settings: Settings) -> str | None:
    """The champion of the newest committed states (as scorers read them: read_committed)."""
    reader = FeedReader(settings, Metrics.create(), ModelStore(Path(tempfile.mkdtemp()) / "store"))
    try:
        assert await reader.catch_up(30)
    finally:
        await reader.close()
    return reader.store.current_version("fraud")
