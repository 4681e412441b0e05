"""Which columns of a replayed file are not features: its event time and its identifiers.

Flat JSON-lines files usually carry an event time and an entity id beside the features. Tested
as features, a clock drifts by construction (every live time comes after the training times: a
drift opened at row ~3,000 of every stream and stayed open) and an id column's "categories" are
its heaviest entities, whose bursts swing their shares. So ``mlstream replay``, when not told
(``--time-field`` / ``--entity-field``; an empty value turns the guess off), takes:

- as the **event time** a column whose values are all epoch seconds (2001-2286), epoch
  milliseconds or ISO 8601 times (``2026-01-01T09:30:00Z``; without an offset, UTC) and that
  is named like a time (``ts``, ``eventTime``, ``created_at``) or runs in order through the
  stream's first rows (late events allowed: a rank correlation with the row of 0.95 or more);
- as a **row number** (not a feature either) any other numeric column in order through the
  stream's first rows, with at least 100 distinct values there (an hour of the day in order
  over a quiet morning stays a feature);
- as the **entity** the column named like an id (``user_id``, ``customerId``, ``entity``,
  ``account``) with the fewest distinct reference values, or else a column of strings too varied
  to be categories (at least 1,000 distinct values, or 100 that make a fifth of the rows:
  ``client``, ``payer``); a column named like an event's own id (``event_id``, ``id``, ``uuid``), or of
  strings all different, is left out of the features.

Each guess is printed, so a wrong one is seen and overridden.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = {"x": rng.normal(size=200).tolist(), "ts": (1.75e9 + rng.uniform(0, 86400, 200)).tolist(),
...        "user_id": [f"u{i}" for i in rng.integers(0, 500, 200)], "event_id": [f"e{i}" for i in range(200)],
...        "paid": rng.integers(0, 100, 200).tolist()}
>>> probe = [{"ts": 1.76e9 + i} for i in range(5)]
>>> roles = guess_roles(ref, probe)
>>> roles.time_field, roles.entity_field, roles.ignored
('ts', 'user_id', ['event_id'])
>>> guess_roles({"merchant": [f"m{i % 30}" for i in range(1000)]}, []).entity_field is None   # 30: a category
True
>>> unnamed = guess_roles({"country": [f"c{i % 150}" for i in range(2000)],   # 150 values of 2,000 rows: categories
...                        "client": [f"u{i % 700}" for i in range(2000)], "trace": [f"t{i}" for i in range(2000)]}, [])
>>> unnamed.entity_field, unnamed.ignored   # ids by their values: repeated (entities), never (events)
('client', ['trace'])
>>> guess_roles({"customerId": [f"u{i % 300}" for i in range(3000)]}, []).entity_field   # named (camelCase)
'customerId'
>>> guess_roles({"src": [f"u{i % 2000}" for i in range(50_000)]}, []).entity_field   # 2,000 values: ids
'src'
>>> counter = guess_roles({"i": list(range(500)), "x": [0.5] * 500}, [{"i": i, "x": 0.5} for i in range(500)])
>>> counter.time_field, counter.ignored
(None, ['i'])
>>> hours = [{"hour": i // 60} for i in range(1000)]   # 17 values in order: a feature
>>> guess_roles({"hour": list(range(24))}, hours).ignored
[]
>>> late = [{"t": 1.76e9 + i + 30 * rng.random()} for i in range(0, 10_000, 10)]   # late events: not in order
>>> guess_roles({"t": [1.75e9, 1.75e9 + 86_400]}, late).time_field   # on its trend: a clock
't'
>>> signups = [{"signup_at": 1.6e9 + (i * 7919) % 1000 * 1e5, "t": 1.76e9 + i} for i in range(200)]
>>> guess_roles({"signup_at": [1.6e9, 1.7e9], "t": [1.75e9, 1.76e9]}, signups).time_field   # the clock, not the name
't'
>>> prices = {"x": [1.0, 2.0], "price": [2e9, 3e9]}   # epoch-sized, but neither named nor ordered like a time
>>> guess_roles(prices, [{"price": 3e9}, {"price": 2e9}]).time_field is None
True
>>> guess_roles(ref, probe, time_field="", entity_field="").time_field is None   # '': no guess
True
>>> iso = [{"when": "2026-01-02T09:30:00Z"}, {"when": "2026-01-02T09:31:00"}]   # ISO 8601, in order
>>> guess_roles({"when": ["2026-01-01T09:30:00Z", "2026-01-01T08:00:00"]}, iso).time_field
'when'
>>> epoch_seconds("2026-01-01T00:00:00Z"), epoch_seconds("2026-01-01 01:00:00+01:00"), epoch_seconds(1.5e9)
(1767225600.0, 1767225600.0, 1500000000.0)
>>> epoch_seconds(1_500_000_000_250)   # milliseconds
1500000000.25
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import numpy as np

__all__ = ["Roles", "epoch_seconds", "guess_roles"]

TIME_WORDS = ("ts", "time", "timestamp", "datetime", "epoch", "at")  # a name's last word: ts, eventTime, created_at
EPOCH_SECONDS = (1e9, 1e10)  # 2001-09-09 .. 2286-11-20
MILLISECONDS_FROM = 1e11
ID_NAMES = frozenset({"entity", "key", "user", "customer", "account", "merchant", "card", "device", "session", "client",
                      "uid", "payer", "payee", "sender", "member", "subscriber", "player", "seller", "buyer"})
ID_WORDS = ("id", "key", "uuid", "uid")  # a name's last word
EVENT_NAMES = ("event", "message", "msg", "record", "request", "row", "trace", "transaction", "txn")
MIN_TREND = 0.95  # rank correlation with the row of a clock that late events put out of order
MIN_ORDERED = 100  # a column in order through this many rows counts up (a row number, a clock)
MIN_DISTINCT = 100  # fewer distinct values than this is a category (a merchant type), whatever its name
ID_SHARE = 0.2  # strings this varied (distinct values per row) are identifiers, not categories, whatever their name
ID_VALUES = 1_000  # or this many distinct strings (a few thousand users of a long reference)


@dataclass
class Roles:
    """The columns guessed (or given) as event time and entity, and id columns left out."""

    time_field: str | None = None
    entity_field: str | None = None
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _words(name: str) -> list[str]:
    """A column name's words, lower case: ``customerId``, ``customer_id``, ``Customer-ID`` -> customer, id."""
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)]


