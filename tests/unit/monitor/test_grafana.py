"""deploy/grafana/dashboards is what panels.py generates (regenerate, never hand-edit)."""

from __future__ import annotations

import json

from services.monitor.grafana import DASHBOARD_DIR, render_all
from services.monitor.panels import DASHBOARDS, bind


def test_committed_dashboards_are_current() -> None:
    rendered = render_all()
    on_disk = {p.name: p.read_text() for p in DASHBOARD_DIR.glob("*.json")}
    assert on_disk == rendered, "run: python -m services.monitor.grafana"


def test_every_panel_queries_the_clickhouse_plugin_with_its_sql() -> None:
    for dashboard in DASHBOARDS:
        doc = json.loads(render_all()[f"{dashboard.uid}.json"])
        assert [p["targets"][0]["rawSql"] for p in doc["panels"]] == [
            p.sql for p in dashboard.panels
        ]
        assert {p["datasource"]["type"] for p in doc["panels"]} == {"grafana-clickhouse-datasource"}
        targets = [p["targets"][0] for p in doc["panels"]]
        assert {t["datasource"]["uid"] for t in targets} == {"driftloop-clickhouse"}
        # the plugin's formats: 0 time series, 1 table (a bar chart reads a table)
        assert [t["format"] for t in targets] == [
            0 if p.kind == "timeseries" else 1 for p in dashboard.panels
        ]
        # Grafana rejects a panel whose options are null; {} means the plugin's defaults
        assert all(isinstance(p["options"], dict) for p in doc["panels"])


def test_bind_replaces_the_grafana_macros() -> None:
    sql = bind("SELECT 1 FROM t WHERE model = '${model}' AND $__timeFilter(ts)", "m1", 5, 9)
    assert "${model}" not in sql and "$__" not in sql
    assert "model = 'm1'" in sql
    assert ">= 5" in sql and "< 9" in sql
