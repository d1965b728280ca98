"""Grafana dashboards as code: `python -m services.monitor.grafana` writes
deploy/grafana/dashboards/*.json from panels.py (a test fails when they are stale).

The dashboards are built with grafana-foundation-sdk, a dev dependency: only this generator
imports it, never a running service. The panels query the ClickHouse data source plugin
provisioned in deploy/grafana/provisioning/datasources/clickhouse.yaml (uid
`driftloop-clickhouse`). The SDK has no model for that plugin's queries, so
`ClickHouseQuery` implements its dataquery interface with the fields the plugin saves.
The SDK places the panels left to right, wrapping at Grafana's 24 columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import barchart, table, timeseries
from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from services.common.protogen import REPO_ROOT
from services.monitor.panels import DASHBOARDS, Dashboard, Panel

__all__ = ["DASHBOARD_DIR", "ClickHouseQuery", "dashboard_json", "write_dashboards"]

DASHBOARD_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
_DATASOURCE_TYPE = "grafana-clickhouse-datasource"
_DATASOURCE_UID = "driftloop-clickhouse"
_BUILDERS: dict[str, type[timeseries.Panel] | type[table.Panel] | type[barchart.Panel]] = {
    "timeseries": timeseries.Panel,
    "table": table.Panel,
    "barchart": barchart.Panel,
}


def _datasource() -> model.DataSourceRef:
    return model.DataSourceRef(type_val=_DATASOURCE_TYPE, uid=_DATASOURCE_UID)


@dataclass(frozen=True)
class ClickHouseQuery(cogvariants.Dataquery, cogbuilder.Builder[cogvariants.Dataquery]):
    """One SQL query of the ClickHouse plugin; its own builder, as it has nothing to build."""

    raw_sql: str
    query_type: Literal["timeseries", "table"]
    ref_id: str = "A"

    def build(self) -> ClickHouseQuery:
        return self

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": _datasource(),
            "editorType": "sql",
            "queryType": self.query_type,
            # the plugin's result formats: 0 time series, 1 table
            "format": 0 if self.query_type == "timeseries" else 1,
            "rawSql": self.raw_sql,
        }


def _panel(panel: Panel, index: int) -> cogbuilder.Builder[model.Panel]:
    query_type: Literal["timeseries", "table"] = (
        "timeseries" if panel.kind == "timeseries" else "table"
    )
    return (
        _BUILDERS[panel.kind]()
        .id(index + 1)
        .title(panel.title)
        .description(panel.description)
        .datasource(_datasource())
        .height(8)
        .span(24 if panel.kind == "table" else 12)
        .with_target(ClickHouseQuery(panel.sql, query_type))
    )


def dashboard_json(dashboard: Dashboard) -> dict[str, object]:
    builder = (
        sdk.Dashboard(dashboard.title)
        .uid(dashboard.uid)
        .tags(["driftloop"])
        .timezone("utc")
        .time("now-24h", "now")
        .refresh("30s")
        .with_variable(
            sdk.QueryVariable("model")
            .datasource(_datasource())
            .query("SELECT DISTINCT model FROM predictions ORDER BY model")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    )
    for index, panel in enumerate(dashboard.panels):
        builder.with_panel(_panel(panel, index))
    built = builder.build()
    for panel_model in built.panels or []:
        # The SDK writes `"options": null` for a panel given no options, which Grafana's
        # JSON validation rejects (grafana-foundation-sdk#1203); `{}` means the defaults.
        if isinstance(panel_model, model.Panel) and panel_model.options is None:
            panel_model.options = {}
    doc: dict[str, object] = json.loads(json.dumps(built, cls=JSONEncoder))
    return doc


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
