"""The committed dashboards are exactly what the code builds, and they are wired to the
provisioned data source."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from dashboards import build

ROOT = Path(__file__).resolve().parent.parent


def test_rebuilding_gives_the_committed_json_and_doc_byte_for_byte(tmp_path):
    doc = tmp_path / "dashboards.md"
    assert build.main(["--out", str(tmp_path), "--doc", str(doc)]) == 0
    for name in build.DASHBOARDS:
        committed = (ROOT / "dashboards" / f"{name}.json").read_bytes()
        assert (tmp_path / f"{name}.json").read_bytes() == committed, f"run `make dashboards` ({name})"
    assert doc.read_bytes() == (ROOT / "docs" / "dashboards.md").read_bytes(), \
        "run `make dashboards` (docs/dashboards.md)"
    assert build.main(["--check"]) == 0


def test_the_doc_lists_every_panel_with_its_description_and_queries():
    doc = (ROOT / "docs" / "dashboards.md").read_text()
    for name in build.DASHBOARDS:
        data = json.loads((ROOT / "dashboards" / f"{name}.json").read_text())
        assert f"## {data['title']} (`{data['uid']}`)" in doc
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            assert f"| {panel['title']} | {panel['type']} | {panel['description']} |" in doc
            for target in panel["targets"]:
                assert f"`{target['expr'].replace('|', chr(92) + '|')}`" in doc


def test_check_reports_a_stale_doc(tmp_path, capsys):
    stale = tmp_path / "dashboards.md"
    stale.write_text("# Dashboards\n")
    assert build.main(["--check", "--doc", str(stale)]) == 1
    assert "dashboards.md" in capsys.readouterr().err


def test_building_twice_is_stable():
    assert all(build.render(n) == build.render(n) for n in build.DASHBOARDS)


def test_every_panel_queries_the_provisioned_prometheus():
    ds = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    uids, ids = set(), []
    for name in build.DASHBOARDS:
        data = json.loads((ROOT / "dashboards" / f"{name}.json").read_text())
        assert data["uid"] == f"mlstream-{name}" and "generated" in data["tags"]
        ids = [p["id"] for p in data["panels"]]
        assert len(ids) == len(set(ids))
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["title"] and panel["description"]
            uids.add(panel["datasource"]["uid"])
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
        uids.update(a["datasource"]["uid"] for a in data["annotations"]["list"])
        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == uid  # the provisioned one by default
    assert uids == {"${datasource}"}


# metrics with a model label: their panels repeat per model and narrow by $model
PER_MODEL = ("mlstream_drift_statistic", "mlstream_drift_state", "mlstream_model_info", "mlstream_score_bucket",
             "mlstream_model_performance", "mlstream_feature_summary", "mlstream_feature_category_share",
             "mlstream_shadow_", "mlstream_live_labelled_loss", "mlstream_trainer_decisions_total")


def test_panels_follow_the_model_and_instance_variables():
    """Every query is narrowed by $instance (except Prometheus' own ALERTS), every query of a
    metric with a model label by $model, and panels about a model repeat per model."""
    for name in build.DASHBOARDS:
        data = json.loads((ROOT / "dashboards" / f"{name}.json").read_text())
        assert {v["name"] for v in data["templating"]["list"]} == {"datasource", "model", "instance"}
        for panel in data["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                assert "$instance" in expr or expr.startswith("sum by (alertname"), expr
                if any(m in expr for m in PER_MODEL):
                    assert "$model" in expr, expr
                    assert panel.get("repeat") == "model", panel["title"]


def test_the_dashboard_provider_points_where_compose_mounts_the_json():
    prov = yaml.safe_load((ROOT / "ops/grafana/provisioning/dashboards/mlstream.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = [v for v in compose["services"]["grafana"]["volumes"]]
    assert any(m.startswith("./dashboards:") and m.split(":")[1] == path for m in mounts)


def test_each_performance_panel_keeps_to_one_unit():
    """One gauge per unit: a percent panel reads only ratio gauges (or 0/1 flags), the loss
    panel only losses; nothing queries the retired mixed-unit names."""
    model = json.loads((ROOT / "dashboards" / "model.json").read_text())
    for panel in model["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        for expr in exprs:
            assert not re.search(r"mlstream_model_performance(_estimated)?\{", expr), expr
        if panel.get("fieldConfig", {}).get("defaults", {}).get("unit") == "percentunit":
            assert all(re.search(r"_ratio\{|_valid\{", e) for e in exprs), panel["title"]
    titles = {p["title"]: p for p in model["panels"]}
    assert "Loss (labelled)" in titles and "Verdicts and trainer decisions" in titles
    drift = json.loads((ROOT / "dashboards" / "drift.json").read_text())
    exprs = " ".join(t["expr"] for p in drift["panels"] for t in p.get("targets", []))
    for needed in ('stat="mean"', 'stat="std"', 'stat=~"q.*"', 'stat="missing_rate"',
                   "mlstream_feature_category_share"):
        assert needed in exprs, needed
