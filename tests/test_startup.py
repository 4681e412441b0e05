"""Start-up cost: a scorer imports nothing it does not use."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("scipy", "river", "sklearn", "faust", "pandas", "stream.training.train", "stream.monitoring.worker")


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scorer_imports_no_monitor_or_trainer_libraries():
    assert loaded_after("import stream, stream.app, stream.scoring.worker\n"
                        "from stream.cli import build_parser; build_parser()") == []


def test_public_api_still_imports_lazily():
    # the trainer's names load their libraries on first use, not before
    assert loaded_after("from stream import Domain, Schema, Field, FeatureSet") == []
    assert "stream.training.train" in loaded_after("from stream import train")


def test_monitor_process_loads_no_library_it_does_not_use_at_start():
    """A monitor process (``worker --role all`` spawns one) loaded scipy.stats and aiohttp at start:
    ~1.5 s of CPU taken from the scorer beside it on a small machine. It needs scipy.special only,
    and aiohttp once a Slack or webhook channel is configured."""
    loaded = loaded_after("import sys, stream.app, stream.monitoring.worker, stream.stage_process\n"
                          "for m in ('scipy.stats', 'aiohttp', 'slack_sdk'):\n"
                          "    assert m not in sys.modules, m")
    assert "scipy" in loaded and "stream.monitoring.worker" in loaded
