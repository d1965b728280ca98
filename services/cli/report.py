"""`driftloop report`: the dashboards' panels rendered to one HTML page with plotly charts.

The panels and their SQL are the Grafana dashboards' (services/monitor/panels.py). Rows come
from the monitor's read-only query API (`--api`, the usual way: a local chDB store is open
in the monitor's process only) or straight from a store no process holds (`--dsn`).
"""

from __future__ import annotations

import html
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from services.monitor.panels import DASHBOARDS, Panel, bind

out = Console()
Rows = tuple[list[str], list[list[Any]]]


def _api_runner(api: str) -> Callable[[str], Rows]:
    def run(sql: str) -> Rows:
        request = urllib.request.Request(
            api.rstrip("/") + "/v1/query",
            data=json.dumps({"sql": sql}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        return list(body["columns"]), [list(r) for r in body["rows"]]

    return run


def _chart(panel: Panel, columns: list[str], rows: list[list[Any]]) -> str:
    import plotly.graph_objects as go
    from plotly.io import to_html

    fig = go.Figure()
    if panel.kind == "timeseries":
        series: dict[str, tuple[list[Any], list[Any]]] = {}
        for time, name, value in rows:
            xs, ys = series.setdefault(str(name), ([], []))
            xs.append(time)
            ys.append(value)
        for name, (xs, ys) in sorted(series.items()):
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers"))
    elif panel.kind == "barchart":
        fig.add_trace(go.Bar(x=[r[0] for r in rows], y=[r[1] for r in rows]))
    else:
        cells = [[str(r[i]) for r in rows] for i in range(len(columns))]
        fig.add_trace(go.Table(header={"values": columns}, cells={"values": cells}))
    fig.update_layout(title=panel.title, height=360, margin={"t": 48, "b": 32})
    return to_html(fig, full_html=False, include_plotlyjs=False)


def render_report(run: Callable[[str], Rows], model: str) -> str:
    """One page: each dashboard's panels in order, each a plotly chart (or an error box)."""
    from plotly.offline import get_plotlyjs

    sections = []
    for dashboard in DASHBOARDS:
        parts = [f"<h2>{html.escape(dashboard.title)}</h2>"]
        for panel in dashboard.panels:
            try:
                columns, rows = run(bind(panel.sql, model))
            except Exception as exc:  # a panel that cannot run says why; the page still renders
                parts.append(
                    f"<div class='panel-error'><b>{html.escape(panel.title)}</b>: "
                    f"{html.escape(str(exc))}</div>"
                )
                continue
            parts.append(f"<div class='panel' data-rows='{len(rows)}'>")
            parts.append(_chart(panel, columns, rows))
            parts.append("</div>")
        sections.append("".join(parts))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>driftloop report: {html.escape(model)}</title>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script>"
        "<style>.panel-error{color:#b00}</style></head><body>"
        f"<h1>driftloop: {html.escape(model)}</h1>{''.join(sections)}</body></html>"
    )


def report(
    model: Annotated[str, typer.Option("--model", help="the model whose panels to render")],
    html_out: Annotated[Path, typer.Option("--html", help="where to write the page")],
    api: Annotated[
        str | None, typer.Option("--api", help="the monitor's query API, http://127.0.0.1:8084")
    ] = None,
    dsn: Annotated[
        str | None, typer.Option("--dsn", help="read a store directly (no monitor running)")
    ] = None,
) -> None:
    """Render the Grafana dashboards' panels to one HTML page (plotly charts)."""
    if (api is None) == (dsn is None):
        raise typer.BadParameter("give exactly one of --api and --dsn")
    if api is not None:
        page = render_report(_api_runner(api), model)
    else:
        from services.common.clickhouse import connect

        assert dsn is not None
        client = connect(dsn)

        def run(sql: str) -> Rows:
            result = client.query(sql)
            return list(result.column_names), [list(r) for r in result.result_rows]

        page = render_report(run, model)
        client.close()
    html_out.write_text(page)
    out.print(f"wrote {html_out}")
