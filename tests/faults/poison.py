"""Poison for the fault suite: crafted records an upstream bug or an attacker produces, each with
the dead-letter reason it must get, and a payments domain whose feature code raises on some
events (as a user's buggy feature function would)."""

from __future__ import annotations

import orjson

from tests.poison_domain import raising_on


def buggy(event_id: str) -> bool:
    """The events the buggy feature raises on: each entity's 7th, 107th, ... event."""
    seq = event_id.rpartition("~")[2]
    return seq.isdigit() and int(seq) % 100 == 7


DOMAIN = raising_on(buggy, "buggy-payments")


def crafted(good: dict[str, object], n: int) -> list[tuple[bytes, str]]:
    """``n`` rounds of crafted records built from one valid event: (raw bytes, reason expected)."""
    def ev(i: int, **change: object) -> dict[str, object]:
        return {**good, "event_id": f"poison~{i}", **change}

    out: list[tuple[bytes, str]] = []
    for i in range(n):
        base = i * 100
        out += [
            (b"\x00\xff garbage", "not_json"),
            (b"\xef\xbb\xbf" + orjson.dumps(ev(base)), "not_json"),  # a UTF-8 BOM
            (b"[1, 2, 3]", "not_object"),
            (b"\"just a string\"", "not_object"),
            (orjson.dumps({k: v for k, v in ev(base + 1).items() if k != "amount"}), "missing_field"),
            (orjson.dumps(ev(base + 2, amount="12.5")), "wrong_type"),
            (orjson.dumps(ev(base + 3)).replace(b'"amount":', b'"amount":NaN,"x":'), "not_finite"),
            (orjson.dumps(ev(base + 4)).replace(b'"amount":', b'"amount":Infinity,"x":'), "not_finite"),
            (orjson.dumps(ev(base + 5)).replace(b'"amount":', b'"amount":1e309,"x":'), "not_finite"),
            (orjson.dumps(ev(base + 6, amount=1e308)), "out_of_range"),
            (orjson.dumps(ev(base + 7, ts=float(good["ts"]) * 1000)), "out_of_range"),  # ms for s
            (orjson.dumps(ev(base + 8, schema_version=99)), "unknown_schema_version"),
            (orjson.dumps(ev(base + 9, surprise=1)), "unknown_field"),
            (orjson.dumps(ev(base + 10, pad="x" * 200_000)), "too_large"),
            (b"[" * 10_000 + b"]" * 10_000, "not_json"),  # depth-10k nesting
        ]
    return out
