"""Validation: the columnar fast path and the per-event path give the same verdicts."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stream.examples.payments import SCHEMA
from stream.errors import DomainError, ValidationError
from stream.examples.simulate import PaymentSimulator

GOOD = {"event_id": "e1", "user_id": "u1", "amount": 12.5, "merchant_category": "fuel",
        "country": "DE", "channel": "web", "ts": 1_700_000_000.0}


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "not_json"),
    (b'[1, 2]', "not_object"),
    (orjson.dumps({k: v for k, v in GOOD.items() if k != "amount"}), "missing_field"),
    (orjson.dumps({**GOOD, "amount": "12.5"}), "wrong_type"),
    (orjson.dumps({**GOOD, "amount": True}), "wrong_type"),
    (orjson.dumps(GOOD).replace(b"12.5", b"NaN"), "not_finite"),
    (orjson.dumps(GOOD).replace(b"12.5", b"Infinity"), "not_finite"),
    (orjson.dumps(GOOD).replace(b"12.5", b"1e309"), "not_finite"),  # overflows float64
    (orjson.dumps(GOOD).replace(b"12.5", b"-1e999"), "not_finite"),
    (orjson.dumps({**GOOD, "amount": -1}), "out_of_range"),
    (orjson.dumps({**GOOD, "country": ""}), "out_of_range"),
    (orjson.dumps({**GOOD, "coupon": "x"}), "unknown_field"),
    (orjson.dumps({**GOOD, "schema_version": 9}), "unknown_schema_version"),
    (orjson.dumps({**GOOD, "user_id": "u" * 70_000}), "too_large"),
])
def test_each_kind_of_bad_event_has_its_reason(raw, reason):
    with pytest.raises(ValidationError) as info:
        SCHEMA.parse(raw)
    assert info.value.reason == reason
    assert "\n" not in str(info.value)
    batch = SCHEMA.parse_batch([orjson.dumps(GOOD), raw, orjson.dumps(GOOD)])
    assert batch.valid.tolist() == [0, 2]
    assert batch.errors[1].reason == reason


def test_batch_and_single_paths_agree_on_a_mixed_stream():
    items = list(PaymentSimulator(seed=3, invalid_rate=0.2).events(3_000))
    renamed = {**{k: v for k, v in GOOD.items() if k != "channel"}, "chanel": "web"}  # as many fields, not the same
    raws = [i.value for i in items] + [orjson.dumps({**GOOD, "schema_version": 1})]
    raws[10:10] = [orjson.dumps(renamed), orjson.dumps({**GOOD, "user_id": "u" * 70_000})]
    batch = SCHEMA.parse_batch(raws)
    single_valid, single_reasons = [], {}
    for i, raw in enumerate(raws):
        try:
            SCHEMA.parse(raw)
            single_valid.append(i)
        except ValidationError as exc:
            single_reasons[i] = exc.reason
    assert batch.valid.tolist() == single_valid
    assert {i: e.reason for i, e in batch.errors.items()} == single_reasons
    assert 10 in single_reasons and 11 in single_reasons
    assert batch.columns["event_id"].tolist() == [orjson.loads(raws[i])["event_id"] for i in single_valid]
    assert np.array_equal(batch.columns["amount"],
                          [orjson.loads(raws[i])["amount"] for i in single_valid])


def test_small_batches_give_the_verdicts_and_columns_of_one_big_batch():
    items = list(PaymentSimulator(seed=4, invalid_rate=0.3).events(400))
    raws = [i.value for i in items]
    whole = SCHEMA.parse_batch(raws)
    for size in (1, 3, 16, 17):
        valid, reasons, amounts, ids = [], {}, [], []
        for lo in range(0, len(raws), size):
            part = SCHEMA.parse_batch(raws[lo:lo + size])
            valid += [lo + int(i) for i in part.valid]
            reasons.update({lo + i: e.reason for i, e in part.errors.items()})
            amounts += part.columns["amount"].tolist()
            ids += part.columns["event_id"].tolist()
        assert valid == whole.valid.tolist()
        assert reasons == {i: e.reason for i, e in whole.errors.items()}
        assert amounts == whole.columns["amount"].tolist() and ids == whole.columns["event_id"].tolist()


def test_allowed_values_are_dead_lettered_as_out_of_range_on_both_paths():
    from stream import Field, Schema

    schema = Schema("s", fields=(Field("id", "string"), Field("user", "string"), Field("ts", "timestamp"),
                                 Field("channel", "category", allowed=("web", "pos")),
                                 Field("tier", "integer", allowed=(1, 2, 3))),
                    id_field="id", entity_field="user", time_field="ts")
    raws = [orjson.dumps({"id": str(i), "user": "u", "ts": i, "channel": c, "tier": t})
            for i, (c, t) in enumerate([("web", 1), ("fax", 1), ("pos", 7), ("pos", 3)])]
    parsed = schema.parse_batch(raws)
    assert parsed.valid.tolist() == [0, 3]
    assert {i: (e.reason, str(e)) for i, e in parsed.errors.items()} == {
        1: ("out_of_range", "field 'channel' = 'fax' is not one of ['web', 'pos']"),
        2: ("out_of_range", "field 'tier' = 7 is not one of [1, 2, 3]")}
    assert parsed.columns["channel"].tolist() == ["web", "pos"]


def test_the_typed_fast_path_gives_the_verdicts_and_values_of_one_event_at_a_time():
    """Every kind of value in every field, mixed into batches: the batch path (msgspec's typed
    decoding, then column checks) accepts exactly what :meth:`Schema.parse` accepts, with the
    same values, and refuses the rest with the same reason."""
    from stream import Field, Schema

    schema = Schema("s", fields=(Field("id", "string", max_length=8), Field("user", "string"), Field("ts", "timestamp"),
                                 Field("x", "number", min=-5, max=1e300), Field("n", "integer", min=0),
                                 Field("c", "category", allowed=("a", "b")), Field("opt", "number", required=False)),
                    id_field="id", entity_field="user", time_field="ts")
    good = {"id": "e", "user": "u", "ts": 1.5, "x": 2.0, "n": 3, "c": "a", "opt": 1.0}
    odd = [None, True, False, 0, -0.0, 1, -6, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, 2 * 10**308, -2**63, -2**63 - 1, 1.0, 2.5,
           1e300, 1e301, -1e-300, "", "a", "b", "z", "é" * 8, "é" * 9, "1", [], {}, [1], {"a": 1}]
    rng = np.random.default_rng(5)
    raws = []
    for _ in range(3_000):
        event = dict(good)
        for _ in range(int(rng.integers(0, 3))):
            field = str(rng.choice(list(good)))
            event[field] = odd[int(rng.integers(len(odd)))]
        if rng.random() < 0.05:
            event.pop(str(rng.choice(list(good))))
        if rng.random() < 0.03:
            event["extra"] = 1
        text = "{" + ",".join(f'"{k}":{_json(v)}' for k, v in event.items()) + "}"
        if rng.random() < 0.02:
            text = text.replace('"x":', '"x":1,"x":', 1)  # a repeated key: the last one counts
        raws.append(text.encode())
    single_valid, single_reasons, single_cols = [], {}, {k: [] for k in good}
    for i, raw in enumerate(raws):
        try:
            event = schema.parse(raw)
        except ValidationError as exc:
            single_reasons[i] = (exc.reason, str(exc))
        else:
            single_valid.append(i)
            for k in good:
                single_cols[k].append(event.get(k))
    assert 300 < len(single_valid) < 2_700 and len({r for r, _ in single_reasons.values()}) >= 4
    for size in (3_000, 500, 17):
        valid, reasons, cols = [], {}, {k: [] for k in good}
        for lo in range(0, len(raws), size):
            part = schema.parse_batch(raws[lo:lo + size])
            valid += [lo + int(i) for i in part.valid]
            reasons.update({lo + i: (e.reason, str(e)) for i, e in part.errors.items()})
            for k in good:
                cols[k] += part.columns[k].tolist()
        assert valid == single_valid and reasons == single_reasons
        for k in ("id", "user", "c"):
            assert cols[k] == single_cols[k]
        for k in ("ts", "x", "n", "opt"):  # to the bit (the sign of zero too); a missing value is NaN
            expected = np.array([np.nan if v is None else v for v in single_cols[k]], dtype=np.float64)
            assert np.array_equal(np.array(cols[k], dtype=np.float64).view(np.int64), expected.view(np.int64)), k


def _json(value):
    """JSON text of ``value``, ints of any size written out as they are (orjson stops at 64 bits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return orjson.dumps(value).decode()


def test_a_field_declared_with_a_list_of_allowed_values_checks_large_batches_too():
    from stream import Field, Schema

    schema = Schema("s", fields=(Field("id", "string"), Field("user", "string"), Field("ts", "timestamp"),
                                 Field("c", "category", allowed=["a", "b"])),  # a list, not a tuple
                    id_field="id", entity_field="user", time_field="ts")
    raws = [orjson.dumps({"id": str(i), "user": "u", "ts": i, "c": "ab"[i % 2] if i % 7 else "z"}) for i in range(40)]
    parsed = schema.parse_batch(raws)
    assert parsed.valid.tolist() == [i for i in range(40) if i % 7]
    assert {e.reason for e in parsed.errors.values()} == {"out_of_range"}
    with pytest.raises(DomainError, match="max_length must be a positive integer"):
        Field("c", "category", max_length=3.0)
