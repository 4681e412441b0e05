"""Writes (or checks) the JSON Schemas in ``schemas/`` from the records in :mod:`stream.messages`.

``python -m stream.tools.schemas [--check] [DIR]``; ``tests/test_messages.py`` runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.messages import json_schemas


def main(argv: list[str] | None = None) -> int:
    """``python -m stream.tools.schemas [--check] [DIR]``: write (or compare) the schemas."""
    p = argparse.ArgumentParser(prog="python -m stream.tools.schemas", description=main.__doc__)
    p.add_argument("directory", nargs="?", default="schemas", type=Path)
    p.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = p.parse_args(argv)
    stale = []
    for name, text in json_schemas().items():
        path = args.directory / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} schema(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
