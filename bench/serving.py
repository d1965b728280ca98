"""Online serving, side by side in ONE run: driftloop against the limit and the peer.

Paths (the same XGBoost model, 200 trees of depth 6, same encoder and scoring code):
  inproc   (a) in-process: encode + predict, c requests per call (the physical limit)
  peer     (b) a plain grpc.aio server + a small asyncio batcher calling the model in
               process (`bench.serving_peer`): what an engineer would write instead
  router   (c) driftloop: `python -m services.router` → Ray Serve replica (`@serve.batch`),
               with assignment, the online feature lookup (2 of 18 features looked up in
               Redis per request) and prediction logging to Kafka on
  serve    Serve through `ServingClient` directly, one handle call per request (no router)
Each is run for `--seconds` at 1, 16 and 64 concurrent closed-loop clients, then
`PredictBatch` with 512 rows, interleaved, `--repeats` times; then batching on vs off at
c=64 (peer: batcher off; router: coalescing off and Serve batches of 1). Prints req/s,
rows/s, p50, p99 (medians over repeats, [min-max] spread) and ratios against the peer
computed within each repeat. It starts its own stack (Kafka, Redis) in a temporary home.

    scripts/venv python -m bench.serving [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

import services.serving  # noqa: F401  (Ray's environment, before anything imports ray)
from driftloop.v1 import prediction_pb2 as pb
from driftloop.v1 import prediction_pb2_grpc as pb_grpc
from services.common.artifacts import ArtifactStore
from services.common.encoding import FeatureEncoder
from services.common.feature_store import OnlineFeatureStore
from services.common.redis_client import sync_redis
from services.common.registry import ModelRegistry, RegistrationInfo
from services.common.settings import Settings, load_settings
from services.serving.config import BatchingSpec, ServingSettings
from services.serving.servable import Servable
from services.stack.processes import free_port
from services.trainer.models import fit_model
from services.trainer.profile import build_reference_profile
from tests.integration.trainer.synthetic import credit_schema, credit_table

_console = Console(width=150)
REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL, NOBATCH, DATASET = "bench", "bench-nobatch", "credit"
LOOKED_UP = ("annual_income", "region")  # sent by key only: the router fills them
Call = Callable[[int], Awaitable[int]]  # (client index) -> rows answered


@dataclass
class Cell:
    requests: int
    rows: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def closed_loop(call: Call, concurrency: int, seconds: float, warm_s: float = 0.5) -> Cell:
    """`concurrency` clients, each calling again as soon as answered; the first `warm_s`
    are not counted."""
    loop = asyncio.get_running_loop()
    start = loop.time() + warm_s
    end = start + seconds
    cell = Cell(0, 0, seconds)

    async def client(i: int) -> None:
        while True:
            t0 = loop.time()
            if t0 >= end:
                return
            rows = await call(i)
            t1 = loop.time()
            if t0 >= start and t1 <= end:
                cell.requests += 1
                cell.rows += rows
                cell.latencies_ms.append((t1 - t0) * 1000)

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return cell


# -- set-up --------------------------------------------------------------------------------


def _run_cli(home: Path, *args: str) -> None:
    env = {**os.environ, "DRIFTLOOP_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def train_and_register(settings: Settings) -> tuple[Servable, pa.Table]:
    schema = credit_schema()
    table = credit_table(20_000, seed=0)
    encoder = FeatureEncoder.fit(schema, table)
    X = encoder.transform(table)
    y = np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.float64)
    cut = 16_000
    params = {"num_boost_round": 200, "max_depth": 6, "early_stopping_rounds": 1000}
    fitted = fit_model("xgboost", X[:cut], y[:cut], X[cut:], y[cut:], params, 7, "binary")
    registry = ModelRegistry(ArtifactStore.from_settings(settings))
    scores = fitted.predict(X)
    info = RegistrationInfo(
        features=encoder.feature_specs(),
        reference_profile=build_reference_profile(encoder, table, scores, y, "binary"),
        code_version="bench",
        params={**fitted.params, "encoder": encoder.to_params(), "dataset": DATASET},
        seed=7,
    )
    for name in (MODEL, NOBATCH):
        version = registry.register(name, fitted.artifact, fitted.artifact_format, info).version
        registry.set_alias(name, "champion", version, actor="bench", reason="bench")
    online = credit_table(
        2_000, seed=3, start_ms=int(time.time() * 1000) - 3_600_000, span_ms=60_000, id_prefix="bn"
    )
    OnlineFeatureStore(sync_redis(settings), schemas={DATASET: schema}).write_latest(
        DATASET, online
    )
    return Servable.load(registry, MODEL, 1), online


def deploy_serve(settings: Settings) -> None:
    """This process is serving's Ray head: both apps deployed, serving.json written."""
    from ray import serve

    from services.common.ray_runtime import ensure_ray, ray_address
    from services.serving.app import start_serve
    from services.serving.deployment import build_variant_app
    from services.serving.state import DeployedVariant, ServingState, write_state

    ensure_ray(num_cpus=2)
    start_serve()
    apps = {}
    for name, batching in ((MODEL, BatchingSpec()), (NOBATCH, BatchingSpec(max_batch_size=1))):
        config = ServingSettings(batching=batching)
        serve.run(
            build_variant_app(settings, config, name, "champion", 1),
            name=f"{name}.champion",
            route_prefix=None,
        )
        apps[f"{name}.champion"] = DeployedVariant(model=name, variant="champion", version=1)
    now = int(time.time() * 1000)
    write_state(
        settings.home,
        ServingState(
            ray_address=ray_address(),
            pid=os.getpid(),
            started_at_ms=now,
            updated_at_ms=now,
            ready=True,
            apps=apps,
        ),
    )


