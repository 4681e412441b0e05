"""Event schemas: what a valid event looks like, and the one-line reason when it is not.

A schema is declared once per domain; the same object validates events online (bad ones go
to the dead-letter topic with ``ValidationError.reason``) and offline (training data).
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import numpy as np
import orjson

from stream.errors import DomainError, ValidationError
from stream.features import to_columns

FieldKind = Literal["string", "number", "integer", "category", "timestamp"]

# Fixed set: these are the values of the dead-letter metric's ``reason`` label.
REASONS = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "not_finite",
    "out_of_range",
    "unknown_field",
    "unknown_schema_version",
    "too_large",
)
# Every dead-letter reason: the validation ones, plus a record whose processing raised
# (stream.error_policy) and a score that is not finite or out of range.
DEAD_LETTER_REASONS = REASONS + ("processing_error", "invalid_score")


SMALL_BATCH = 16  # up to this many events, row-wise validation is the cheaper path
_NON_FINITE_LITERAL = re.compile(rb"[:\[,]\s*-?(NaN|Infinity)\b")


class ParsedBatch(NamedTuple):
    valid: np.ndarray  # positions of the valid rows in the input batch, ascending
    columns: dict[str, np.ndarray]  # one array per field over the valid rows
    errors: dict[int, ValidationError]  # position -> why that row is invalid


@dataclass(frozen=True)
class Field:
    """One field of an event.

    ``min``/``max`` bound numbers; ``max_length`` bounds strings (ids and categories);
    ``allowed`` lists the only values accepted (any other is dead-lettered as ``out_of_range``).

    Examples
    --------
    >>> s = Schema("demo", fields=(Field("id", "string"), Field("user", "string"), Field("ts", "timestamp"),
    ...     Field("channel", "category", allowed=("web", "pos"))), id_field="id", entity_field="user", time_field="ts")
    >>> try:
    ...     s.parse(b'{"id": "e1", "user": "u1", "ts": 1, "channel": "fax"}')
    ... except ValidationError as e:
    ...     print(e.reason, "|", e)
    out_of_range | field 'channel' = 'fax' is not one of ['web', 'pos']
    >>> s.parse_batch([b'{"id": "e1", "user": "u1", "ts": 1, "channel": "fax"}',
    ...                b'{"id": "e2", "user": "u1", "ts": 2, "channel": "pos"}']).valid.tolist()
    [1]
    """

    name: str
    kind: FieldKind
    required: bool = True
    min: float | None = None
    max: float | None = None
    max_length: int = 256
    allowed: tuple[str | float, ...] | None = None

    def __post_init__(self) -> None:
        if self.allowed is not None and not self.allowed:
            raise DomainError(f"field {self.name!r}: allowed values must not be empty (None: any value)")
        if self.allowed is not None and not isinstance(self.allowed, tuple):  # a list: hashable, as a field is
            object.__setattr__(self, "allowed", tuple(self.allowed))
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise DomainError(f"field {self.name!r}: max_length must be a positive integer, not {self.max_length!r}")


@dataclass(frozen=True)
class Schema:
    """The shape of one domain's events.

    Examples
    --------
    >>> s = Schema("demo", fields=(Field("id", "string"), Field("user", "string"),
    ...     Field("x", "number", min=0), Field("ts", "timestamp")),
    ...     id_field="id", entity_field="user", time_field="ts")
    >>> s.parse(b'{"id": "e1", "user": "u1", "x": 2.5, "ts": 1700000000}')["x"]
    2.5
    >>> try:
    ...     s.parse(b'{"id": "e1", "user": "u1", "x": -1, "ts": 1700000000}')
    ... except ValidationError as e:
    ...     print(e.reason, "|", e)
    out_of_range | field 'x' = -1 is below the minimum 0
    """

    name: str
    fields: tuple[Field, ...]
    id_field: str
    entity_field: str
    time_field: str
    versions: tuple[int, ...] = (1,)
    version_field: str = "schema_version"
    unknown_fields: Literal["reject", "ignore"] = "reject"
    max_bytes: int = 64 * 1024
    _by_name: dict[str, Field] = field(init=False, repr=False, compare=False)
    _kinds: dict[str, str] = field(init=False, repr=False, compare=False)
    _accepts_value: tuple[tuple[str, Callable[[Any], bool]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {f.name: f for f in self.fields}
        if len(by_name) != len(self.fields):
            raise DomainError(f"schema {self.name!r} has duplicate field names")
        for needed in (self.id_field, self.entity_field, self.time_field):
            if needed not in by_name:
                raise DomainError(f"schema {self.name!r} has no field {needed!r}")
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_kinds", {f.name: f.kind for f in self.fields})
        object.__setattr__(self, "_accepts_value", tuple((f.name, _accepts(f)) for f in self.fields))

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def parse_batch(self, raws: Sequence[bytes]) -> ParsedBatch:
        """Decode and validate a batch; valid events come back as columns, in input order.

        Rows holding exactly the schema's fields, each of its JSON type, are decoded typed
        (:func:`_typed_decoder`) and their ranges checked column-wise with numpy (the hot
        path); any other row, or a row a column check flags, goes through :meth:`parse`, so
        both paths give the same verdict and the same one-line reason.
        """
        n = len(raws)
        if n <= SMALL_BATCH:
            return self._parse_rows(raws)
        errors: dict[int, ValidationError] = {}
        # rows holding exactly the schema's fields, of the right types and string lengths, are
        # decoded by msgspec straight into typed tuples (C, ~2x orjson's dicts then type checks);
        # any other row fails it and goes through :meth:`parse` for its verdict and reason
        decode, astuple = _typed_decoder(self.fields).decode, msgspec.structs.astuple
        short = max(map(len, raws)) <= self.max_bytes
        fast: list[int] = []
        rows: list[Any] = []
        for i, raw in enumerate(raws):
            if short or len(raw) <= self.max_bytes:
                try:
                    rows.append(astuple(decode(raw)))
                    fast.append(i)
                except msgspec.MsgspecError:
                    pass
        picked = dict(zip(self._by_name, zip(*rows))) if rows else {name: () for name in self._by_name}
        flagged = np.zeros(len(fast), dtype=bool)
        fast_cols: dict[str, np.ndarray] = {}
        for spec in self.fields:
            values = picked[spec.name]
            if spec.kind in ("string", "category"):
                if spec.allowed is not None:
                    ok = set(spec.allowed)
                    flagged |= np.fromiter((v not in ok for v in values), bool, len(values))
                fast_cols[spec.name] = np.array(values, dtype=object)
                continue
            arr = np.array(values, dtype=np.float64)
            # a number written as an integer past 64 bits reaches a float field through msgspec's
            # int-to-float conversion, where orjson parses it as a float itself: both round, but
            # whether always alike is not established, so ``parse`` decides (a rare row)
            flagged |= ~(np.abs(arr) < 2.0**63)
            if spec.min is not None:
                flagged |= arr < spec.min
            if spec.max is not None:
                flagged |= arr > spec.max
            if spec.allowed is not None:
                flagged |= ~np.isin(arr, np.asarray(spec.allowed, dtype=np.float64))
            fast_cols[spec.name] = arr
        valid = np.ones(n, dtype=bool)
        slow = np.ones(n, dtype=bool)
        slow[fast] = False
        slow[np.asarray(fast, dtype=np.int64)[flagged]] = True
        slow_events: dict[int, dict[str, Any]] = {}
        for i in np.flatnonzero(slow).tolist():  # plain ints, the keys of ``errors``
            try:
                slow_events[i] = self.parse(raws[i])
            except ValidationError as exc:
                errors[i] = exc
                valid[i] = False
        index = np.flatnonzero(valid)
        if not slow_events:  # every valid row came through the fast path
            keep = ~flagged
            cols = {k: v[keep] for k, v in fast_cols.items()}
        else:
            names, typed = tuple(self._by_name), dict(zip(fast, rows))
            cols = to_columns([slow_events[i] if i in slow_events else dict(zip(names, typed[i]))
                               for i in index.tolist()], self._kinds)
        return ParsedBatch(index, cols, errors)

    def _parse_rows(self, raws: Sequence[bytes]) -> ParsedBatch:
        """A few events: row by row costs less than a numpy pass per field. A row holding
        exactly the schema's fields, each plainly valid (:func:`_accepts`), is taken as it is;
        any other goes through :meth:`parse` for its verdict and reason (the same verdicts and
        columns as the columnar path, see ``tests/test_schema.py``)."""
        events, valid, errors = [], [], {}
        keyset, checks, loads = self._by_name.keys(), self._accepts_value, orjson.loads
        for i, raw in enumerate(raws):
            try:
                event = loads(raw) if len(raw) <= self.max_bytes else None
            except orjson.JSONDecodeError:
                event = None
            if type(event) is dict and event.keys() == keyset:
                for name, accepts in checks:
                    if not accepts(event[name]):
                        break
                else:
                    events.append(event)
                    valid.append(i)
                    continue
            try:
                events.append(self.parse(raw))
                valid.append(i)
            except ValidationError as exc:
                errors[i] = exc
        return ParsedBatch(np.asarray(valid, dtype=np.int64), to_columns(events, self._kinds), errors)

    def parse(self, raw: bytes) -> dict[str, Any]:
        """Decode and validate one event, raising :class:`ValidationError`."""
        if len(raw) > self.max_bytes:
            raise ValidationError("too_large", f"event is {len(raw)} bytes, limit {self.max_bytes}")
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # Python's json writes NaN/Infinity literals, which JSON does not allow.
            if _NON_FINITE_LITERAL.search(raw):
                raise ValidationError("not_finite", "NaN or Infinity is not a number") from None
            if "infinity when parsed" in str(exc):  # 1e309: a number beyond float64
                raise ValidationError("not_finite", f"a number overflows to infinity: {exc}") from None
            raise ValidationError("not_json", f"not valid JSON: {exc}") from None
        if not isinstance(event, dict):
            raise ValidationError("not_object", f"expected a JSON object, got {type(event).__name__}")
        self.validate(event)
        return event

    def validate(self, event: dict[str, Any]) -> None:
        version = event.get(self.version_field, self.versions[-1])
        if version not in self.versions or isinstance(version, bool):
            raise ValidationError(
                "unknown_schema_version",
                f"schema version {version!r} is not one of {list(self.versions)}",
            )
        if self.unknown_fields == "reject":
            for key in event:
                if key not in self._by_name and key != self.version_field:
                    raise ValidationError("unknown_field", f"unknown field {key[:64]!r}")
        for spec in self.fields:
            value = event.get(spec.name)
            if value is None:
                if spec.required:
                    raise ValidationError("missing_field", f"missing field {spec.name!r}")
                continue
            _check(spec, value)


_LARGEST = sys.float_info.max


@functools.lru_cache(maxsize=64)
def _typed_decoder(fields: tuple[Field, ...]) -> msgspec.json.Decoder[Any]:
    """A decoder of an event holding exactly ``fields``, each of its JSON type (a number for a
    number, an int for an integer, a string of 1..max_length characters): a typed struct per
    row, its fields in schema order. Ranges and allowed values are checked on the columns.

    >>> d = _typed_decoder((Field("user", "string", max_length=3), Field("n", "integer"), Field("x", "number")))
    >>> msgspec.structs.astuple(d.decode(b'{"x": 2, "n": 1, "user": "u1"}'))
    ('u1', 1, 2.0)
    >>> for raw in (b'{"user": "u1", "n": 1.0, "x": 2}', b'{"user": "u1234", "n": 1, "x": 2}',
    ...             b'{"user": "u1", "n": 1, "x": 2, "y": 3}', b'{"user": "u1", "n": true, "x": 2}'):
    ...     try:
    ...         d.decode(raw)
    ...     except msgspec.ValidationError as exc:
    ...         print(exc)
    Expected `int`, got `float` - at `$.n`
    Expected `str` of length <= 3 - at `$.user`
    Object contains unknown field `y`
    Expected `int`, got `bool` - at `$.n`
    """
    def typed(spec: Field) -> Any:
        if spec.kind in ("string", "category"):
            # (a bound past any string there can be: msgspec takes int64 bounds only)
            return Annotated[str, msgspec.Meta(min_length=1, max_length=min(spec.max_length, 2**62))]
        # an integer past 64 bits (msgspec reads ~4,300 digits; orjson makes it a float, ``parse`` a
        # wrong type or not finite): refused here, judged there
        return Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] if spec.kind == "integer" else float

    row = msgspec.defstruct("Row", [(f"f{i}", typed(spec)) for i, spec in enumerate(fields)],
                            rename={f"f{i}": spec.name for i, spec in enumerate(fields)},
                            forbid_unknown_fields=True)
    return msgspec.json.Decoder(row)


def _accepts(spec: Field) -> Callable[[Any], bool]:
    """A quick test that ``value`` passes :func:`_check` for ``spec``: True only for a value
    :func:`_check` accepts (plain ``str``/``int``/``float``, finite, in range); False sends the
    row through the full check for its verdict and reason.

    >>> ok = _accepts(Field("x", "number", min=0))
    >>> ok(2.5), ok(3), ok(-1.0), ok(float("nan")), ok(float("inf")), ok(True), ok("2")
    (True, True, False, False, False, False, False)
    >>> ok = _accepts(Field("c", "category", max_length=3, allowed=("web", "pos")))
    >>> ok("web"), ok("fax"), ok(""), ok(1)
    (True, False, False, False)
    """
    allowed = None if spec.allowed is None else frozenset(spec.allowed)
    if spec.kind in ("string", "category"):
        longest = spec.max_length
        if allowed is None:
            return lambda v: type(v) is str and 0 < len(v) <= longest
        return lambda v: type(v) is str and 0 < len(v) <= longest and v in allowed
    lo = -_LARGEST if spec.min is None else max(spec.min, -_LARGEST)  # bounds also refuse ±inf and NaN
    hi = _LARGEST if spec.max is None else min(spec.max, _LARGEST)
    types: tuple[type, ...] = (int,) if spec.kind == "integer" else (int, float)
    if allowed is None:
        return lambda v: type(v) in types and lo <= v <= hi
    return lambda v: type(v) in types and lo <= v <= hi and v in allowed


def _check(spec: Field, value: Any) -> None:
    kind = spec.kind
    if kind in ("string", "category"):
        if not isinstance(value, str):
            raise ValidationError(
                "wrong_type", f"field {spec.name!r} must be a string, got {type(value).__name__}"
            )
        if not value or len(value) > spec.max_length:
            raise ValidationError(
                "out_of_range", f"field {spec.name!r} must have 1..{spec.max_length} characters"
            )
        _check_allowed(spec, value)
        return
    # JSON booleans are ints in Python: refuse them explicitly.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            "wrong_type", f"field {spec.name!r} must be a number, got {type(value).__name__}"
        )
    if kind == "integer" and not isinstance(value, int):
        raise ValidationError("wrong_type", f"field {spec.name!r} must be an integer")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("not_finite", f"field {spec.name!r} is {value}")
    if spec.min is not None and value < spec.min:
        raise ValidationError(
            "out_of_range", f"field {spec.name!r} = {value} is below the minimum {spec.min:g}"
        )
    if spec.max is not None and value > spec.max:
        raise ValidationError(
            "out_of_range", f"field {spec.name!r} = {value} is above the maximum {spec.max:g}"
        )
    _check_allowed(spec, value)


def _check_allowed(spec: Field, value: Any) -> None:
    if spec.allowed is not None and value not in spec.allowed:
        shown = list(spec.allowed[:10]) + (["…"] if len(spec.allowed) > 10 else [])
        shown_value = repr(value[:64]) if isinstance(value, str) else f"{value:g}"
        raise ValidationError("out_of_range", f"field {spec.name!r} = {shown_value} is not one of {shown}")