def _named_like_id(name: str) -> bool:
    words = _words(name)
    joined = "".join(words)
    return (joined in ID_NAMES or _named_like_event_id(name) or (len(words) > 1 and words[-1] in ID_WORDS)
            or any(joined == n + w for n in ID_NAMES for w in ID_WORDS))


def _named_like_event_id(name: str) -> bool:
    words = _words(name)
    return "".join(words) in ("id", "uuid") or (len(words) > 1 and words[0] in EVENT_NAMES and words[-1] in ID_WORDS)


def _identifiers(values: Sequence[Any]) -> tuple[int, bool] | None:
    """``(distinct values, all different)`` of a column of strings too varied to be categories, else None."""
    present = [v for v in values if v is not None]
    if not present or not all(isinstance(v, str) for v in present):
        return None
    distinct = len(set(present))
    varied = distinct >= ID_VALUES or distinct >= max(MIN_DISTINCT, ID_SHARE * len(present))
    return (distinct, distinct == len(present)) if varied else None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def epoch_seconds(value: Any) -> float:
    """An event time as epoch seconds: a number as it is (from 1e11 on, milliseconds: 1e11 seconds
    is the year 5138), an ISO 8601 string (UTC without an offset); ``ValueError`` otherwise."""
    if isinstance(value, str):
        t = datetime.fromisoformat(value)
        return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    v = float(value)
    return v / 1000.0 if abs(v) >= MILLISECONDS_FROM else v


def _as_time(v: Any) -> float | None:
    """``v`` in epoch seconds if it is a number in range (seconds or milliseconds) or an ISO 8601
    string, else None."""
    if isinstance(v, str):
        if len(v) < 10 or v[4:5] != "-":  # a date first: not any digits
            return None
    elif not _is_number(v):
        return None
    try:
        t = epoch_seconds(v)
    except ValueError:
        return None
    lo, hi = EPOCH_SECONDS
    return t if lo <= t < hi else None


