"""Every message on the bus as one typed record, with one vocabulary and one codec.

Scoring, monitoring and training meet only here and in :mod:`stream.kafka`, as they meet in
Kafka. One vocabulary of keys on every topic: ``model`` (the name), ``model_version``,
``event_id``, ``entity_id``, ``schema_version``. :func:`encode` turns a record into bytes,
:func:`decode` bytes into a record of the asked type, or raises :class:`MessageError` with a
one-line reason (the workers count and skip those; they never stop on a bad message).
``python -m stream.tools.schemas`` writes the JSON Schemas in ``schemas/`` from these records
(``--check`` only compares; ``tests/test_messages.py`` fails when they differ).

Why msgspec
-----------
Measured with ``scripts/bench_messages.py`` (Python 3.11, orjson 3.13.0, msgspec 0.23.0,
pydantic 2.14.4; best of 15 on 2 shared, loaded cores, so rows move by +-30% between runs):

=======================================  ===========  ==========  ========  ========
per message                              orjson dict  dataclass   msgspec   pydantic
                                         (before)     + orjson    Struct    v2
=======================================  ===========  ==========  ========  ========
prediction encode, ns (in a 2,000 loop)  5,900        6,400       640       6,800
prediction decode, ns                    1,800        3,300       700       4,800
feature batch encode, us (2,000 rows)    900-1,500    900-1,200   2,000+    8,800
feature batch decode + arrays, us        2,400        2,900       3,000     5,600
=======================================  ===========  ==========  ========  ========

In the scorer itself (``BatchScorer.process``, before and after interleaved in one process, min
of 40 rounds of 20,000 events) the serialize stage went from 2.8 to 1.5 us per event (3.6 to
2.2 with feature batches), with the same bytes out. msgspec Structs are built and encoded
without an intermediate dict, decode *and validate* in one pass (the error names the field),
and generate the JSON Schemas, so the files cannot drift from the code; pydantic validates too
but costs more than the unvalidated dict did. The one place orjson stays is the feature batch's
*encode*: its columns are numpy arrays, which orjson writes natively (msgspec would need
``tolist()`` first, ~2x slower); the JSON is the same either way (NaN -> null). Its decode
checks everything but the column cells, which :meth:`FeatureBatch.monitor_columns` checks when
it makes arrays of them: +12% over ``orjson.loads`` (1.31 -> 1.46 ms per 2,000 rows,
interleaved), against +35% with a typed union per cell.

Unknown fields are ignored on decode (a newer producer may add fields); missing or mistyped
ones are errors.

Examples
--------
>>> p = Prediction(event_id="e1", entity_id="u1", score=0.25, model="fraud", model_version="1",
...                ingest_ts_ms=1_700_000_000_000, scored_ts_ms=1_700_000_000_012)
>>> encode(p)
b'{"event_id":"e1","entity_id":"u1","score":0.25,"model":"fraud","model_version":"1","ingest_ts_ms":1700000000000,"scored_ts_ms":1700000000012}'
>>> decode(encode(p), Prediction) == p
True
>>> decode(b'{"event_id": "e1", "label": "yes"}', Label)
Traceback (most recent call last):
...
stream.errors.MessageError: malformed Label: Expected `bool | float`, got `str` - at `$.label`
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence, Sized
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
import numpy as np
import orjson

from stream.errors import MessageError
from stream.schema import DEAD_LETTER_REASONS

__all__ = [
    "SCORE_COLUMN",
    "DeadLetter",
    "DeadLetterHeaders",
    "DriftEvent",
    "FeatureBatch",
    "Label",
    "LabelledExample",
    "Message",
    "MessageError",
    "ModelChunk",
    "ModelInputs",
    "ModelStates",
    "ModelUpdate",
    "Prediction",
    "RetrainRequest",
    "ShadowPrediction",
    "ShadowVerdict",
    "decode",
    "encode",
    "to_dict",
]

SCORE_COLUMN = "score"  # the model's output among the monitored columns and in reference profiles
SCHEMA_VERSION: Final = 1

# Dead-letter headers (UTF-8 values); the original record's headers follow them.
REASON_HEADER = "mlstream.error.reason"
MESSAGE_HEADER = "mlstream.error.message"
SOURCE_TOPIC_HEADER = "mlstream.source.topic"
SOURCE_PARTITION_HEADER = "mlstream.source.partition"
SOURCE_OFFSET_HEADER = "mlstream.source.offset"
ERROR_CLASS_HEADER = "mlstream.error.class"
# a producer's own header named like one of ours is kept under this prefix: ours win
PRODUCER_HEADER_PREFIX = "producer."
MAX_ERROR_MESSAGE = 1_000

Headers = list[tuple[str, bytes]]
T = TypeVar("T")


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


ErrorReason = Literal[DEAD_LETTER_REASONS]  # type: ignore[valid-type]  # built from the one list of codes
_Digits = Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]


class DeadLetterHeaders(msgspec.Struct, kw_only=True):
    """The headers of a dead letter, as an object (the schema of topic ``events.dlq``)."""

    reason: ErrorReason = msgspec.field(name=REASON_HEADER)
    message: Annotated[str, msgspec.Meta(max_length=MAX_ERROR_MESSAGE)] = msgspec.field(name=MESSAGE_HEADER)
    source_topic: str = msgspec.field(name=SOURCE_TOPIC_HEADER)
    source_partition: _Digits = msgspec.field(name=SOURCE_PARTITION_HEADER)
    source_offset: _Digits = msgspec.field(name=SOURCE_OFFSET_HEADER)
    error_class: Annotated[str, msgspec.Meta(
        description="the exception's class (reason processing_error only)")] = msgspec.field(
        default="", name=ERROR_CLASS_HEADER)


class DeadLetter(msgspec.Struct, kw_only=True):
    """An event that failed: its original key and bytes, unchanged (a tombstone stays one),
    and why and where from. mlstream's headers come first and replace any of the producer's
    with the same name, which is kept as ``producer.<name>``: a consumer reading the headers
    into a dict sees ours.

    Examples
    --------
    >>> dl = DeadLetter(key=b"u1", value=b"{bad", reason="not_json", message="not JSON",
    ...                 source_topic="events", source_partition=3, source_offset=42,
    ...                 headers=[("mlstream.error.reason", b"spoofed"), ("trace", b"t1")])
    >>> m = dl.to_message()
    >>> m.value, [name for name, _ in m.headers][:2]
    (b'{bad', ['mlstream.error.reason', 'mlstream.error.message'])
    >>> dict(m.headers)["mlstream.error.reason"], dict(m.headers)["producer.mlstream.error.reason"]
    (b'not_json', b'spoofed')
    >>> DeadLetter.from_kafka(m.key, m.value, m.headers, m.timestamp_ms) == dl
    True
    """

    key: bytes | None
    value: bytes | None
    reason: str
    message: str
    source_topic: str
    source_partition: int
    source_offset: int
    headers: Headers = []  # the original record's headers
    timestamp_ms: int | None = None
    error_class: str | None = None  # the exception's class, for processing_error

    def to_message(self) -> Message:
        headers = [
            (REASON_HEADER, self.reason.encode()),
            (MESSAGE_HEADER, self.message[:MAX_ERROR_MESSAGE].encode(errors="replace")),
            (SOURCE_TOPIC_HEADER, self.source_topic.encode()),
            (SOURCE_PARTITION_HEADER, str(self.source_partition).encode()),
            (SOURCE_OFFSET_HEADER, str(self.source_offset).encode()),
        ]
        if self.error_class is not None:
            headers.append((ERROR_CLASS_HEADER, self.error_class.encode()))
        headers += [(PRODUCER_HEADER_PREFIX + k if k in _OURS else k, v) for k, v in self.headers]
        return Message(self.key, self.value, headers, self.timestamp_ms)

    @classmethod
    def from_kafka(cls, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]],
                   timestamp_ms: int | None = None) -> DeadLetter:
        """Read one back from the dead-letter topic (missing headers read as ``"?"`` / -1)."""
        h = {k: v.decode(errors="replace") for k, v in headers if k in _OURS}

        def number(name: str) -> int:
            text = h.get(name, "")
            return int(text) if text.isdigit() else -1

        def original(name: str) -> str:
            return name[len(PRODUCER_HEADER_PREFIX):] if name.startswith(PRODUCER_HEADER_PREFIX) \
                and name[len(PRODUCER_HEADER_PREFIX):] in _OURS else name

        return cls(key=key, value=value, reason=h.get(REASON_HEADER, "?"),
                   message=h.get(MESSAGE_HEADER, ""), source_topic=h.get(SOURCE_TOPIC_HEADER, "?"),
                   source_partition=number(SOURCE_PARTITION_HEADER),
                   source_offset=number(SOURCE_OFFSET_HEADER),
                   headers=[(original(k), v) for k, v in headers if k not in _OURS],
                   timestamp_ms=timestamp_ms, error_class=h.get(ERROR_CLASS_HEADER))


_OURS = frozenset({REASON_HEADER, MESSAGE_HEADER, SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER,
                   SOURCE_OFFSET_HEADER, ERROR_CLASS_HEADER})


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
        X = np.frombuffer(base64.b64decode(self.b64), dtype="<f4")
        if len(self.shape) != 2 or X.size != self.shape[0] * self.shape[1]:
            raise ValueError(f"inputs of {X.size} values do not fill shape {self.shape}")
        return X.reshape(self.shape)


# A cell's type is checked where the column becomes an array (monitor_columns): checking it
# here as well costs a third more decode time for the same verdict.
_Cell = Annotated[Any, msgspec.Meta(extra_json_schema={"type": ["number", "string", "null"]})]
_Column = list[_Cell]


class FeatureBatch(msgspec.Struct, kw_only=True):
    """The monitor's input: the monitored columns of one micro-batch of one partition
    (internal topic ``mlstream.features``). Numeric columns carry null for missing (NaN).

    Built with numpy arrays by the scorer (:meth:`from_arrays`), read as lists by the monitor
    (:meth:`monitor_columns` turns them back into arrays, null -> NaN).

    Examples
    --------
    >>> import numpy as np
    >>> fb = FeatureBatch.from_arrays(partition=0, model="fraud", model_version="1",
    ...     event_ids=["a", "b"], ingest_ts_ms=np.array([5, 6]), event_ts=np.array([1.0, 2.0]),
    ...     scores=np.array([0.1, 0.9]), columns={"amount": np.array([3.5, np.nan]),
    ...                                           "country": np.array(["DE", "FR"])})
    >>> raw = encode(fb)
    >>> raw[raw.index(b'"scores"'):]
    b'"scores":[0.1,0.9],"columns":{"amount":[3.5,null],"country":["DE","FR"]}}'
    >>> cols = decode(raw, FeatureBatch).monitor_columns({"amount": "numeric", "country": "categorical",
    ...                                                   "score": "numeric"})
    >>> cols["amount"].tolist(), cols["country"], cols["score"].tolist()
    ([3.5, nan], ['DE', 'FR'], [0.1, 0.9])
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

    def __post_init__(self) -> None:
        n = len(self.event_ids)
        # (from_arrays passes the inputs as the dict orjson encodes: checked there)
        if isinstance(self.inputs, ModelInputs) and self.inputs.shape and self.inputs.shape[0] != n:
            raise ValueError(f"{n} event ids but {self.inputs.shape[0]} input rows")
        lengths: list[tuple[str, Sized]] = [("ingest times", self.ingest_ts_ms),
                                            ("event times", self.event_ts), ("scores", self.scores)]
        for name, col in [*lengths, *self.columns.items()]:
            if len(col) != n:
                raise ValueError(f"{n} event ids but {len(col)} {name}")

    @classmethod
    def from_arrays(cls, *, partition: int, model: str, model_version: str, event_ids: list[str],
                    ingest_ts_ms: np.ndarray, event_ts: np.ndarray, scores: np.ndarray,
                    columns: Mapping[str, Any], inputs: np.ndarray | None = None) -> FeatureBatch:
        """The scorer's constructor: numpy columns ride through to :func:`encode` unconverted."""
        cols = {k: v if isinstance(v, np.ndarray) and v.dtype.kind == "f" else list(v)
                for k, v in columns.items()}
        # encoded by orjson, numpy and all (and the inputs as the plain dict orjson writes)
        arrays: Any = (ingest_ts_ms, event_ts, scores, cols,
                       None if inputs is None else msgspec.structs.asdict(ModelInputs.from_array(inputs)))
        return cls(partition=partition, model=model, model_version=model_version,
                   event_ids=event_ids, ingest_ts_ms=arrays[0], event_ts=arrays[1],
                   scores=arrays[2], columns=arrays[3], inputs=arrays[4])

    def monitor_columns(self, kinds: Mapping[str, str]) -> dict[str, Any]:
        """The columns the monitor tests (``kinds`` from the reference profile), score included:
        numeric ones as float arrays (null -> NaN), categorical ones as lists.
        A column the batch lacks raises ``KeyError``."""
        out: dict[str, Any] = {}
        for name, kind in kinds.items():
            if name == SCORE_COLUMN:
                out[name] = np.asarray(self.scores, dtype=np.float64)
            elif kind == "numeric":
                out[name] = np.array(self.columns[name], dtype=np.float64)
            else:
                out[name] = list(self.columns[name])
        return out


