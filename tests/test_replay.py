"""replay (row by row) against the streaming monitor (update_batch in chunks)."""

from __future__ import annotations

import bz2
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.monitoring.drift import DriftMonitor
from stream.monitoring.profile import ReferenceProfile
from stream.monitoring.replay import load_columns, main


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0, p: tuple[float, ...] = (0.5, 0.3, 0.2)) -> list[dict]:
    x = rng.normal(shift, 1.0, n)
    c = rng.choice(["a", "b", "c"], p=list(p), size=n)
    return [{"x": None if i % 97 == 0 else float(v), "c": str(k), "extra": i} for i, (v, k) in enumerate(zip(x, c))]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ref = _write(tmp_path / "ref.jsonl", _rows(rng, 8000))
    live = _rows(rng, 6000) + _rows(rng, 4000, shift=0.8) + _rows(rng, 20_000) + _rows(rng, 5000, p=(0.2, 0.3, 0.5))
    return ref, _write(tmp_path / "live.jsonl", live)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_equals_streaming_monitor(files: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ref, live = files
    out = tmp_path / "out.jsonl"
    assert main(["--reference", str(ref), str(live), "--output", str(out)]) == 0
    assert "extra counts up through the stream's first 1,000 rows" in capsys.readouterr().err  # a row number
    replayed = _read(out)
    assert {e["kind"] for e in replayed} >= {"data_drift", "drift_resolved"}
    profile = ReferenceProfile.from_columns({k: v for k, v in load_columns(str(ref)).items() if k != "extra"})
    mon = DriftMonitor(profile)
    cols = {k: v for k, v in load_columns(str(live)).items() if k != "extra"}
    n, s, streamed = len(cols["x"]), 0, []
    for size in np.random.default_rng(1).integers(1, 4000, size=1000):
        streamed += [e.to_dict() for e in mon.update_batch({k: v[s : s + size] for k, v in cols.items()})]
        s += int(size)
        if s >= n:
            break
    assert json.loads(json.dumps(streamed)) == replayed


def test_replay_model_card_and_stdout(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, live = files
    cols = load_columns(str(ref))
    profile = ReferenceProfile.from_columns({k: cols[k] for k in ("x", "c")}, {"x": "numeric", "c": "categorical"})
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "fraud", "version": 4, "reference_profile": profile.to_dict()}, sort_keys=True))
    assert main(["--model-card", str(card), str(live), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events and all(e["model"] == "fraud" and e["model_version"] == "4" for e in events)
    assert {f for e in events for f in e["features"]} == {"x", "c"}


def test_replay_schema_option(files: tuple[Path, Path], tmp_path: Path) -> None:
    ref, live = files
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"x": "numeric", "extra": "categorical"}))
    out = tmp_path / "o.jsonl"
    assert main(["--reference", str(ref), str(live), "--schema", str(schema), "--output", str(out)]) == 0
    events = _read(out)
    assert events and all(set(e["features"]) <= {"x", "extra"} for e in events)
    assert any(e["features"] == ["x"] for e in events)


def test_replay_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\nnot json\n')
    assert main(["--reference", str(bad), str(bad)]) == 2
    assert "invalid JSON" in capsys.readouterr().err
    assert main(["--model-card", str(tmp_path / "missing.json"), str(bad)]) == 2


def _delimited(path: Path, rows: list[dict], sep: str, opener: Any = open) -> Path:
    names = list(rows[0])
    with opener(path, "wt", newline="") as f:
        f.write(sep.join(names) + "\n")
        for r in rows:
            f.write(sep.join("" if r[k] is None else str(r[k]) for k in names) + "\n")
    return path