def _epoch_seconds(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(_as_time(v) is not None for v in present)


def _rises(values: Sequence[Any]) -> bool:
    """Never down, and up overall (numbers)."""
    return len(values) >= 2 and all(a <= b for a, b in pairwise(values)) and values[-1] > values[0]


def _in_order(name: str, probe: Sequence[Mapping[str, Any]]) -> bool:
    """In order, or nearly: late events put a clock out of order here and there, never off its trend."""
    times = [t for t in (_as_time(r.get(name)) for r in probe) if t is not None]
    return _rises(times) or _trend(times) >= MIN_TREND


def _trend(values: Sequence[float]) -> float:
    """Rank correlation of ``values`` with their position (0 with fewer than ``MIN_ORDERED``)."""
    if len(values) < MIN_ORDERED:
        return 0.0
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ranks, np.arange(len(values)))[0, 1])


def _named_like_time(name: str) -> bool:
    words = _words(name)
    return bool(words) and words[-1] in TIME_WORDS and words != ["at"]


def _counts_up(name: str, probe: Sequence[Mapping[str, Any]]) -> bool:
    """In order through ``probe`` and many-valued (a counter or a clock: an hour of the day or a
    version number in order over a quiet morning is a feature), or named like a time."""
    values = [r.get(name) for r in probe]
    return (len(values) >= MIN_ORDERED and all(map(_is_number, values)) and _rises(values)
            and (_named_like_time(name) or len(set(values)) >= MIN_ORDERED))


def guess_roles(reference: Mapping[str, Sequence[Any]], probe: Sequence[Mapping[str, Any]], *,
                time_field: str | None = None, entity_field: str | None = None) -> Roles:
    """Guess what was not given (``None``; ``""`` means none and no guess) from the reference's
    columns and the stream's first rows ``probe``."""
    roles = Roles(time_field=time_field or None, entity_field=entity_field or None)
    if time_field is None:
        # a clock runs in order through the stream; a name alone may be another time (a signup's)
        times = [n for n, values in reference.items() if _epoch_seconds(values)]
        clocks = [n for n in times if _in_order(n, probe)]
        named = [n for n in times if _named_like_time(n)]
        roles.time_field = next((n for n in clocks if n in named), None) or next(iter(clocks + named), None)
        if roles.time_field is not None:
            roles.notes.append(f"{roles.time_field} holds times: taken as the event time, not a feature "
                               "(--time-field to choose another, --time-field '' for none)")
        for name in reference:  # a row number or another clock: no sample of a feature counts up
            if name != roles.time_field and _counts_up(name, probe):
                roles.ignored.append(name)
                roles.notes.append(f"{name} counts up through the stream's first {len(probe):,} rows (a row "
                                   "number or a clock): not a feature (--time-field '' keeps it)")
    ids: dict[str, tuple[int, bool, bool]] = {}  # name -> (distinct values, named like an id, an event's id)
    for name, values in reference.items():
        if name in (roles.time_field, roles.entity_field):
            continue
        if _named_like_id(name):
            distinct = len({str(v) for v in values if v is not None})
            if distinct >= MIN_DISTINCT:
                ids[name] = (distinct, True, _named_like_event_id(name))
        elif (found := _identifiers(values)) is not None:
            ids[name] = (found[0], False, found[1])
    entities = {n: d for n, d in ids.items() if not d[2]}
    if entity_field is None and entities:
        # named like an id first; then the most repeated: users, not their cards
        name = min(entities, key=lambda n: (not entities[n][1], entities[n][0], n))
        roles.entity_field = name
        roles.notes.append(f"{name} looks like entity ids ({entities[name][0]:,} distinct values): taken as the "
                           "entity, not a feature (--entity-field to choose another, --entity-field '' for none)")
    for name, (distinct, _, event) in ids.items():
        if event:
            roles.ignored.append(name)
            roles.notes.append(f"{name} looks like an event id ({distinct:,} distinct values): not a feature")
    return roles
