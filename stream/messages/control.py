"""The control records: drift events and retraining requests (monitor -> trainer), model
updates, model files and states (trainer -> scorers), shadow verdicts (monitor -> trainer)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

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


class ModelUpdate(msgspec.Struct, kw_only=True):
    """What happened to a model (topic ``mlstream.model-updates``): the trainer's answer to a
    request, or a promotion seen by the monitor. ``model_version`` is the version serving after
    the decision; ``champion_version`` / ``challenger_version`` the two that were compared.

    Examples
    --------
    >>> from stream.messages import decode, encode
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

    >>> from stream.messages import decode, encode
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
    >>> from stream.messages import decode, encode
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
