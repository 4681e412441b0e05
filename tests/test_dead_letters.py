"""Dead letters as a consumer reads them: our headers win, tombstones stay tombstones."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from stream.examples.payments import DOMAIN
from stream.metrics import Metrics
from stream.registry import ModelStore
from stream.scoring.model import load_model
from stream.scoring.pipeline import BatchScorer
from stream.scoring.state import EntityStore

GOOD = {"event_id": "e1", "user_id": "u1", "amount": 12.5, "merchant_category": "fuel",
        "country": "DE", "channel": "web", "ts": 1_750_000_000.0}


def _record(offset: int, value: bytes | None, headers=()):
    return SimpleNamespace(offset=offset, key=b"u1", value=value, timestamp=1_750_000_000_000,
                           headers=list(headers))


def _scorer(model_store) -> BatchScorer:
    model = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns)
    return BatchScorer(DOMAIN, model, Metrics.create(), max_future_s=86_400)


def test_a_producers_reason_header_cannot_spoof_ours(model_store):
    spoof = [("mlstream.error.reason", b"all_good"), ("mlstream.source.offset", b"999"), ("trace-id", b"t1")]
    out = _scorer(model_store).process({0: [_record(5, b"{oops", spoof)]}, {0: EntityStore(8)},
                                       now=1_750_000_000.0)
    (dl,) = out.partitions[0].dead_letters
    headers = dict(dl.headers)  # what a consumer reading headers into a dict sees
    assert headers["mlstream.error.reason"] == b"not_json"
    assert headers["mlstream.source.offset"] == b"5"
    assert headers["producer.mlstream.error.reason"] == b"all_good"
    assert headers["producer.mlstream.source.offset"] == b"999"
    assert headers["trace-id"] == b"t1"
    assert [n for n, _ in dl.headers].count("mlstream.error.reason") == 1


def test_records_as_the_worker_fetches_them_keep_their_headers_and_say_where_from(model_store):
    """The worker's consumer hands out aiokafka's decoded records (no topic, no partition): its
    dead letters name the scorer's topic and the partition they came from, and keep the
    producer's headers."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    from stream.kafka_records import PartitionRecords, install, raw_records

    builder = DefaultRecordBatchBuilder(2, 0, is_transactional=0, producer_id=-1, producer_epoch=-1,
                                        base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=1_750_000_000_000, key=b"u1", value=orjson.dumps(GOOD), headers=[])
    builder.append(1, timestamp=1_750_000_000_001, key=b"u1", value=b"{oops", headers=[("trace-id", b"t7")])
    assert install()
    fetched = list(PartitionRecords(TopicPartition("payments", 3), MemoryRecords(bytes(builder.build())), [],
                                    0, None, raw_records, False, 0))
    assert not hasattr(fetched[0], "partition")
    model = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns)
    scorer = BatchScorer(DOMAIN, model, Metrics.create(), max_future_s=86_400, source_topic="payments")
    out = scorer.process({3: fetched}, {3: EntityStore(8)}, now=1_750_000_000.0)
    (dl,) = out.partitions[3].dead_letters
    headers = dict(dl.headers)
    assert (headers["mlstream.source.topic"], headers["mlstream.source.partition"],
            headers["mlstream.source.offset"]) == (b"payments", b"3", b"1")
    assert (dl.value, dl.timestamp_ms, headers["trace-id"]) == (b"{oops", 1_750_000_000_001, b"t7")
    assert out.valid == 1 and len(out.partitions[3].prediction_values) == 1


def test_a_tombstone_is_dead_lettered_as_a_tombstone(model_store):
    out = _scorer(model_store).process({0: [_record(0, None), _record(1, orjson.dumps(GOOD))]},
                                       {0: EntityStore(8)}, now=1_750_000_000.0)
    (dl,) = out.partitions[0].dead_letters
    assert dl.value is None
    assert dict(dl.headers)["mlstream.error.message"] == b"tombstone (null value)"
    assert out.valid == 1


