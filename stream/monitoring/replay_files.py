"""The rows ``mlstream replay`` and ``mlstream report`` read: JSON lines or CSV, plain or compressed.

A recorded stream is as often a warehouse export (CSV, TSV) or a rotated, compressed log as a
file of JSON lines. The format is told by the name (``.jsonl``/``.ndjson``/``.json``,
``.csv``, ``.tsv``, each optionally ``.gz``, ``.bz2`` or ``.xz``), else by the first line: a JSON
object, or a header row whose delimiter (comma, tab, semicolon, pipe) the standard library's
sniffer finds. ``-`` reads standard input (a pipe from ``kafka-console-consumer``, say), uncompressed.

CSV cells are typed as a CSV reader of a data tool would: an empty cell, ``NA``, ``NaN``,
``null`` and the like are missing; a cell that reads as a number is one, except an integer with
a leading zero (``007``: a code or an id, whose digits matter); any other cell is a string (a
category, an id, an ISO 8601 time).

>>> import gzip, os, tempfile
>>> d = tempfile.mkdtemp()
>>> with gzip.open(os.path.join(d, "rows.csv.gz"), "wt") as f:
...     _ = f.write("user_id,amount,country,ts\\nu1,12.5,GB,1750000000\\nu2,,NA,1750000004.5\\n")
>>> for row in read_rows(os.path.join(d, "rows.csv.gz")):
...     print(row)
{'user_id': 'u1', 'amount': 12.5, 'country': 'GB', 'ts': 1750000000}
{'user_id': 'u2', 'amount': None, 'country': None, 'ts': 1750000004.5}
>>> with open(os.path.join(d, "rows"), "w") as f:  # no suffix: the first line says JSON lines
...     _ = f.write('{"x": 1.5}\\n\\n{"x": null}\\n{"x": NaN}\\n')
>>> list(read_rows(os.path.join(d, "rows")))
[{'x': 1.5}, {'x': None}, {'x': nan}]
"""

from __future__ import annotations

import bz2
import csv
import gzip
import itertools
import json
import lzma
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import orjson

from stream.errors import ReplayError

__all__ = ["FORMATS", "RowSource", "read_rows"]

FORMATS = "JSON lines or CSV/TSV, optionally .gz, .bz2 or .xz"
_OPENERS: dict[str, Callable[..., IO[str]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_JSON = (".jsonl", ".ndjson", ".json")
_DELIMITED = {".csv": ",", ".tsv": "\t"}
_COLUMNAR = (".parquet", ".pq", ".feather", ".arrow", ".avro", ".orc")
# what data tools read as missing in a CSV cell (pandas' defaults, less the exotic ones)
MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "NAN", "null", "NULL", "None", "#N/A", "-NaN", "-nan"})
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)")
_INT = re.compile(r"[+-]?\d+")


class RowSource:
    """A file's rows (or standard input's, ``-``) read once: the first rows may be looked at
    before (:meth:`head`: the column guesses), then iterating gives every row from the first.

    >>> import io, sys
    >>> sys.stdin, saved = io.StringIO('{"x": 1}\\n{"x": 2}\\n{"x": 3}\\n'), sys.stdin
    >>> src = RowSource("-")
    >>> src.head(2), [r["x"] for r in src]
    ([{'x': 1}, {'x': 2}], [1, 2, 3])
    >>> sys.stdin = saved
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._rows = read_rows(path)
        self._head: list[dict[str, Any]] = []

    def __str__(self) -> str:
        return "standard input" if self.path == "-" else self.path

    def head(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` rows (fewer if the stream has fewer)."""
        self._head += itertools.islice(self._rows, max(n - len(self._head), 0))
        return self._head[:n]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return itertools.chain(self._head, self._rows)


def read_rows(path: str) -> Iterator[dict[str, Any]]:
    """The rows of ``path`` as dicts, in file order (see the module's docstring for the formats)."""
    if path == "-":
        yield from _rows(sys.stdin, "-", "standard input")
        return
    name = path.lower()
    opener: Callable[..., IO[str]] = open
    for suffix, compressed in _OPENERS.items():
        if name.endswith(suffix):
            opener, name = compressed, name[: -len(suffix)]
            break
    if name.endswith(_COLUMNAR):
        raise ReplayError(f"{path}: a columnar file; replay reads {FORMATS} (pandas: "
                          "read_parquet(path).to_json(out, orient='records', lines=True))")
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        yield from _rows(f, name, path)


def _rows(f: Iterable[str], name: str, path: str) -> Iterator[dict[str, Any]]:
    """Rows of the open text ``f``, JSON lines or CSV by ``name``'s suffix or by the first line."""
    try:
        lines = _non_blank(f)
        first = next(lines, None)
        if first is None:
            return
        lines = itertools.chain([first], lines)
        if name.endswith(_JSON) or (not name.endswith(tuple(_DELIMITED)) and first[1].lstrip().startswith("{")):
            yield from _json_rows(lines, path)
        else:
            yield from _csv_rows(lines, path, _DELIMITED.get(os.path.splitext(name)[1]) or _delimiter(first))
    except (UnicodeDecodeError, EOFError, lzma.LZMAError, OSError) as exc:  # a corrupt or truncated file
        raise ReplayError(f"{path}: cannot be read as {FORMATS}: {exc}") from None


def _non_blank(f: Iterable[str]) -> Iterator[tuple[int, str]]:
    return ((n, line) for n, line in enumerate(f, 1) if line.strip())


def _json_rows(lines: Iterable[tuple[int, str]], path: str) -> Iterator[dict[str, Any]]:
    fast = orjson.loads
    for lineno, line in lines:
        try:
            row = fast(line)
        except orjson.JSONDecodeError:
            try:  # Python's json also reads NaN and Infinity (json.dumps writes them)
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise ReplayError(f"{path}:{lineno}: expected a JSON object")
        yield row


def _delimiter(header: tuple[int, str]) -> str:
    try:
        return csv.Sniffer().sniff(header[1], delimiters=",\t;|").delimiter
    except csv.Error:  # one column: no delimiter to find
        return ","


def _csv_rows(lines: Iterable[tuple[int, str]], path: str, delimiter: str) -> Iterator[dict[str, Any]]:
    numbered = iter(lines)
    at = [0]  # the line being read, for errors

    def text() -> Iterator[str]:
        for lineno, line in numbered:
            at[0] = lineno
            yield line

    reader = csv.reader(text(), delimiter=delimiter)
    header = next(reader, None)
    if not header or len(set(header)) != len(header) or not all(h.strip() for h in header):
        raise ReplayError(f"{path}:{at[0]}: expected a header row of distinct column names, got {header!r}")
    width = len(header)
    for cells in reader:
        if len(cells) != width:
            raise ReplayError(f"{path}:{at[0]}: {len(cells)} cells where the header names {width}")
        yield dict(zip(header, map(_cell, cells), strict=True))


def _cell(s: str) -> Any:
    """A CSV cell as JSON would hold it.

    >>> [_cell(s) for s in ["", "NA", "3", "-2.5e3", "1,5", "GB", " 7 ", "007", "0", "0.5"]]
    [None, None, 3, -2500.0, '1,5', 'GB', 7, '007', 0, 0.5]
    """
    v = s.strip()
    if v in MISSING:
        return None
    if _INT.fullmatch(v):
        digits = v.lstrip("+-")
        return s if len(digits) > 1 and digits[0] == "0" else int(v)
    if _NUMBER.fullmatch(v):
        return float(v)
    return s