@contextmanager
def server_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_ready(target: str, log: Path, timeout_s: float = 120) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(target)
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except TimeoutError:
        raise RuntimeError(f"{target} did not start:\n{log.read_text()[-3000:]}") from None
    return channel


# -- requests ------------------------------------------------------------------------------


class Requests:
    """Per-row requests and a 512-row batch, all from the online table's entities."""

    def __init__(self, servable: Servable, online: pa.Table, batch_rows: int) -> None:
        self.names = servable.encoder.feature_names
        kinds = {f.name: f.kind for f in servable.encoder.features}
        rows = online.to_pylist()
        self.keys = [r["entity_key"] for r in rows]
        self.full: list[pb.PredictRequest] = []
        self.by_key: list[pb.PredictRequest] = []
        self.columns: list[dict[str, list[Any]]] = []
        for r in rows:
            numeric = {
                n: float(r[n]) for n in self.names if kinds[n] == "numeric" and r[n] is not None
            }
            categorical = {
                n: r[n] for n in self.names if kinds[n] != "numeric" and r[n] is not None
            }
            self.full.append(
                pb.PredictRequest(
                    model=MODEL,
                    entity_key=r["entity_key"],
                    numeric=numeric,
                    categorical=categorical,
                )
            )
            self.by_key.append(
                pb.PredictRequest(
                    model=MODEL,
                    entity_key=r["entity_key"],
                    numeric={k: v for k, v in numeric.items() if k not in LOOKED_UP},
                    categorical={k: v for k, v in categorical.items() if k not in LOOKED_UP},
                )
            )
            self.columns.append({n: [r[n]] for n in self.names})
        batch = rows[:batch_rows]
        num = [n for n in self.names if kinds[n] == "numeric"]
        cat = [n for n in self.names if kinds[n] != "numeric"]
        values = np.array(
            [[np.nan if r[n] is None else r[n] for n in num] for r in batch], dtype=np.float32
        )
        self.batch = pb.PredictBatchRequest(
            model=MODEL,
            entity_keys=[r["entity_key"] for r in batch],
            feature_names=num,
            values=values.ravel().tolist(),
            rows=len(batch),
            categorical_names=cat,
            categorical_values=[r[n] or "" for r in batch for n in cat],
        )
        self.batch_columns = {n: [r[n] for r in batch] for n in self.names}

    def row(self, i: int, counter: list[int]) -> int:
        counter[0] += 1
        return (counter[0] * 7919 + i) % len(self.keys)


async def run(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="dl-bench-", dir="/tmp"))
    _console.print(f"[bold]bench.serving[/bold]: stack in {home}")
    _run_cli(home, "stack", "up")
    try:
        await _bench(home, args)
    finally:
        _run_cli(home, "stack", "down")


