"""`driftloop drift report`: the monitor's drift statistics on two Parquet files."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.monitor.offline import DriftReport, ReportError, drift_report

app = typer.Typer(no_args_is_help=True, help="Drift statistics, offline (the monitor's SQL).")
out = Console()
err = Console(stderr=True)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [p.strip() for p in text.split(",") if p.strip()]


def _fmt(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.4g}"


@app.command()
def report(
    reference: Annotated[Path, typer.Option("--reference", help="reference Parquet file")],
    analysis: Annotated[Path, typer.Option("--analysis", help="Parquet file to judge")],
    chunk_size: Annotated[
        int | None, typer.Option("--chunk-size", min=1, help="rows per chunk [analysis/10]")
    ] = None,
    features: Annotated[str | None, typer.Option(help="a,b,c: judge only these")] = None,
    exclude: Annotated[str | None, typer.Option(help="a,b: leave these out")] = None,
    timestamp_column: Annotated[str | None, typer.Option(help="order rows by it")] = None,
    score_column: Annotated[str | None, typer.Option(help="model score (score drift)")] = None,
    label_column: Annotated[str | None, typer.Option(help="outcome (label drift)")] = None,
    labels: Annotated[Path | None, typer.Option(help="Parquet file with the labels")] = None,
    id_column: Annotated[str | None, typer.Option(help="joins --labels to the rows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    html_out: Annotated[Path | None, typer.Option("--html", help="write an HTML page")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="table: every row, not only features that alert")
    ] = False,
) -> None:
    """Per-chunk, per-feature drift of ANALYSIS against REFERENCE, each value with its
    threshold (learnt from the reference's own chunks) and whether it alerts."""
    try:
        result = drift_report(
            reference,
            analysis,
            chunk_size,
            features=_split(features),
            exclude=_split(exclude) or (),
            timestamp_column=timestamp_column,
            score_column=score_column,
            label_column=label_column,
            labels=labels,
            id_column=id_column,
        )
    except ReportError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if html_out is not None:
        html_out.write_text(render_html(result))
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    _print_table(result, show_all)


def _print_table(result: DriftReport, show_all: bool) -> None:
    alerting = {(r.feature, r.metric) for r in result.alerts()}
    table = Table(title=f"drift per chunk of {result.chunk_size} rows")
    for col in ("period", "chunk", "rows", "feature", "metric", "value", "threshold", "alert"):
        table.add_column(col, justify="right" if col in ("chunk", "rows", "value") else "left")
    for r in result.rows:
        if not show_all and (r.feature, r.metric) not in alerting:
            continue
        mark = "[red]ALERT[/red]" if r.alert else ""
        table.add_row(
            r.period,
            str(r.chunk),
            str(r.rows),
            r.feature,
            r.metric,
            _fmt(r.value),
            _fmt(r.threshold),
            mark,
        )
    out.print(table)
    judged = len(result.columns.numeric) + len(result.columns.categorical)
    out.print(
        f"{judged} feature(s) judged in {result.analysis_rows} analysis rows against "
        f"{result.reference_rows} reference rows; {len(result.alerts())} alert(s)"
        + ("" if show_all else " (only alerting metrics shown; --all for every row)")
    )
    for name, why in sorted(result.columns.left_out.items()):
        out.print(f"left out: {name}: {why}", highlight=False)
    if result.performance:
        perf = Table(title="performance per chunk (realised on labelled rows; CBPE estimate)")
        for col in ("period", "chunk", "metric", "labelled", "realised", "estimated", "95 % band"):
            perf.add_column(col)
        for p in result.performance:
            band = f"{_fmt(p.low)}..{_fmt(p.high)}" if math.isfinite(p.low) else "—"
            perf.add_row(
                p.period, str(p.chunk), p.metric, str(p.labelled), _fmt(p.realised),
                _fmt(p.estimated), band,
            )  # fmt: skip
        out.print(perf)


def render_html(result: DriftReport) -> str:
    """One page: a chart per metric (values per chunk, threshold dashed) and the table."""
    import plotly.graph_objects as go
    from plotly.io import to_html

    charts: list[str] = []
    for metric in sorted({r.metric for r in result.rows}):
        fig = go.Figure()
        for feature in sorted({r.feature for r in result.rows if r.metric == metric}):
            rows = [r for r in result.rows if r.metric == metric and r.feature == feature]
            x = [f"{r.period[0]}{r.chunk}" for r in rows]
            fig.add_trace(go.Scatter(x=x, y=[r.value for r in rows], name=feature))
            if math.isfinite(rows[0].threshold):
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=[r.threshold for r in rows],
                        name=f"{feature} threshold",
                        line={"dash": "dash"},
                    )
                )
        fig.update_layout(title=metric, height=320)
        charts.append(to_html(fig, full_html=False, include_plotlyjs=not charts))
    cells = "".join(
        f"<tr class='{'alert' if r.alert else ''}'><td>{r.period}</td><td>{r.chunk}</td>"
        f"<td>{r.rows}</td><td>{html.escape(r.feature)}</td><td>{r.metric}</td>"
        f"<td>{_fmt(r.value)}</td><td>{_fmt(r.threshold)}</td><td>{'ALERT' if r.alert else ''}"
        "</td></tr>"
        for r in result.rows
    )
    left = "".join(
        f"<li>{html.escape(k)}: {html.escape(v)}</li>"
        for k, v in sorted(result.columns.left_out.items())
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>driftloop drift report"
        "</title><style>tr.alert td{color:#b00;font-weight:bold}td{padding:0 .5em}</style>"
        f"</head><body><h1>Drift per chunk of {result.chunk_size} rows</h1>"
        f"<p>{len(result.alerts())} alert(s)</p>{''.join(charts)}<h2>Left out</h2><ul>{left}</ul>"
        "<table><tr><th>period</th><th>chunk</th><th>rows</th><th>feature</th><th>metric</th>"
        f"<th>value</th><th>threshold</th><th>alert</th></tr>{cells}</table></body></html>"
    )
