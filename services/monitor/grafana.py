"""Grafana dashboards as code: `python -m services.monitor.grafana` writes
deploy/grafana/dashboards/*.json from panels.py (a test fails when they are stale).

JSON built here rather than with grafana-foundation-sdk (not in the services' lock); the
panels query the ClickHouse data source plugin provisioned in
deploy/grafana/provisioning/datasources/clickhouse.yaml (uid `driftloop-clickhouse`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.common.protogen import REPO_ROOT
from services.monitor.panels import DASHBOARDS, Dashboard, Panel

__all__ = ["DASHBOARD_DIR", "dashboard_json", "write_dashboards"]

DASHBOARD_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
_DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "driftloop-clickhouse"}
# The plugin's query formats: 0 time series, 1 table.
_FORMAT = {"timeseries": 0, "table": 1, "barchart": 1}


def _panel(panel: Panel, index: int) -> dict[str, Any]:
    width = 24 if panel.kind == "table" else 12
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {
            "h": 8,
            "w": width,
            "x": (index % 2) * 12 if width == 12 else 0,
            "y": index * 8,
        },
        "targets": [
            {
                "refId": "A",
                "datasource": _DATASOURCE,
                "editorType": "sql",
                "queryType": "timeseries" if panel.kind == "timeseries" else "table",
                "format": _FORMAT[panel.kind],
                "rawSql": panel.sql,
            }
        ],
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "tags": ["driftloop"],
        "timezone": "utc",
        "schemaVersion": 39,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "model",
                    "type": "query",
                    "datasource": _DATASOURCE,
                    "query": "SELECT DISTINCT model FROM predictions ORDER BY model",
                    "refresh": 2,
                }
            ]
        },
        "panels": [_panel(p, i) for i, p in enumerate(dashboard.panels)],
    }


def render_all() -> dict[str, str]:
    return {
        f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n"
        for d in DASHBOARDS
    }


def write_dashboards(directory: Path = DASHBOARD_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_dashboards():
        print(path.relative_to(REPO_ROOT))