def test_an_onnx_call_that_raises_dead_letters_only_the_rows_it_fails_on_and_moves_no_state(model_store):
    """The model raises on any batch holding a huge amount: those events are found by bisection,
    dead-lettered as processing_error, and entity state is as if they never came."""
    import numpy as np

    from tests.bad_models import raising_model, save_version

    width = len(DOMAIN.features.columns)
    save_version(model_store, "2", raising_model(width))  # passes the checks: reference amounts are small
    model = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns)
    assert model.version == "2"
    scorer = BatchScorer(DOMAIN, model, Metrics.create(), max_future_s=86_400)
    events = [{**GOOD, "event_id": f"e{i}", "user_id": f"u{i % 3}", "ts": 1_750_000_000.0 + 60 * i,
               "amount": 900_000.0 if i in (4, 11) else 10.0 + i} for i in range(16)]
    records = [_record(i, orjson.dumps(e)) for i, e in enumerate(events)]
    store = EntityStore(DOMAIN.features.state_width)
    out = scorer.process({0: records}, {0: store}, now=1_750_001_000.0)

    dead = out.partitions[0].dead_letters
    assert sorted(int(dict(d.headers)["mlstream.source.offset"]) for d in dead) == [4, 11]
    assert {dict(d.headers)["mlstream.error.reason"] for d in dead} == {b"processing_error"}
    assert out.valid == 14 and scorer.metrics.registry.get_sample_value(
        "mlstream_processing_errors_total", {"stage": "score"}) == 2
    # state equals the offline state of the 14 other events
    good = [e for i, e in enumerate(events) if i not in (4, 11)]
    offline = EntityStore(DOMAIN.features.state_width)
    cols = DOMAIN.columns(good)
    rows = offline.rows_for(cols["user_id"].tolist())
    DOMAIN.features.compute(cols, rows, offline.matrix)
    for user in ("u0", "u1", "u2"):
        assert np.allclose(store.matrix[store.rows[user]], offline.matrix[offline.rows[user]])


def test_a_batch_of_several_partitions_is_scored_as_one_and_each_keeps_its_own_state(model_store):
    """Partitions share one feature pass and one ONNX call: a row the model fails on in one
    partition is dead-lettered there, every other event is predicted in its own partition, in
    offset order, and each partition's store ends as if it had been scored alone."""
    import numpy as np

    from tests.bad_models import raising_model, save_version

    save_version(model_store, "2", raising_model(len(DOMAIN.features.columns)))
    model = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns)
    scorer = BatchScorer(DOMAIN, model, Metrics.create(), max_future_s=86_400)
    # the same user ids in both partitions are different entities there (state is per partition)
    events = {p: [{**GOOD, "event_id": f"p{p}e{i}", "user_id": f"u{i % 2}", "ts": 1_750_000_000.0 + 60 * i,
                   "amount": 900_000.0 if (p, i) == (1, 3) else 10.0 + i + 100 * p} for i in range(6)]
              for p in (0, 1, 2)}
    batch = {p: [SimpleNamespace(topic="events", partition=p, offset=10 * p + i, key=e["user_id"].encode(),
                                 value=orjson.dumps(e), timestamp=1_750_000_000_000, headers=[])
                 for i, e in enumerate(evs)] for p, evs in events.items()}
    batch[2][1].value = b"{oops"
    stores = {p: EntityStore(DOMAIN.features.state_width) for p in events}
    out = scorer.process(batch, stores, now=1_750_001_000.0)

    reasons = {p: [(int(dict(d.headers)["mlstream.source.offset"]), dict(d.headers)["mlstream.error.reason"])
                   for d in out.partitions[p].dead_letters] for p in events}
    assert reasons == {0: [], 1: [(13, b"processing_error")], 2: [(21, b"not_json")]}
    predicted = {p: [orjson.loads(v)["event_id"] for v in out.partitions[p].prediction_values] for p in events}
    assert predicted == {0: [f"p0e{i}" for i in range(6)], 1: [f"p1e{i}" for i in (0, 1, 2, 4, 5)],
                         2: [f"p2e{i}" for i in (0, 2, 3, 4, 5)]}
    assert [out.partitions[p].last_offset for p in events] == [5, 15, 25]
    for p, kept in ((0, range(6)), (1, (0, 1, 2, 4, 5)), (2, (0, 2, 3, 4, 5))):
        alone = EntityStore(DOMAIN.features.state_width)
        cols = DOMAIN.columns([events[p][i] for i in kept])
        DOMAIN.features.compute(cols, alone.rows_for(cols["user_id"].tolist()), alone.matrix)
        assert set(stores[p].rows) == {"u0", "u1"} == set(out.partitions[p].touched)
        for user in ("u0", "u1"):
            assert np.allclose(stores[p].matrix[stores[p].rows[user]], alone.matrix[alone.rows[user]])