async def _bench(home: Path, args: argparse.Namespace) -> None:
    settings = load_settings(home=home)
    servable, online = train_and_register(settings)
    requests = Requests(servable, online, args.batch_rows)
    deploy_serve(settings)
    env = {
        "DRIFTLOOP_HOME": str(home),
        "DRIFTLOOP_RAY_TMPDIR": os.environ.get("DRIFTLOOP_RAY_TMPDIR", "/tmp/dl-ray"),
    }
    ports = {name: free_port() for name in ("peer", "peer-nobatch", "router", "router-nobatch")}
    logs = {name: home / f"{name}.log" for name in ports}
    py = sys.executable
    peer = [py, "-m", "bench.serving_peer", "--home", str(home), "--model", MODEL]
    router_env = {**env, "DRIFTLOOP_LOG_LEVEL": "WARNING"}
    with (
        server_process([*peer, "--port", str(ports["peer"])], env, logs["peer"]),
        server_process(
            [*peer, "--port", str(ports["peer-nobatch"]), "--no-batching"],
            env,
            logs["peer-nobatch"],
        ),
        server_process(
            [py, "-m", "services.router"],
            {
                **router_env,
                "DRIFTLOOP_ROUTER_PORT": str(ports["router"]),
                "DRIFTLOOP_ROUTER_REPLICA": "bench-0",
            },
            logs["router"],
        ),
        server_process(
            [py, "-m", "services.router"],
            {
                **router_env,
                "DRIFTLOOP_ROUTER_PORT": str(ports["router-nobatch"]),
                "DRIFTLOOP_ROUTER_REPLICA": "bench-1",
                "DRIFTLOOP_ROUTER_COALESCE_ROWS": "1",
                "DRIFTLOOP_ROUTER_CALLS_IN_FLIGHT": "256",
            },
            logs["router-nobatch"],
        ),
    ):
        channels = {n: await wait_ready(f"127.0.0.1:{p}", logs[n]) for n, p in ports.items()}
        stubs = {n: pb_grpc.PredictionServiceStub(c) for n, c in channels.items()}
        from services.serving.client import ServingClient

        client = await ServingClient.connect(settings)
        try:
            await _measure(args, requests, servable, stubs, client)
        finally:
            await client.close()
            for channel in channels.values():
                await channel.close()


def _paths(
    requests: Requests, servable: Servable, stubs: dict[str, Any], client: Any
) -> dict[str, Callable[[int], Call]]:
    """path -> (concurrency) -> per-request call."""
    counter = [0]
    nobatch = {"router-nobatch": NOBATCH}

    def inproc(concurrency: int) -> Call:
        async def call(i: int) -> int:  # one call scores `concurrency` requests' rows
            start = requests.row(i, counter)
            cols = {
                n: [
                    requests.columns[(start + k) % len(requests.keys)][n][0]
                    for k in range(concurrency)
                ]
                for n in requests.names
            }
            servable.score([cols])
            await asyncio.sleep(0)
            return concurrency

        return call

    def grpc_path(name: str, by_key: bool) -> Callable[[int], Call]:
        stub = stubs[name]
        model = nobatch.get(name, MODEL)

        def make(_: int) -> Call:
            async def call(i: int) -> int:
                source = requests.by_key if by_key else requests.full
                request = pb.PredictRequest()
                request.CopyFrom(source[requests.row(i, counter)])
                request.model = model
                await stub.Predict(request, timeout=30)
                return 1

            return call

        return make

    def serve_path(_: int) -> Call:
        async def call(i: int) -> int:
            await client.predict(MODEL, "champion", requests.columns[requests.row(i, counter)])
            return 1

        return call

    return {
        "inproc": inproc,
        "peer": grpc_path("peer", by_key=False),
        "router": grpc_path("router", by_key=True),
        "serve": serve_path,
        "peer-nobatch": grpc_path("peer-nobatch", by_key=False),
        "router-nobatch": grpc_path("router-nobatch", by_key=True),
    }