class Label(msgspec.Struct, kw_only=True):
    """A delayed label (topic ``labels``), keyed like its event so it lands in its partition."""

    event_id: str
    label: Annotated[float | bool, msgspec.Meta(description="0/1 (or false/true) for classifiers, "
                                                            "the true value for regression")]
    ts: float | None = None


_Evidence = Annotated[dict[str, Any], msgspec.Meta(extra_json_schema={
    "properties": {
        "feature": {"type": "string"}, "test": {"type": "string"}, "statistic": {"type": "number"},
        "threshold": {"type": ["number", "null"]}, "p_value": {"type": ["number", "null"]},
        "effect_size": {"type": ["number", "null"]}, "effect_threshold": {"type": ["number", "null"]},
        "window": {"type": ["integer", "null"]}, "reference": {},
    },
    "required": ["feature", "test"],
})]


class DriftEvent(msgspec.Struct, kw_only=True):
    """A drift state opened or closed (topic ``mlstream.drift``), with its evidence per test."""

    index: Annotated[int, msgspec.Meta(description="row (in the monitor's order) at which it fired")]
    kind: Annotated[str, msgspec.Meta(examples=["data_drift", "score_drift", "multivariate_drift",
                                                "concept_drift", "drift_resolved"])]
    features: list[str]
    evidence: list[_Evidence]
    model: str | None
    model_version: str | None
    detected_at: float
    onset_event_ts: Annotated[float | None, msgspec.Meta(
        description="event time the drift is in force from, when the monitor can date it")] = None


