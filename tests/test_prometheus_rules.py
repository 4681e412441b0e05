"""The alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``).

promtool comes with the Debian package ``prometheus``, which ``make test`` installs
(scripts/install-system-deps.sh): a missing binary is a failure, not a skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

OPS = Path(__file__).resolve().parent.parent / "ops" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: run scripts/install-system-deps.sh"
    return subprocess.run([exe, *args], cwd=OPS, capture_output=True, text=True, timeout=120)


def test_rules_are_valid():
    res = promtool("check", "rules", "rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_rule_unit_tests_pass():
    res = promtool("test", "rules", "rules_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_is_unit_tested_and_carries_severity_and_summary():
    rules = [r for g in yaml.safe_load((OPS / "rules.yml").read_text())["groups"] for r in g["rules"]]
    tests = yaml.safe_load((OPS / "rules_test.yml").read_text())["tests"]
    tested = {a["alertname"] for t in tests for a in t["alert_rule_test"] if a["exp_alerts"]}
    names = {r["alert"] for r in rules}
    assert names == tested
    for r in rules:
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    # the list: pipeline down, lag growing, dead letters, drift, performance, model load
    assert {"MlstreamPipelineDown", "MlstreamConsumerLagGrowing", "MlstreamDeadLetterRateHigh",
            "MlstreamFeatureDrift", "MlstreamPerformanceDrop", "MlstreamModelLoadFailed"} <= names


def test_prometheus_config_is_valid():
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
