"""Drift in ClickHouse SQL (the monitor's `compute_drift`) against Evidently, same rows, one run.

    python -m bench.monitor                        # 1M rows x 30 features, 10 windows of 100k
    python -m bench.monitor --windows 10 --window-rows 10000
    python -m bench.monitor --sink-only            # only the sink against a raw insert

The analysis has `windows` windows of `window_rows` rows, the reference `window_rows` rows,
every feature N(0, 1) and f0 shifted by +0.5 sigma in the last two windows only: exactly two
(feature, window) pairs should be flagged. Evidently 0.7.23 (`DataDriftPreset`, default
tests) runs in its own venv under $DRIFTLOOP_CACHE (it needs pandas<3; never in the
services' lock), made from bench/evidently/requirements.txt on first use; it is timed over
its windows with the Parquet reading excluded. The SQL side is timed from rows already in
the store (the live monitor's situation) to the per-chunk rows with thresholds: once with
every statistic (PSI, exact KS, null rate, PCA reconstruction error; the reference split in
10 chunks for the thresholds) and once without KS, the costliest one (one sort per column).
Then the monitor's sink (`write_pending`: the key check, then the insert) against a raw
clickhouse-connect `insert_arrow` of the same prediction rows, as rows/s and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_connect.driver.client import Client
from rich.console import Console
from rich.table import Table

from services.common.clickhouse import connect
from services.monitor.drift import DriftSpec, compute_drift

_console = Console()
_HERE = Path(__file__).resolve().parent
_EVIDENTLY = "0.7.23"


def _data(rows: int, n_features: int, shifted_from: int | None, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {"row": np.arange(rows, dtype=np.int64)}
    for i in range(n_features):
        values = rng.normal(size=rows)
        if i == 0 and shifted_from is not None:
            values[shifted_from:] += 0.5
        cols[f"f{i}"] = values
    return pa.table(cols)


def _evidently_python() -> Path:
    cache = Path(os.environ.get("DRIFTLOOP_CACHE", Path.home() / ".cache" / "driftloop"))
    venv = cache / f"bench-evidently-{_EVIDENTLY}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    uv = shutil.which("uv") or next((str(p) for p in cache.glob("uv-*/bin/uv")), None)
    if uv is None:
        raise SystemExit(
            "bench.monitor needs uv to build the Evidently venv (scripts/bootstrap.sh)"
        )
    _console.print(f"building {venv} (Evidently {_EVIDENTLY}, bench only)")
    subprocess.run([uv, "venv", "--python", "3.11", str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), "-r",
         str(_HERE / "evidently" / "requirements.txt")],
        check=True,
    )  # fmt: skip
    return python


def _run_evidently(ref: Path, ana: Path, window_rows: int) -> tuple[float, set[tuple[str, int]]]:
    proc = subprocess.run(
        [str(_evidently_python()), str(_HERE / "evidently" / "run.py"), str(ref), str(ana),
         str(window_rows)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), {(f, int(w)) for f, w in result["flagged"]}


def _load(client: Client, ref: pa.Table, ana: pa.Table, features: list[str]) -> None:
    ddl = ", ".join(f"{f} Float64" for f in features)
    for name, table in (("reference", ref), ("analysis", ana)):
        client.command(f"DROP TABLE IF EXISTS {name}")
        client.command(f"CREATE TABLE {name} (row Int64, {ddl}) ENGINE = MergeTree ORDER BY row")
        client.insert_arrow(name, table, settings={"async_insert": 0})


def _run_sql(
    client: Client, ref_rows: int, window_rows: int, features: list[str], ks: bool
) -> tuple[float, set[tuple[str, int]], set[int]]:
    ref_chunk = max(1, ref_rows // 10)
    source = "SELECT *, intDiv(row, {n}) AS __chunk, toFloat64(row) AS __key FROM {t}"
    start = time.perf_counter()
    rows = compute_drift(
        client,
        source.format(n=ref_chunk, t="reference"),
        source.format(n=window_rows, t="analysis"),
        DriftSpec(numeric=features, ks=ks),
    )
    seconds = time.perf_counter() - start
    flagged = {
        (r.feature, r.chunk)
        for r in rows
        if r.alert and r.period == "analysis" and r.feature != "*"
    }
    multivariate = {
        r.chunk for r in rows if r.alert and r.period == "analysis" and r.feature == "*"
    }
    return seconds, flagged, multivariate


def _sink_vs_raw(
    client: Client, rows: int, batch: int, n_features: int, repeats: int
) -> list[tuple[float, float]]:
    """Seconds for the monitor's sink (`write_pending`: key check + insert) and for a raw
    `insert_arrow` of the same prediction rows, in batches of `batch` (the sink's default
    `sink_max_rows`), `repeats` times alternating, both tables emptied before each repeat;
    rows and Arrow tables are built before either clock starts."""
    from datetime import UTC, datetime, timedelta

    from driftloop.v1.events_pb2 import PredictionLog
    from services.common.clickhouse import apply_migrations
    from services.monitor.sinks.arrow import column_types, to_arrow
    from services.monitor.sinks.rows import SINK_TABLES
    from services.monitor.sinks.writer import PendingWrite, write_pending

    apply_migrations(client)
    client.command("CREATE TABLE IF NOT EXISTS predictions_raw AS predictions")
    rng = np.random.default_rng(5)
    names = [f"f{i}" for i in range(n_features)]
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    all_rows: list[tuple[Any, ...]] = [
        (f"req-{i}", t0 + timedelta(milliseconds=i), "bench", "1", "a", "", False, f"k{i}",
         i % 100, names, list(rng.normal(size=n_features)), [], [], 0.5, 3.0, "")
        for i in range(rows)
    ]  # fmt: skip
    columns = list(SINK_TABLES[PredictionLog].columns)
    batches = [all_rows[i : i + batch] for i in range(0, rows, batch)]
    pendings = []
    for part in batches:
        pending = PendingWrite()
        pending.rows["predictions"].extend(part)
        pending.records = len(part)
        pendings.append(pending)
    arrow = [
        pa.table(
            {
                c: pa.array(list(col))
                for c, col in zip(columns, zip(*part, strict=True), strict=True)
            }
        ).cast(client.query_arrow("SELECT * FROM predictions_raw LIMIT 0").schema)
        for part in batches
    ]
    # One row through each path into a scratch table first: the process's one-off costs
    # (pyarrow's first timestamp conversion, the store's first insert) fall on neither clock.
    client.command("CREATE TABLE IF NOT EXISTS predictions_warm AS predictions")
    types = column_types(client, "predictions")
    warm = to_arrow(all_rows[:1], columns, types)
    client.insert_arrow("predictions_warm", warm, settings={"async_insert": 0})
    client.insert_arrow("predictions_warm", arrow[0].slice(0, 1), settings={"async_insert": 0})
    times = []
    for _ in range(repeats):
        client.command("TRUNCATE TABLE predictions")
        client.command("TRUNCATE TABLE predictions_raw")
        start = time.perf_counter()
        for pending in pendings:
            write_pending(client, pending)
        sink_s = time.perf_counter() - start
        start = time.perf_counter()
        for table in arrow:
            client.insert_arrow("predictions_raw", table, settings={"async_insert": 0})
        raw_s = time.perf_counter() - start
        stored = client.query("SELECT count() FROM predictions").result_rows[0][0]
        if stored != rows:
            raise SystemExit(f"the sink stored {stored} rows of {rows}")
        times.append((sink_s, raw_s))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window-rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--sink-rows", type=int, default=200_000)
    parser.add_argument("--sink-batch", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each SQL path and sink")
    parser.add_argument("--sink-only", action="store_true", help="only the sink vs raw insert")
    args = parser.parse_args()
    if args.sink_only:
        with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
            client = connect(f"chdb://{Path(tmp) / 'store'}")
            sink = _sink_vs_raw(
                client, args.sink_rows, args.sink_batch, args.features, args.repeats
            )
            client.close()
        _print_sink(args.sink_rows, args.sink_batch, sink)
        return
    windows, window_rows = args.windows, args.window_rows
    features = [f"f{i}" for i in range(args.features)]
    truth = {("f0", w) for w in (windows - 2, windows - 1)}
    ref = _data(window_rows, args.features, None, seed=1)
    ana = _data(windows * window_rows, args.features, (windows - 2) * window_rows, seed=2)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        ref_path, ana_path = Path(tmp) / "ref.parquet", Path(tmp) / "ana.parquet"
        pq.write_table(ref.drop(["row"]), ref_path)
        pq.write_table(ana.drop(["row"]), ana_path)
        client = connect(f"chdb://{Path(tmp) / 'store'}")
        _load(client, ref, ana, features)
        runs: dict[bool, list[tuple[float, set[tuple[str, int]], set[int]]]] = {True: [], False: []}
        for _ in range(args.repeats):  # alternating, so both paths see the same noise
            for ks in (True, False):
                runs[ks].append(_run_sql(client, ref.num_rows, window_rows, features, ks))
        sink = _sink_vs_raw(client, args.sink_rows, args.sink_batch, args.features, args.repeats)
        client.close()
        ev_seconds, ev_flagged = _run_evidently(ref_path, ana_path, window_rows)
    table = Table(
        title=f"drift: {windows} windows x {window_rows:,} rows x {args.features} features "
        f"vs a {window_rows:,}-row reference; true pairs {sorted(truth)}; "
        f"SQL median of {args.repeats} runs [min-max]"
    )
    for col in ("path", "seconds", "vs Evidently", "flagged", "false alarms", "missed"):
        table.add_column(col)
    table.add_row(
        f"Evidently {_EVIDENTLY} DataDriftPreset", f"{ev_seconds:.2f}", "1.0x",
        str(sorted(ev_flagged)), str(len(ev_flagged - truth)), str(len(truth - ev_flagged)),
    )  # fmt: skip
    for name, ks in (("ClickHouse SQL, all statistics", True), ("without KS", False)):
        seconds = sorted(r[0] for r in runs[ks])
        flagged = runs[ks][0][1]
        if any(r[1] != flagged for r in runs[ks]):
            raise SystemExit(f"{name}: the runs flagged different pairs")
        table.add_row(
            name,
            f"{statistics.median(seconds):.2f} [{seconds[0]:.2f}-{seconds[-1]:.2f}]",
            f"{ev_seconds / statistics.median(seconds):.1f}x "
            f"[{ev_seconds / seconds[-1]:.1f}-{ev_seconds / seconds[0]:.1f}]",
            str(sorted(flagged)),
            str(len(flagged - truth)),
            str(len(truth - flagged)),
        )
    _console.print(table)
    _console.print(f"PCA reconstruction error alerts (windows): {sorted(runs[True][0][2])}")
    _print_sink(args.sink_rows, args.sink_batch, sink)


def _print_sink(rows: int, batch: int, runs: list[tuple[float, float]]) -> None:
    ratios = sorted(raw_s / sink_s for sink_s, raw_s in runs)
    sink_rate = statistics.median(rows / s for s, _ in runs)
    raw_rate = statistics.median(rows / r for _, r in runs)
    _console.print(
        f"sink: {rows:,} predictions in batches of {batch:,}, {len(runs)} runs: "
        f"{sink_rate:,.0f} rows/s vs raw insert_arrow {raw_rate:,.0f} rows/s (medians) = "
        f"{statistics.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}]"
    )


if __name__ == "__main__":
    main()
