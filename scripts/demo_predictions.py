"""demo.sh's online part: send predictions through the router as an app would, then print
latency percentiles and the variant split.

Rows come from the newest sealed version of the dataset (what ingest accepted); a third
of the requests carry only the entity key, so the router fills every feature from the
online store that ingest keeps in Redis.

    python scripts/demo_predictions.py --target 127.0.0.1:PORT [--requests 3000]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftloop.client import DriftloopClient
from services.common.artifacts import ArtifactStore
from services.common.datasets.store import VersionStore
from services.common.settings import load_settings

_console = Console()


def _rows(dataset: str, limit: int) -> list[dict[str, Any]]:
    store = VersionStore(ArtifactStore.from_settings(load_settings()))
    manifests = store.manifests(dataset)
    if not manifests:
        raise SystemExit(f"no sealed version of {dataset!r}: run the ingest part first")
    return store.read_table(manifests[-1]).slice(0, limit).to_pylist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", default="credit-default")
    parser.add_argument("--dataset", default="credit")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.target)
    grpc.channel_ready_future(channel).result(timeout=120)
    channel.close()
    rows = _rows(args.dataset, 2000)
    skip = {"event_id", "entity_key", "event_time_ms", "label"}
    latencies: list[float] = []
    variants: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    key_only = 0

    def one(i: int, client: DriftloopClient) -> None:
        nonlocal key_only
        row = rows[i % len(rows)]
        features = None
        if i % 3:  # two in three send their features; the rest the key alone
            features = {k: v for k, v in row.items() if k not in skip and v is not None}
        else:
            key_only += 1
        started = time.perf_counter()
        try:
            prediction = client.predict(args.model, row["entity_key"], features)
        except Exception as exc:
            errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1
            return
        latencies.append((time.perf_counter() - started) * 1000)
        variants[f"{prediction.variant} v{prediction.version}"] += 1

    started = time.perf_counter()
    with (
        DriftloopClient(args.target) as client,
        ThreadPoolExecutor(args.concurrency) as pool,
        Progress(console=_console, transient=True) as progress,
    ):
        task = progress.add_task(
            f"{args.requests} predictions via {args.target}", total=args.requests
        )
        for future in [pool.submit(one, i, client) for i in range(args.requests)]:
            future.result()
            progress.advance(task)
    elapsed = time.perf_counter() - started
    ok = len(latencies)
    _console.print(
        f"predictions: {ok} ok, {sum(errors.values())} failed, {key_only} sent by entity key "
        f"only, {ok / elapsed:,.0f} req/s over {args.concurrency} clients"
    )
    if latencies:
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        _console.print(f"latency ms: p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}")
    split = (
        ", ".join(f"{name}: {n} ({n / ok:.1%})" for name, n in variants.most_common())
        if ok
        else "-"
    )
    _console.print(f"variant split: {split}")
    for error, n in errors.most_common(5):
        _console.print(f"[red]{n} x {error}[/red]")
    return 0 if ok and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
