"""The records of the data path: events scored (:class:`Prediction`, :class:`ShadowPrediction`),
the monitor's input (:class:`FeatureBatch`, :class:`ModelInputs`), delayed labels
(:class:`Label`) and the label join's output (:class:`LabelledExample`); and :class:`Message`,
one outbound Kafka record. Encoded and decoded by :mod:`stream.messages.codec`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sized
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np

from stream.messages.columns import (
    PACKED,
    CategoryCodes,
    Cell,
    PackedCategories,
    PackedFloats,
    b64_bytes,
    pack_codes,
    pack_floats,
    packed_rows,
)

SCORE_COLUMN = "score"  # the model's output among the monitored columns and in reference profiles
SCHEMA_VERSION: Final = 1

Headers = list[tuple[str, bytes]]


class Message(msgspec.Struct, frozen=True):
    """One outbound Kafka record, as :func:`stream.kafka.send_messages` sends it."""

    key: bytes | None
    value: bytes | None  # None: a tombstone
    headers: Headers | None = None
    timestamp_ms: int | None = None


class Prediction(msgspec.Struct, kw_only=True, gc=False):
    """One scored event (topic ``predictions``, keyed by entity)."""

    event_id: str
    entity_id: str
    score: Annotated[float, msgspec.Meta(
        description="positive-class probability (classification) or predicted value (regression)")]
    model: str
    model_version: str
    ingest_ts_ms: Annotated[int, msgspec.Meta(description="Kafka timestamp of the event record")]
    scored_ts_ms: Annotated[int, msgspec.Meta(
        description="when the batch was scored; scored_ts_ms - ingest_ts_ms is the end-to-end latency")]


class ShadowPrediction(msgspec.Struct, kw_only=True, gc=False):
    """One event scored by a version that does not serve (topic ``mlstream.shadow-predictions``,
    keyed and partitioned like the event): a ``shadow`` waiting for promotion, or the
    ``previous`` champion guarding a promotion. It carries the champion's score of the same
    feature row, so every labelled event compares the two on the same inputs. Never on
    ``predictions``.

    Examples
    --------
    >>> from stream.messages import decode, encode
    >>> p = ShadowPrediction(event_id="e1", entity_id="c1", score=0.2, model="fraud", model_version="2",
    ...                      role="shadow", champion_version="1", champion_score=0.25,
    ...                      ingest_ts_ms=1, scored_ts_ms=2)
    >>> decode(encode(p), ShadowPrediction).role
    'shadow'
    """

    event_id: str
    entity_id: str
    score: float
    model: str
    model_version: Annotated[str, msgspec.Meta(description="the version that made this (non-serving) score")]
    role: Literal["shadow", "previous"]
    champion_version: Annotated[str, msgspec.Meta(description="the serving version, scored on the same row")]
    champion_score: float
    ingest_ts_ms: int
    scored_ts_ms: int


class ModelInputs(msgspec.Struct, kw_only=True):
    """The model input matrix exactly as scored: little-endian float32 bytes, base64.

    >>> ModelInputs.from_array(np.array([[1.5, -2.0]], np.float32)).to_array().tolist()
    [[1.5, -2.0]]
    """

    dtype: Literal["float32"] = "float32"
    shape: list[int]
    b64: str

    @classmethod
    def from_array(cls, X: np.ndarray) -> ModelInputs:
        X = np.ascontiguousarray(X, dtype="<f4")
        return cls(shape=list(X.shape), b64=base64.b64encode(X.tobytes()).decode())

    def to_array(self) -> np.ndarray:
        X = np.frombuffer(binascii.a2b_base64(self.b64, strict_mode=True), dtype="<f4")
        if len(self.shape) != 2 or X.size != self.shape[0] * self.shape[1]:
            raise ValueError(f"inputs of {X.size} values do not fill shape {self.shape}")
        return X.reshape(self.shape)

    def rows(self) -> int:
        """The matrix's rows, its size checked from the base64's length, not decoded (the monitor
        decodes a batch's inputs only when a label joins one of its rows).

        >>> ModelInputs(shape=[2, 3], b64="AAAA").rows()
        Traceback (most recent call last):
        ...
        ValueError: inputs of 3 bytes do not fill shape [2, 3]
        """
        size = b64_bytes(self.b64)
        if len(self.shape) != 2 or len(self.b64) % 4 or size != 4 * self.shape[0] * self.shape[1]:
            raise ValueError(f"inputs of {size} bytes do not fill shape {self.shape}")
        return int(self.shape[0])


_Column = list[Cell] | PackedFloats | PackedCategories


class FeatureBatch(msgspec.Struct, kw_only=True):
    """The monitor's input: the monitored columns of one micro-batch of one partition
    (internal topic ``mlstream.features``). Float columns are packed (:class:`PackedFloats`, NaN
    for missing), and so are the categories the scorer's features code (:class:`PackedCategories`,
    from :class:`CategoryCodes`); other columns, and columns written as JSON arrays (null for
    missing: a scorer from before packing, or another producer), are lists.

    Built with numpy arrays by the scorer (:meth:`from_arrays`), read by the monitor as arrays
    (:meth:`monitor_columns`).

    Examples
    --------
    >>> from stream.messages import decode, encode
    >>> import numpy as np
    >>> fb = FeatureBatch.from_arrays(partition=0, model="fraud", model_version="1",
    ...     event_ids=["a", "b"], ingest_ts_ms=np.array([5, 6]), event_ts=np.array([1.0, 2.0]),
    ...     scores=np.array([0.1, 0.9]), columns={"amount": np.array([3.5, np.nan]),
    ...                                           "country": np.array(["DE", "FR"])}, entity_ids=["u1", "u2"])
    >>> raw = encode(fb)
    >>> raw[raw.index(b'"scores"'):]
    b'"scores":[0.1,0.9],"columns":{"amount":{"dtype":"float64","b64":"AAAAAAAADEAAAAAAAAD4fw=="},"country":["DE","FR"]},"entity_ids":["u1","u2"]}'
    >>> kinds = {"amount": "numeric", "country": "categorical", "score": "numeric"}
    >>> cols = decode(raw, FeatureBatch).monitor_columns(kinds)
    >>> cols["amount"].tolist(), cols["country"], cols["score"].tolist()
    ([3.5, nan], ['DE', 'FR'], [0.1, 0.9])
    >>> unpacked = raw.replace(b'{"dtype":"float64","b64":"AAAAAAAADEAAAAAAAAD4fw=="}', b'[3.5,null]')
    >>> decode(unpacked, FeatureBatch).monitor_columns(kinds)["amount"].tolist()
    [3.5, nan]
    >>> decode(raw, FeatureBatch).column("amount")
    [3.5, None]
    >>> decode(raw.replace(b'"b"]', b'"b","c"]'), FeatureBatch)
    Traceback (most recent call last):
    ...
    stream.errors.MessageError: malformed FeatureBatch: 3 event ids but 2 ingest times
    """

    partition: int
    model: str
    model_version: str
    event_ids: list[str]
    ingest_ts_ms: list[int]
    event_ts: Annotated[list[float | None], msgspec.Meta(
        description="event time (the domain's time field) per row; the monitor merges partitions in this order")]
    scores: list[float | None]
    columns: dict[str, _Column]
    inputs: Annotated[ModelInputs | None, msgspec.Meta(
        description="the model input rows as scored; joined with labels they become labelled examples")] = None
    entity_ids: Annotated[list[str] | None, msgspec.Meta(
        description="entity (message key) per row: the monitor caps one entity's weight in category shares")] = None

    def __post_init__(self) -> None:
        n = len(self.event_ids)
        # (from_arrays passes the inputs as the dict orjson encodes: checked there)
        if isinstance(self.inputs, ModelInputs) and self.inputs.shape and self.inputs.shape[0] != n:
            raise ValueError(f"{n} event ids but {self.inputs.shape[0]} input rows")
        lengths: list[tuple[str, Sized]] = [("ingest times", self.ingest_ts_ms),
                                            ("event times", self.event_ts), ("scores", self.scores)]
        if self.entity_ids is not None:
            lengths.append(("entity ids", self.entity_ids))
        for name, col in [*lengths, *self.columns.items()]:
            # packed: n values of w bytes take 4 * ceil(w n / 3) characters (from_arrays passes
            # the dict orjson writes; a decoded one holds whole values, as bytes)
            packed = isinstance(col, (dict, PackedFloats, PackedCategories))
            if isinstance(col, dict):
                b64, dtype = col["b64"], col["dtype"]
                width = PACKED[dtype][0]
                rows = n if len(b64) == 4 * -(-width * n // 3) else packed_rows(b64, dtype)
            else:
                rows = len(col)
            if rows != n:
                raise ValueError(f"{n} event ids but {rows} {'packed values of ' if packed else ''}{name}")

    @classmethod
    def from_arrays(cls, *, partition: int, model: str, model_version: str, event_ids: list[str],
                    ingest_ts_ms: np.ndarray, event_ts: np.ndarray, scores: np.ndarray,
                    columns: Mapping[str, Any], inputs: np.ndarray | None = None,
                    entity_ids: list[str] | None = None) -> FeatureBatch:
        """The scorer's constructor: float columns and :class:`CategoryCodes` packed (as the plain
        dicts orjson writes), other columns as lists; the other numpy arrays ride through to
        :func:`encode` unconverted."""
        cols = {k: {"dtype": "float64", "b64": pack_floats(v)} if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                else {"dtype": "category", "values": v.values, "b64": pack_codes(v.codes)}
                if isinstance(v, CategoryCodes) else list(v) for k, v in columns.items()}
        # encoded by orjson, numpy and all (and the inputs as the plain dict orjson writes)
        arrays: Any = (ingest_ts_ms, event_ts, scores, cols,
                       None if inputs is None else msgspec.structs.asdict(ModelInputs.from_array(inputs)))
        return cls(partition=partition, model=model, model_version=model_version,
                   event_ids=event_ids, ingest_ts_ms=arrays[0], event_ts=arrays[1],
                   scores=arrays[2], columns=arrays[3], inputs=arrays[4], entity_ids=entity_ids)

    def monitor_columns(self, kinds: Mapping[str, str]) -> dict[str, Any]:
        """The columns the monitor tests (``kinds`` from the reference profile), score included:
        numeric ones as float arrays (null -> NaN), categorical ones as lists (the batch's own,
        not copied: a copy touches every string again) or, packed, as :class:`CategoryCodes`.
        A column the batch lacks raises ``KeyError``."""
        out: dict[str, Any] = {}
        for name, kind in kinds.items():
            if name == SCORE_COLUMN:
                out[name] = np.asarray(self.scores, dtype=np.float64)
                continue
            col = self.columns[name]
            if isinstance(col, PackedFloats):
                out[name] = col.to_array() if kind == "numeric" else col.to_array().tolist()
            elif isinstance(col, PackedCategories):
                codes = col.to_codes()
                out[name] = np.array(codes.tolist(), dtype=np.float64) if kind == "numeric" else codes
            elif kind == "numeric":
                out[name] = np.array(col, dtype=np.float64)
            else:
                out[name] = col
        return out

    def column(self, name: str) -> list[Any]:
        """One column as plain values, null (None) where missing, packed or not: for readers
        outside the monitor (the drift report, tests). ``KeyError`` if the batch lacks it."""
        col = self.columns[name]
        if isinstance(col, PackedFloats):
            return [None if v != v else v for v in col.to_array().tolist()]  # NaN -> None
        if isinstance(col, PackedCategories):
            return col.to_codes().tolist()
        return list(col)


class Label(msgspec.Struct, kw_only=True):
    """A delayed label (topic ``labels``), keyed like its event so it lands in its partition."""

    event_id: str
    label: Annotated[float | bool, msgspec.Meta(description="0/1 (or false/true) for classifiers, "
                                                            "the true value for regression")]
    ts: float | None = None


class LabelledExample(msgspec.Struct, kw_only=True):
    """A scored event joined with its delayed label (topic ``mlstream.labelled-examples``,
    keyed by event id), written by the monitor's label join, read by the trainer.

    Examples
    --------
    >>> from stream.messages import decode, encode
    >>> ex = LabelledExample(event_id="e1", event_ts=60.0, model="fraud", model_version="3",
    ...                      inputs=[1.0, 0.0], categories={"channel": "web"}, score=0.25, label=1.0,
    ...                      labelled_at=99.0)
    >>> decode(encode(ex), LabelledExample).model_version
    '3'
    """

    schema_version: Literal[1] = 1
    event_id: str
    event_ts: float
    model: str
    model_version: Annotated[str, msgspec.Meta(description="the version that scored the event")]
    inputs: Annotated[list[float], msgspec.Meta(description="the model input row exactly as scored")]
    categories: Annotated[dict[str, str | None], msgspec.Meta(
        description="raw values of the monitored categorical fields (for the challenger's reference profile)")] = {}
    score: float | None
    label: float
    labelled_at: float
