"""Packed columns of a :class:`~stream.messages.data.FeatureBatch`: floats as float64 bytes
(:class:`PackedFloats`), categories as a table of values and int32 codes into it
(:class:`PackedCategories`), both base64 on the wire. The JSON decoder turns a packed column's
base64 into its bytes as it parses (msgspec, in C: ~9 ns a float64 value, where a ``str`` field
and ``binascii`` took ~32), and numpy reads them: no JSON number and no Python object per cell; a
category's string is read once per batch, not once per row. :class:`CategoryCodes` is the decoded (and the scorer's) form of a
categorical column.

Examples
--------
>>> col = CategoryCodes(np.array([0, 2, 0, 1]), ["web", "pos", None])
>>> len(col), col[1], col.tolist()
(4, None, ['web', None, 'web', 'pos'])
>>> col[np.array([True, False, True, True])].tolist(), col[1:].codes.tolist()
(['web', 'web', 'pos'], [2, 0, 1])
>>> both = CategoryCodes.concat([col[:2], CategoryCodes(np.array([0, 1]), ["app", "web"])])
>>> both.tolist(), both.values
(['web', None, 'app', 'web'], ['web', 'pos', None, 'app'])
>>> packed = PackedCategories(values=col.values, data=codes_bytes(col.codes))
>>> len(packed), packed.to_codes().tolist()
(4, ['web', None, 'web', 'pos'])
>>> PackedCategories(values=["web"], data=codes_bytes(np.array([0, 1]))).to_codes()
Traceback (most recent call last):
...
ValueError: a packed category column codes 2 values but has a table of 1
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np

__all__ = ["PACKED", "CategoryCodes", "Cell", "PackedCategories", "PackedFloats", "b64_bytes", "codes_bytes",
           "float_bytes", "pack_codes", "pack_floats", "packed_rows", "whole_values"]

# A cell's type is checked where the column becomes an array (FeatureBatch.monitor_columns):
# checking it on decode as well costs a third more decode time for the same verdict.
Cell = Annotated[Any, msgspec.Meta(extra_json_schema={"type": ["number", "string", "null"]})]
_KEYS = (str, int, float, bool, type(None))  # cells that can key a category table as they are


class PackedFloats(msgspec.Struct, kw_only=True, gc=False, tag_field="dtype", tag="float64"):
    """A float column: its values as little-endian float64 bytes, in base64 (``data`` once
    decoded); NaN or an infinity is a missing value."""

    data: bytes = msgspec.field(name="b64")

    def __post_init__(self) -> None:
        whole_values(len(self.data), "float64")

    def __len__(self) -> int:
        return len(self.data) // PACKED["float64"][0]

    def to_array(self) -> np.ndarray:
        """A writable float64 array, infinities as NaN."""
        a = np.frombuffer(bytearray(self.data), dtype="<f8")
        inf = np.isinf(a)
        if inf.any():
            a[inf] = np.nan
        return a


class PackedCategories(msgspec.Struct, kw_only=True, gc=False, tag_field="dtype", tag="category"):
    """A categorical column: the distinct values of the batch (null for a missing one), and per
    row the position of its value in that table, as little-endian int32 bytes in base64."""

    values: list[Cell]
    data: bytes = msgspec.field(name="b64")

    def __post_init__(self) -> None:
        whole_values(len(self.data), "category")

    def __len__(self) -> int:
        return len(self.data) // PACKED["category"][0]

    def to_codes(self) -> CategoryCodes:
        """The column as codes into its table (``ValueError`` on a code off the table)."""
        codes = np.frombuffer(self.data, dtype="<i4")
        if len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= len(self.values)):
            raise ValueError(f"a packed category column codes {int(codes.max()) + 1} values but has a "
                             f"table of {len(self.values)}")
        values = self.values
        if not all(isinstance(v, _KEYS) for v in values):  # a JSON object or array: its text, a key
            values = [v if isinstance(v, _KEYS) else str(v) for v in values]
        return CategoryCodes(codes, values)


class CategoryCodes:
    """A categorical column as ``codes`` (int array) into a table of ``values``: row ``i`` holds
    ``values[codes[i]]``. Indexing by a position gives the value; by a slice, a mask or positions,
    another column on the same table."""

    __slots__ = ("codes", "values")

    def __init__(self, codes: np.ndarray, values: list[Any]):
        self.codes, self.values = codes, values

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, (int, np.integer)):
            return self.values[self.codes[i]]
        return CategoryCodes(self.codes[i], self.values)

    def tolist(self) -> list[Any]:
        return [self.values[c] for c in self.codes.tolist()]

    @staticmethod
    def concat(parts: Sequence[CategoryCodes]) -> CategoryCodes:
        """The parts one after the other, on one table: theirs merged, each value once (many
        small parts of a low-rate scorer share their categories)."""
        table: dict[Any, int] = {}
        codes = [np.array([table.setdefault(v, len(table)) for v in p.values], dtype=np.int64)[p.codes]
                 for p in parts]
        return CategoryCodes(np.concatenate(codes) if codes else np.zeros(0, np.int64), list(table))


def pack_floats(values: np.ndarray) -> str:
    """The base64 of ``values`` as little-endian float64, for :class:`PackedFloats`: the monitor
    reads a column as base64 decoded with the JSON instead of a parse and a Python float per JSON number
    (on the pipeline's own batches, decode + columns + inputs 1.07 -> 0.79 µs per row, 312 -> 268
    bytes). Infinities are left to the reader (checking here too cost ~2 µs a column, one string
    per float column of each micro-batch).

    >>> from stream.messages import decode
    >>> raw = b'{"dtype": "float64", "b64": "%s"}' % pack_floats(np.array([1.5, np.nan, -2.0, np.inf])).encode()
    >>> packed = decode(raw, PackedFloats)
    >>> len(packed), packed.to_array().tolist()  # read: infinities are missing, as null was
    (4, [1.5, nan, -2.0, nan])
    >>> PackedFloats(data=b"abc")
    Traceback (most recent call last):
    ...
    ValueError: a packed column of 3 bytes is not whole float64 values
    """
    return binascii.b2a_base64(float_bytes(values), newline=False).decode("ascii")


def pack_codes(codes: np.ndarray) -> str:
    """The base64 of ``codes`` as little-endian int32, for :class:`PackedCategories`."""
    return binascii.b2a_base64(codes_bytes(codes), newline=False).decode("ascii")


def float_bytes(values: np.ndarray) -> bytes:
    """``values`` as little-endian float64 bytes (:class:`PackedFloats`' ``data``)."""
    return np.asarray(values, dtype="<f8").tobytes()


def codes_bytes(codes: np.ndarray) -> bytes:
    """``codes`` as little-endian int32 bytes (:class:`PackedCategories`' ``data``)."""
    return np.asarray(codes, dtype="<i4").tobytes()


def b64_bytes(b64: str) -> int:
    """How many bytes ``b64`` decodes to, read from its length and padding (not decoded)."""
    return len(b64) // 4 * 3 - b64.endswith("=") - b64.endswith("==")


PACKED = {"float64": (8, "float64 values"), "category": (4, "int32 codes")}  # dtype -> bytes, what they are


def packed_rows(b64: str, dtype: str) -> int:
    """How many values of packed ``dtype`` (a :data:`PACKED` key) ``b64`` holds; ``ValueError`` if
    not a whole number of them."""
    return whole_values(b64_bytes(b64), dtype, broken=len(b64) % 4 != 0)


def whole_values(size: int, dtype: str, broken: bool = False) -> int:
    """How many values of packed ``dtype`` (a :data:`PACKED` key) ``size`` bytes hold; ``ValueError``
    if not a whole number of them (or ``broken``: base64 whose length is not a multiple of 4)."""
    width, what = PACKED[dtype]
    if broken or size % width:
        raise ValueError(f"a packed column of {size} bytes is not whole {what}")
    return size // width
