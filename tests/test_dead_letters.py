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
    return SimpleNamespace(topic="events", partition=0, offset=offset, key=b"u1", value=value,
                           timestamp=1_750_000_000_000, headers=list(headers))


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


def test_a_tombstone_is_dead_lettered_as_a_tombstone(model_store):
    out = _scorer(model_store).process({0: [_record(0, None), _record(1, orjson.dumps(GOOD))]},
                                       {0: EntityStore(8)}, now=1_750_000_000.0)
    (dl,) = out.partitions[0].dead_letters
    assert dl.value is None
    assert dict(dl.headers)["mlstream.error.message"] == b"tombstone (null value)"
    assert out.valid == 1
