"""One codec for every record: :func:`encode`, :func:`decode` (or :class:`MessageError`),
:func:`to_dict`."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import numpy as np
import orjson

from stream.errors import MessageError
from stream.messages.data import FeatureBatch

T = TypeVar("T")


def _enc_hook(obj: Any) -> Any:
    """numpy values in evidence and metrics: plain Python numbers and lists."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _struct_fields(obj: Any) -> dict[str, Any]:
    """A decoded batch's nested records (packed columns, inputs), for orjson."""
    if isinstance(obj, msgspec.Struct):  # as on the wire: a packed column's dtype tag, its bytes in base64
        out: dict[str, Any] = msgspec.to_builtins(obj)
        return out
    raise TypeError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


# For a hot loop of plain records (the scorer's predictions): skips encode()'s dispatch, ~100 ns
# a record of ~500; never for a FeatureBatch (its numpy columns need orjson).
encode_struct = _encoder.encode


def encode(record: msgspec.Struct) -> bytes:
    """The record's JSON bytes (NaN and infinities become null)."""
    if type(record) is FeatureBatch:  # numpy columns: orjson writes them without tolist()
        fields = msgspec.structs.asdict(record)
        if fields["inputs"] is None:  # the bytes of a batch without inputs stay as they were
            del fields["inputs"]
        return orjson.dumps(fields, default=_struct_fields, option=orjson.OPT_SERIALIZE_NUMPY)
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