def test_a_list_in_a_field_of_allowed_values_is_dead_lettered_as_a_wrong_type(model_store):
    """A value no set can hold (a list, an object) in a category with allowed values: that event
    is dead-lettered with its reason and the rest of the batch is scored (the batch check once
    raised on it out of the scorer: a crash loop on one event)."""
    import dataclasses

    from stream.examples.payments import CHANNELS
    from stream.schema import Field

    schema = dataclasses.replace(DOMAIN.schema, fields=tuple(
        Field("channel", "category", allowed=tuple(CHANNELS)) if f.name == "channel" else f
        for f in DOMAIN.schema.fields))
    domain = dataclasses.replace(DOMAIN, schema=schema)
    model = load_model(ModelStore(model_store), "fraud", domain.features.columns)
    events = [{**GOOD, "event_id": f"e{i}", "channel": CHANNELS[i % len(CHANNELS)]} for i in range(40)]
    events[7]["channel"], events[30]["channel"] = [], {"a": 1}
    out = BatchScorer(domain, model, Metrics.create(), max_future_s=86_400).process(
        {0: [_record(i, orjson.dumps(e)) for i, e in enumerate(events)]}, {0: EntityStore(8)}, now=1_750_000_000.0)
    dead = out.partitions[0].dead_letters
    assert [(dict(d.headers)["mlstream.source.offset"], dict(d.headers)["mlstream.error.reason"]) for d in dead] \
        == [(b"7", b"wrong_type"), (b"30", b"wrong_type")]
    assert out.valid == 38


def test_an_event_whose_validation_raises_is_dead_lettered_and_the_rest_scored(model_store, caplog):
    """A schema whose check raises on one event (a bug, not a verdict) costs that event, dead-
    lettered as a processing error with the exception, not the batch and not the worker; a check
    that raises on large batches only is said in the log, and every event still gets its verdict."""
    import dataclasses

    from stream.schema import SMALL_BATCH, Schema

    class Fragile(Schema):
        def parse_batch(self, raws):
            if any(b'"e13"' in r for r in raws) and (self.name == "always" or len(raws) > SMALL_BATCH):
                raise KeyError("a bug in the check")
            return super().parse_batch(raws)

    events = [{**GOOD, "event_id": f"e{i}", "ts": GOOD["ts"] + i} for i in range(40)]
    events[20]["amount"] = -1.0  # an ordinary verdict next to it
    records = [_record(i, orjson.dumps(e)) for i, e in enumerate(events)]
    for name, lost in (("always", [13]), ("large batches", [])):
        fields = {f.name: getattr(DOMAIN.schema, f.name) for f in dataclasses.fields(Schema) if f.init}
        domain = dataclasses.replace(DOMAIN, schema=Fragile(**{**fields, "name": name}))
        model = load_model(ModelStore(model_store), "fraud", domain.features.columns)
        metrics = Metrics.create()
        caplog.clear()
        out = BatchScorer(domain, model, metrics, max_future_s=86_400).process(
            {0: list(records)}, {0: EntityStore(8)}, now=1_750_000_000.0)
        dead = [dict(d.headers) for d in out.partitions[0].dead_letters]
        assert [d["mlstream.source.offset"] for d in dead] == sorted(str(i).encode() for i in [*lost, 20])
        by_offset = {d["mlstream.source.offset"]: d for d in dead}
        assert by_offset[b"20"]["mlstream.error.reason"] == b"out_of_range"
        if lost:
            assert by_offset[b"13"]["mlstream.error.reason"] == b"processing_error"
            assert by_offset[b"13"]["mlstream.error.class"] == b"KeyError"
            assert b"a bug in the check" in by_offset[b"13"]["mlstream.error.message"]
        assert metrics.registry.get_sample_value("mlstream_processing_errors_total", {"stage": "validate"}) \
            == (1.0 if lost else None)
        assert "validate: a batch raised (KeyError: 'a bug in the check'); validated in parts" in caplog.text
        scored = [orjson.loads(v)["event_id"] for v in out.partitions[0].prediction_values]
        assert scored == [f"e{i}" for i in range(40) if i not in (*lost, 20)]