def test_replay_reads_csv_and_compressed_files_as_json_lines(files: tuple[Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A warehouse export (CSV, gzip) against a compressed TSV log or a pipe: the same events as from
    JSON lines; a broken CSV row or a Parquet file is a clear error, not a silent gap."""
    ref, live = files
    assert main(["--reference", str(ref), str(live), "--json"]) == 0
    expected = capsys.readouterr().out.splitlines()
    assert expected
    ref_csv = _delimited(tmp_path / "ref.csv.gz", _read(ref), ",", gzip.open)
    live_tsv = _delimited(tmp_path / "live.tsv.bz2", _read(live), "\t", bz2.open)
    assert main(["--reference", str(ref_csv), str(live_tsv), "--json"]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    plain = _delimited(tmp_path / "live.txt", _read(live), ";")  # no suffix: the header says CSV and its delimiter
    assert main(["--reference", str(ref_csv), str(plain), "--json"]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    with live.open() as piped:  # a pipe (kafka-console-consumer ... | mlstream replay ... -): read once
        monkeypatch.setattr("sys.stdin", piped)
        assert main(["--reference", str(ref_csv), "-", "--json"]) == 0
    assert capsys.readouterr().out.splitlines() == expected

    broken = tmp_path / "broken.csv"
    broken.write_text("x,c\n1.5,a\n2.5\n")
    assert main(["--reference", str(ref_csv), str(broken)]) == 2
    assert "broken.csv:3: 1 cells where the header names 2" in capsys.readouterr().err
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    assert main(["--reference", str(tmp_path / "rows.parquet"), str(live)]) == 2
    assert "a columnar file" in capsys.readouterr().err


def test_replay_warns_of_a_reference_too_small_to_trust(files: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Shares read from a few dozen rows are off by ~0.1: said before the results, not left to look like drift."""
    ref, live = files
    small = _write(tmp_path / "small.jsonl", _read(ref)[:40])
    assert main(["--reference", str(small), str(live)]) == 0
    assert "warning: the reference has 40 rows, fewer than 1,000" in capsys.readouterr().err
    assert main(["--reference", str(ref), str(live)]) == 0  # 8,000 rows: no warning
    assert "warning" not in capsys.readouterr().err


def test_replay_summary_json_and_absent_columns(files: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ref, live = files
    # default: a human summary naming the drifted features
    assert main(["--reference", str(ref), str(live)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("35,000 rows replayed; drift windows 500, 2000, 4000, 8000, 32000 rows")
    assert any(line.startswith("drift on x: opened") for line in out) and any("drift on c" in line for line in out)
    # --json: one event per line, index and kind first
    assert main(["--reference", str(ref), str(live), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(list(json.loads(line))[:2] == ["index", "kind"] for line in lines)
    # a card whose columns the rows do not hold: a warning naming them, no false "missing" drift
    cols = load_columns(str(ref))
    profile = ReferenceProfile.from_columns({"x": cols["x"], "c": cols["c"], "log_amount": cols["x"]})
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "fraud", "version": 1, "reference_profile": profile.to_dict()}))
    assert main(["--model-card", str(card), str(ref)]) == 0
    captured = capsys.readouterr()
    assert "warning: 1 of 3 features of model card" in captured.err and "log_amount" in captured.err
    # the reference against itself: no drift, said in so many words, and nothing reported missing
    assert captured.out.splitlines()[-1] == "no drift: every test stayed within its threshold"
    raw = _write(tmp_path / "raw.jsonl", [{"event_id": str(i), "amount": 3.0} for i in range(200)])
    assert main(["--model-card", str(card), str(raw)]) == 2
    assert "none of the 3 features of model card" in capsys.readouterr().err


def test_replay_takes_the_daily_cycle_from_the_reference_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--time-field``: the reference's event times give the monitor the daily cycle from the first
    row (a 50,000-event day: its first hours sit 0.5 sd above the reference for longer than the
    warm-up); times that are not epoch seconds are left out with a warning, not an error."""
    from stream.examples.traffic import write_jsonl

    slow = {"events_per_day": 50_000, "season_sd": 0.7}
    ref, live = tmp_path / "ref.jsonl", tmp_path / "live.jsonl"
    write_jsonl("seasonal", 20_000, str(ref), seed=10_204, iid=True, **slow)
    write_jsonl("seasonal", 20_000, str(live), seed=204, **slow)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"x": "numeric", "y": "numeric", "amount": "numeric", "c": "categorical"}))
    common = ["--schema", str(schema), "--json"]
    assert main(["--reference", str(ref), str(live), "--time-field", "", *common]) == 0  # no times: the cycle looks like drift
    captured = capsys.readouterr()
    assert "data_drift" in captured.out and "note: no event times (name their field with --time-field)" in captured.err
    assert main(["--reference", str(ref), str(live), "--time-field", "ts", *common]) == 0
    captured = capsys.readouterr()
    assert "data_drift" not in captured.out and "no event times" not in captured.err
    rows = _read(ref)
    iso = {"ts": lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat()}
    _write(ref, [{**r, "ts": iso["ts"](r["ts"])} for r in rows])  # ISO 8601 times: the same cycle
    assert main(["--reference", str(ref), str(live), "--time-field", "ts", *common]) == 0
    assert "data_drift" not in capsys.readouterr().out
    _write(ref, [{**r, "ts": "yesterday"} for r in rows])
    assert main(["--reference", str(ref), str(live), "--time-field", "ts", *common]) == 0
    err = capsys.readouterr().err
    assert "not in epoch seconds" in err and "the reference has no event times (ts)" in err
    _write(ref, [{k: v for k, v in r.items() if k != "ts"} for r in rows])  # a training set without times
    assert main(["--reference", str(ref), str(live), "--time-field", "ts", *common]) == 0
    assert "the reference has no event times (ts): a daily cycle" in capsys.readouterr().err


def test_replay_entity_field_counts_a_burst_as_one_entity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--entity-field``: not a feature; with it a category share change inside bursty traffic is
    found by the entity-balanced test within a few batches, which row-by-row shares need far longer
    for. Without it, a burst's run of its own category stands for the entity (its first rows count):
    the same test finds the change; the ids, when the stream has them, also cap interleaved bursts."""
    from stream.examples.traffic import write_jsonl

    ref, live = tmp_path / "ref.jsonl", tmp_path / "live.jsonl"
    write_jsonl("mixed", 20_000, str(ref), seed=10_005, iid=True)
    write_jsonl("mixed", 34_000, str(live), seed=5, drift="category_share", drift_at=30_000)
    common = ["--reference", str(ref), str(live), "--time-field", "ts", "--ignore", "error", "--json"]
    assert main([*common, "--entity-field", "entity"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["kind"], e["features"], e["evidence"][0]["test"]) for e in events] == [
        ("data_drift", ["c"], "entity_share")]
    assert 30_000 <= events[0]["index"] < 32_000
    assert main([*common, "--ignore", "error,entity"]) == 0  # without it: runs of one category instead
    assert [(e["index"], e["evidence"][0]["test"]) for e in map(json.loads, capsys.readouterr().out.splitlines())] \
        == [(events[0]["index"], "entity_share")]
    for path in (ref, live):  # ids under a name no list holds: known by their values (many, repeated strings)
        _write(path, [{("client" if k == "entity" else k): v for k, v in r.items()} for r in _read(path)])
    assert main(["--reference", str(ref), str(live), "--ignore", "error", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "client looks like entity ids" in err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["features"], e["evidence"][0]["test"]) for e in events] == [
        ("data_drift", ["c"], "entity_share")]
    assert 30_000 <= events[0]["index"] < 32_000


def test_replay_guesses_the_event_time_and_the_entity_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Replayed as plain features, a clock drifts by construction (every live time is after the
    training sample's) and an id column's "categories" are its heaviest entities: without
    ``--time-field``/``--entity-field`` both are guessed and said, and an event id is left out."""
    from stream.examples.traffic import write_jsonl

    ref, live = tmp_path / "ref.jsonl", tmp_path / "live.jsonl"
    write_jsonl("mixed", 20_000, str(ref), seed=10_007, iid=True)
    write_jsonl("mixed", 30_000, str(live), seed=7)
    for path in (ref, live):
        _write(path, [{**r, "event_id": f"{path.stem}-{i}"} for i, r in enumerate(_read(path))])
    assert main(["--reference", str(ref), str(live), "--ignore", "error", "--json"]) == 0
    out, err = capsys.readouterr()
    assert out == ""  # stationary traffic: no drift
    assert "ts holds times: taken as the event time" in err
    assert "entity looks like entity ids" in err and "event_id looks like an event id" in err
    for path in (ref, live):  # the same times in epoch milliseconds
        _write(path, [{**r, "ts": int(r["ts"] * 1000)} for r in _read(path)])
    assert main(["--reference", str(ref), str(live), "--ignore", "error", "--json"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "ts holds times: taken as the event time" in err
    assert main(["--reference", str(ref), str(live), "--ignore", "error", "--json",
                 "--time-field", "", "--entity-field", ""]) == 0  # no guess: what replay did before
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any("ts" in e["features"] for e in events if e["kind"] == "data_drift")
    # a clock under a name no list holds, with late events (up to a minute): known by its trend
    rng = np.random.default_rng(3)
    for path, late in ((ref, 0.0), (live, 60.0)):
        _write(path, [{**{k: v for k, v in r.items() if k != "ts"}, "t": r["ts"] / 1000 + late * rng.random()}
                      for r in _read(path)])
    assert main(["--reference", str(ref), str(live), "--ignore", "error", "--json"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "t holds times: taken as the event time" in err