class RetrainRequest(msgspec.Struct, kw_only=True):
    """A request to retrain (topic ``mlstream.retrain-requests``, keyed by ``request_id``)."""

    schema_version: Literal[1]
    request_id: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
    model: str
    model_version: str
    reason: str
    features: list[str]
    evidence: list[_Evidence]
    drift_index: int | None
    requested_at: float
    cooldown_s: float
    onset_event_ts: Annotated[float | None, msgspec.Meta(
        description="event time the drift is in force from (the trainer's onset window starts here)")] = None


class LabelledExample(msgspec.Struct, kw_only=True):
    """A scored event joined with its delayed label (topic ``mlstream.labelled-examples``,
    keyed by event id), written by the monitor's label join, read by the trainer.

    Examples
    --------
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


class ModelUpdate(msgspec.Struct, kw_only=True):
    """What happened to a model (topic ``mlstream.model-updates``): the trainer's answer to a
    request, or a promotion seen by the monitor. ``model_version`` is the version serving after
    the decision; ``champion_version`` / ``challenger_version`` the two that were compared.

    Examples
    --------
    >>> u = ModelUpdate(model="fraud", model_version="2", decision="promote", promoted=True,
    ...                 champion_version="1", challenger_version="2")
    >>> decode(encode(u), ModelUpdate).model_version
    '2'
    """

    schema_version: Literal[1] = 1
    request_id: str | None = None
    model: str | None
    model_version: str | None = None
    decision: Annotated[str, msgspec.Meta(
        examples=["promote", "shadow", "reject", "wait", "expired", "failed", "rollback", "keep"])]
    promoted: bool = False
    reason: str = ""
    reasons: list[str] = []
    champion_version: str | None = None
    challenger_version: str | None = None
    previous_version: str | None = None
    sha256: str | None = None
    metrics: dict[str, dict[str, float | None]] = {}  # per compared role; NaN travels as null
    decided_at: float | None = None
    primary_metric: str | None = None  # log_loss or mae: the one the decision compares
    examples: int | None = None  # labelled examples read for the decision
    training_window: dict[str, Any] = {}  # rows, labels_positive, event_ts range, offsets, scored_by
    holdout_window: dict[str, Any] = {}


ModelFile = Literal["card.json", "model.onnx"]
_Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class ModelChunk(msgspec.Struct, kw_only=True):
    """One piece of one file of a model version (compacted topic ``mlstream.models``, keyed
    ``<model>/<version>/<file>/<index>``). A file larger than a message travels as ``count``
    chunks; each carries the whole file's size and sha256, so a reader checks the reassembled
    bytes before it writes them (:mod:`stream.model_feed`).

    >>> c = ModelChunk(model="fraud", model_version="2", file="model.onnx", index=0, count=1,
    ...                size=3, sha256="0" * 64, data=b"abc")
    >>> encode(c)[-14:], decode(encode(c), ModelChunk).data
    (b'"data":"YWJj"}', b'abc')
    """

    schema_version: Literal[1] = 1
    model: str
    model_version: str
    file: ModelFile
    index: Annotated[int, msgspec.Meta(ge=0)]
    count: Annotated[int, msgspec.Meta(ge=1, description="chunks of this file")]
    size: Annotated[int, msgspec.Meta(ge=0, description="bytes of the whole file")]
    sha256: Annotated[_Sha256, msgspec.Meta(description="of the whole file")]
    data: Annotated[bytes, msgspec.Meta(description="this chunk's bytes (base64)")]


class ModelStates(msgspec.Struct, kw_only=True):
    """A model's registry as scorers need it (topic ``mlstream.models``, keyed ``<model>/states``):
    the version to serve, every version's state, and the sha256 of the ONNX file of each version
    whose files are on the topic. Published after those files, so a reader has them first."""

    schema_version: Literal[1] = 1
    model: str
    champion: Annotated[str | None, msgspec.Meta(description="the version to serve (the store's CURRENT)")]
    states: Annotated[dict[str, str], msgspec.Meta(
        description="version -> candidate, shadow, champion, retired or rejected")]
    files: Annotated[dict[str, _Sha256], msgspec.Meta(
        description="version -> sha256 of its model.onnx, for the versions whose files are on the topic")]
    guard: Annotated[str | None, msgspec.Meta(
        description="the champion the last promotion retired, scored beside the new one until the "
                    "monitor's verdict (None: no guard open)")] = None
    reason: str = ""
    published_at: float


class ShadowVerdict(msgspec.Struct, kw_only=True):
    """The monitor's live comparison of a non-serving version with the champion on the same
    labelled events (topic ``mlstream.shadow-verdicts``), acted on by the trainer: for role
    ``shadow`` ``promote`` or ``reject``; for role ``previous`` (the guard after a promotion)
    ``rollback`` or ``keep``. ``verdict_id`` is the same for repeats.

    Examples
    --------
    >>> v = ShadowVerdict(verdict_id="fraud:shadow:2:1", model="fraud", role="shadow", model_version="2",
    ...                   champion_version="1", verdict="promote", labelled=2000)
    >>> decode(encode(v), ShadowVerdict).verdict
    'promote'
    """

    schema_version: Literal[1] = 1
    verdict_id: str
    model: str
    role: Literal["shadow", "previous"]
    model_version: Annotated[str, msgspec.Meta(description="the compared version (shadow or previous champion)")]
    champion_version: str
    verdict: Literal["promote", "reject", "rollback", "keep"]
    labelled: Annotated[int, msgspec.Meta(description="paired labelled events compared")]
    reasons: list[str] = []
    metrics: dict[str, dict[str, float | None]] = {}  # champion, shadow or previous, difference
    primary_metric: str | None = None
    decided_at: float | None = None


# -- the codec ---------------------------------------------------------------------------------


def _enc_hook(obj: Any) -> Any:
    """numpy values in evidence and metrics: plain Python numbers and lists."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def encode(record: msgspec.Struct) -> bytes:
    """The record's JSON bytes (NaN and infinities become null)."""
    if type(record) is FeatureBatch:  # numpy columns: orjson writes them without tolist()
        fields = msgspec.structs.asdict(record)
        if fields["inputs"] is None:  # the bytes of a batch without inputs stay as they were
            del fields["inputs"]
        return orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY)
    return _encoder.encode(record)


def decode(raw: bytes | None, kind: type[T]) -> T:
    """A record of type ``kind`` from JSON bytes; :class:`MessageError` if it is not one."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        record: T = decoder.decode(raw or b"")
        return record
    except msgspec.DecodeError as exc:
        raise MessageError(kind.__name__, str(exc)) from None


def to_dict(record: msgspec.Struct) -> dict[str, Any]:
    """Plain builtins (for alerts' webhook bodies and tallies)."""
    out: dict[str, Any] = msgspec.to_builtins(record, enc_hook=_enc_hook)
    return out