def _batch_paths(
    requests: Requests, servable: Servable, stubs: dict[str, Any], client: Any
) -> dict[str, Call]:
    rows = requests.batch.rows

    async def inproc(_: int) -> int:
        servable.score([requests.batch_columns])
        await asyncio.sleep(0)
        return rows

    def via(name: str) -> Call:
        async def call(_: int) -> int:
            response = await stubs[name].PredictBatch(requests.batch, timeout=30)
            return len(response.scores)

        return call

    async def serve(_: int) -> int:
        return len((await client.predict(MODEL, "champion", requests.batch_columns)).scores)

    return {"inproc": inproc, "peer": via("peer"), "router": via("router"), "serve": serve}


async def _measure(
    args: argparse.Namespace,
    requests: Requests,
    servable: Servable,
    stubs: dict[str, Any],
    client: Any,
) -> None:
    paths = _paths(requests, servable, stubs, client)
    batch_paths = _batch_paths(requests, servable, stubs, client)
    main_paths = ["inproc", "peer", "router", "serve"]
    results: dict[tuple[str, str], list[Cell]] = {}
    for rep in range(args.repeats):
        for c in args.concurrency:
            for name in main_paths:
                cell = await closed_loop(paths[name](c), c, args.seconds)
                results.setdefault((name, f"c={c}"), []).append(cell)
        for name in main_paths:
            cell = await closed_loop(batch_paths[name], args.batch_clients, args.seconds)
            results.setdefault((name, f"batch {args.batch_rows}"), []).append(cell)
        for name in ("peer", "peer-nobatch", "router", "router-nobatch"):
            cell = await closed_loop(paths[name](64), 64, args.seconds)
            results.setdefault((name, "c=64 on/off"), []).append(cell)
        _console.print(f"repeat {rep + 1}/{args.repeats} done")
    _report(args, results)


def _spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def _report(args: argparse.Namespace, results: dict[tuple[str, str], list[Cell]]) -> None:
    table = Table(title="bench.serving: medians over repeats [min-max]")
    for column in (
        "path",
        "load",
        "req/s",
        "rows/s",
        "p50 ms",
        "p99 ms",
        "÷ peer (rows/s)",
        "p99 ÷ peer",
    ):
        table.add_column(column, justify="right" if column not in ("path", "load") else "left")
    summary: dict[str, Any] = {}
    for (name, load), cells in results.items():
        peer_cells = results.get(("peer", load), [])
        ratio = [c.rows_per_s / p.rows_per_s for c, p in zip(cells, peer_cells, strict=False)]
        p99_ratio = [c.pct(99) / p.pct(99) for c, p in zip(cells, peer_cells, strict=False)]
        table.add_row(
            name,
            load,
            _spread([c.rps for c in cells]),
            _spread([c.rows_per_s for c in cells]),
            _spread([c.pct(50) for c in cells], "{:.1f}"),
            _spread([c.pct(99) for c in cells], "{:.1f}"),
            _spread(ratio, "{:.2f}") if name != "peer" else "1",
            _spread(p99_ratio, "{:.2f}") if name != "peer" else "1",
        )
        summary[f"{name} {load}"] = {
            "rps": [round(c.rps, 1) for c in cells],
            "p50_ms": [round(c.pct(50), 2) for c in cells],
            "p99_ms": [round(c.pct(99), 2) for c in cells],
            "ratio_vs_peer": [round(r, 3) for r in ratio],
        }
    _console.print(table)
    for on, off in (("peer", "peer-nobatch"), ("router", "router-nobatch")):
        pairs = zip(results[(on, "c=64 on/off")], results[(off, "c=64 on/off")], strict=True)
        ratios = [a.rps / b.rps for a, b in pairs]
        _console.print(f"batching on ÷ off at c=64, {on}: {_spread(ratios, '{:.2f}')}")
    batch = args.batch_rows
    ratios = [
        r.rows_per_s / a.rows_per_s
        for r, a in zip(
            results[("router", f"batch {batch}")],
            results[("inproc", f"batch {batch}")],
            strict=True,
        )
    ]
    _console.print(
        f"PredictBatch {batch} rows, router ÷ in-process rows/s: {_spread(ratios, '{:.2f}')}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64]
    )
    parser.add_argument("--batch-rows", type=int, default=512)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--json", help="also write the raw figures here")
    args = parser.parse_args()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
