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
*encode*: its scores and times are numpy arrays, which orjson writes natively (msgspec would need
``tolist()`` first, ~2x slower). Its float columns are packed (:class:`PackedFloats`, float64
bytes in base64, read with one call instead of a parse per number), and so are its categorical
ones (:class:`PackedCategories`: the batch's distinct values once, int32 codes per row); arrays
of numbers are still read. Its decode
checks everything but the cells of unpacked columns, which :meth:`FeatureBatch.monitor_columns`
checks when it makes arrays of them (a typed union per cell cost +35%).

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

from stream.errors import MessageError
from stream.messages.codec import decode, encode, encode_struct, to_dict
from stream.messages.columns import CategoryCodes, PackedCategories, PackedFloats
from stream.messages.control import (
    DriftEvent,
    ModelChunk,
    ModelFile,
    ModelStates,
    ModelUpdate,
    RetrainRequest,
    ShadowVerdict,
)
from stream.messages.data import (
    SCHEMA_VERSION,
    SCORE_COLUMN,
    FeatureBatch,
    Headers,
    Label,
    LabelledExample,
    Message,
    ModelInputs,
    Prediction,
    ShadowPrediction,
)
from stream.messages.dead_letters import (
    ERROR_CLASS_HEADER,
    MAX_ERROR_MESSAGE,
    MESSAGE_HEADER,
    PRODUCER_HEADER_PREFIX,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    DeadLetter,
    DeadLetterHeaders,
)

__all__ = [
    "SCORE_COLUMN",
    "CategoryCodes",
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
    "PackedCategories",
    "PackedFloats",
    "Prediction",
    "RetrainRequest",
    "ShadowPrediction",
    "ShadowVerdict",
    "decode",
    "encode",
    "encode_struct",
    "to_dict",
]
__all__ += ["ERROR_CLASS_HEADER", "MAX_ERROR_MESSAGE", "MESSAGE_HEADER", "PRODUCER_HEADER_PREFIX",
            "REASON_HEADER", "SCHEMA_VERSION", "SOURCE_OFFSET_HEADER", "SOURCE_PARTITION_HEADER",
            "SOURCE_TOPIC_HEADER", "Headers", "ModelFile"]
