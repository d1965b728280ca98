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
clickhouse-connect `insert_arrow` of the same prediction rows, as rows/s and their ratio;
the sink's rows come from its own `to_row` on decoded `PredictionLog`s (timed apart, as it
precedes every write), and the ratio is also printed against that raw insert made with the
sink's insert settings, so the part of the lead that is the skipped on-insert merge shows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

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
) -> tuple[list[tuple[float, float, float]], float]:
    """Seconds for the monitor's sink (`write_pending`: key check + insert) and for a raw
    `insert_arrow` of the same prediction rows, in batches of `batch` (the sink's default
    `sink_max_rows`), `repeats` times alternating, both tables emptied before each repeat.
    The sink's rows are made by its own `to_row` from decoded `PredictionLog`s, as the
    consumer hands them over; the raw path's Arrow tables from the same messages. Both are
    built before either clock starts; the `to_row` step is timed on its own (the second
    value returned: seconds for all rows), since it precedes every write."""
    from driftloop.v1.events_pb2 import PredictionLog
    from services.common.clickhouse import apply_migrations
    from services.common.kafka_serde import Envelope
    from services.monitor.sinks.arrow import column_types, to_arrow
    from services.monitor.sinks.rows import SINK_TABLES
    from services.monitor.sinks.writer import SINK_INSERT_SETTINGS, PendingWrite, write_pending

    apply_migrations(client)
    client.command("CREATE TABLE IF NOT EXISTS predictions_raw AS predictions")
    rng = np.random.default_rng(5)
    names = [f"f{i}" for i in range(n_features)]
    t0_ms = 1_796_083_200_000  # 2026-12-01
    envelopes = [
        Envelope("predictions.log", 0, i, f"k{i}".encode(), PredictionLog(
            request_id=f"req-{i}", time_ms=t0_ms + i, model="bench", version="1",
            variant="a", entity_key=f"k{i}", bucket=i % 100, score=0.5, latency_ms=3.0,
            numeric=dict(zip(names, rng.normal(size=n_features).tolist(), strict=True)),
        ), {}, t0_ms + i)
        for i in range(rows)
    ]  # fmt: skip
    spec = SINK_TABLES[PredictionLog]
    start = time.perf_counter()
    all_rows = [spec.to_row(env) for env in envelopes]
    to_row_s = time.perf_counter() - start
    schema = client.query_arrow("SELECT * FROM predictions_raw LIMIT 0").schema
    pendings, arrow = [], []
    for lo in range(0, rows, batch):
        pending = PendingWrite()
        pending.rows["predictions"].extend(all_rows[lo : lo + batch])
        pending.records = len(pending.rows["predictions"])
        pendings.append(pending)
        messages = [env.message for env in envelopes[lo : lo + batch]]
        arrow.append(pa.table({
            "request_id": [m.request_id for m in messages],
            "time": pa.array([m.time_ms for m in messages]).cast(pa.timestamp("ms", "UTC")),
            "model": [m.model for m in messages],
            "version": [m.version for m in messages],
            "variant": [m.variant for m in messages],
            "experiment": [m.experiment for m in messages],
            "shadow": [m.shadow for m in messages],
            "entity_key": [m.entity_key for m in messages],
            "bucket": [m.bucket for m in messages],
            "feature_names": [list(m.numeric) for m in messages],
            "feature_values": [list(m.numeric.values()) for m in messages],
            "category_names": [list(m.categorical) for m in messages],
            "category_values": [list(m.categorical.values()) for m in messages],
            "score": [m.score for m in messages],
            "latency_ms": [m.latency_ms for m in messages],
            "error": [m.error for m in messages],
        }).select(schema.names).cast(schema))  # fmt: skip
    # One row through each path into a scratch table first: the process's one-off costs
    # (pyarrow's first timestamp conversion, the store's first insert) fall on neither clock.
    client.command("CREATE TABLE IF NOT EXISTS predictions_warm AS predictions")
    types = column_types(client, "predictions")
    warm = to_arrow(all_rows[:1], spec.columns, types)
    client.insert_arrow("predictions_warm", warm, settings={"async_insert": 0})
    client.insert_arrow("predictions_warm", arrow[0].slice(0, 1), settings={"async_insert": 0})
    # The bench keeps every batch's rows and tables alive for all repeats (~1M objects; the
    # sink holds one batch): frozen, the garbage collector's full passes skip them instead
    # of walking them on either clock.
    gc.collect()
    gc.freeze()
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
        # the same raw insert with the sink's insert settings (no merge of the block on
        # insert), which only the sink's one-row-per-key blocks make safe: what is left of
        # the sink's lead without that
        client.command("TRUNCATE TABLE predictions_warm")
        start = time.perf_counter()
        for table in arrow:
            client.insert_arrow("predictions_warm", table, settings=SINK_INSERT_SETTINGS)
        raw_sink_settings_s = time.perf_counter() - start
        stored = client.query("SELECT count() FROM predictions").result_rows[0][0]
        if stored != rows:
            raise SystemExit(f"the sink stored {stored} rows of {rows}")
        times.append((sink_s, raw_s, raw_sink_settings_s))
    gc.unfreeze()
    same = client.query(
        "SELECT count() FROM (SELECT * FROM predictions EXCEPT SELECT * FROM predictions_raw)"
    ).result_rows[0][0]
    if same:
        raise SystemExit(f"{same} rows the sink stored differ from the raw insert's")
    return times, to_row_s


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
            sink, to_row_s = _sink_vs_raw(
                client, args.sink_rows, args.sink_batch, args.features, args.repeats
            )
            client.close()
        _print_sink(args.sink_rows, args.sink_batch, sink, to_row_s)
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
        sink, to_row_s = _sink_vs_raw(
            client, args.sink_rows, args.sink_batch, args.features, args.repeats
        )
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
    _print_sink(args.sink_rows, args.sink_batch, sink, to_row_s)


def _print_sink(
    rows: int, batch: int, runs: list[tuple[float, float, float]], to_row_s: float
) -> None:
    def ratio(at: int) -> str:
        ratios = sorted(run[at] / run[0] for run in runs)
        return f"{statistics.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}]"

    sink_rate = statistics.median(rows / run[0] for run in runs)
    raw_rate = statistics.median(rows / run[1] for run in runs)
    _console.print(
        f"sink: {rows:,} predictions in batches of {batch:,}, {len(runs)} runs: "
        f"{sink_rate:,.0f} rows/s vs raw insert_arrow {raw_rate:,.0f} rows/s (medians) = "
        f"{ratio(1)}; vs that raw insert with the sink's settings (no optimize_on_insert): "
        f"{ratio(2)}; before the write, the rows from the decoded messages (to_row): "
        f"{rows / to_row_s:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
