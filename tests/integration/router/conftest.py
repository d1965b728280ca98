"""The router against the real stack: one serving service (real Ray + Serve, started as
`python -m services.serving`) for the package, small credit models registered as the
trainer registers them, online features in Redis, and router replicas started in this
process (each with its own gRPC port, Redis subscription, Kafka producer and spool).

Serving's replicas export their spans over OTLP to a receiver the package runs (`otlp`).
That costs the other tests nothing: a replica makes a span only for a call that carries
a sampled trace context, and the in-process routers have no SDK installed."""

from __future__ import annotations

import os

# Serving's Ray cluster is joined from this process: token auth on both sides (the
# serving package sets the same default on import; set here before anything imports ray).
os.environ.setdefault("RAY_AUTH_MODE", "token")

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest

from driftloop.v1 import prediction_pb2_grpc as pb_grpc
from services.common.artifacts import ArtifactStore
from services.common.encoding import FeatureEncoder
from services.common.experiments import ExperimentStore
from services.common.feature_store import OnlineFeatureStore
from services.common.redis_client import sync_redis
from services.common.registry import ModelRegistry, RegistrationInfo
from services.common.settings import Settings
from services.router.app import RouterApp
from services.router.config import RouterSettings
from services.router.serving_port import ServingPort
from services.serving.state import read_state
from services.trainer.models import fit_model
from services.trainer.profile import build_reference_profile
from tests.integration.otlp_receiver import OtlpReceiver, run_otlp_receiver
from tests.integration.trainer.synthetic import credit_schema, credit_table

MODEL = "rt-credit"
DATASET = "credit"
REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Trained:
    encoder: FeatureEncoder
    fitted: Any

    def score(self, columns: dict[str, list[Any]]) -> np.ndarray:
        return np.asarray(self.fitted.predict(self.encoder.transform_columns(columns)))


def _train(seed: int) -> tuple[Trained, pa.Table]:
    schema = credit_schema()
    table = credit_table(1_500, seed=seed)
    encoder = FeatureEncoder.fit(schema, table)
    X = encoder.transform(table)
    y = np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.float64)
    fitted = fit_model(
        "xgboost",
        X[:1200],
        y[:1200],
        X[1200:],
        y[1200:],
        {"num_boost_round": 20, "max_depth": 3},
        seed=seed,
        task="binary",
    )
    return Trained(encoder, fitted), table


def _register(registry: ModelRegistry, trained: Trained, table: pa.Table) -> int:
    scores = trained.fitted.predict(trained.encoder.transform(table))
    labels = np.asarray(table.column("label").to_numpy(zero_copy_only=False))
    info = RegistrationInfo(
        features=trained.encoder.feature_specs(),
        reference_profile=build_reference_profile(trained.encoder, table, scores, labels, "binary"),
        code_version="test",
        params={
            **trained.fitted.params,
            "encoder": trained.encoder.to_params(),
            "dataset": DATASET,
        },
        seed=7,
    )
    manifest = registry.register(
        MODEL, trained.fitted.artifact, trained.fitted.artifact_format, info
    )
    return manifest.version


@dataclass
class Served:
    settings: Settings
    process: subprocess.Popen[bytes]
    log_path: Path
    models: dict[int, Trained]  # version -> the in-process reference
    online: pa.Table  # the rows written to the online store

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="package")
def otlp() -> Iterator[OtlpReceiver]:
    with run_otlp_receiver() as receiver:
        yield receiver


def otlp_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Environment of a process that exports its spans to `receiver`, promptly."""
    return {
        "DRIFTLOOP_TELEMETRY_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms; the SDK's default is 5 s
    }


@pytest.fixture(scope="package")
def served(stack: Settings, otlp: OtlpReceiver) -> Iterator[Served]:
    registry = ModelRegistry.from_settings(stack)
    v1_model, v1_table = _train(0)
    v2_model, _ = _train(5)
    v1 = _register(registry, v1_model, v1_table)
    v2 = _register(registry, v2_model, v1_table)
    registry.set_alias(MODEL, "champion", v1, actor="test", reason="router tests")
    registry.set_alias(MODEL, "canary", v2, actor="test", reason="router tests")
    registry.set_alias(MODEL, "shadow", v2, actor="test", reason="router tests")
    online = credit_table(
        300, seed=11, start_ms=int(time.time() * 1000) - 3_600_000, span_ms=60_000, id_prefix="rt"
    )
    features = OnlineFeatureStore(sync_redis(stack), schemas={DATASET: credit_schema()})
    features.write_latest(DATASET, online)
    log_path = stack.home / f"router-serving-{time.time_ns()}.log"
    env = {
        **os.environ,
        "DRIFTLOOP_HOME": str(stack.home),
        "DRIFTLOOP_SERVING_MODELS": json.dumps([MODEL]),
        "DRIFTLOOP_SERVING_HEALTH_PORT": "0",
        "DRIFTLOOP_SERVING_GROUP_ID": f"router-test-{time.time_ns()}",
        "DRIFTLOOP_SERVING_RAY_NUM_CPUS": "2",
        "DRIFTLOOP_RAY_TMPDIR": os.environ.get("DRIFTLOOP_RAY_TMPDIR", "/tmp/dl-ray") + "-rs",
        **otlp_env(otlp),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.serving"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    result = Served(stack, process, log_path, {v1: v1_model, v2: v2_model}, online)
    try:
        wanted = {f"{MODEL}.champion", f"{MODEL}.canary", f"{MODEL}.shadow"}
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serving exited {process.returncode}:\n{result.log()}")
            state = read_state(stack.home)
            if state and state.pid == process.pid and state.ready and wanted <= state.apps.keys():
                break
            assert time.monotonic() < deadline, f"serving did not deploy:\n{result.log()}"
            time.sleep(0.3)
        yield result
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="package")
async def serving(served: Served) -> AsyncIterator[ServingPort]:
    from services.common.ray_runtime import shutdown_ray
    from services.router.serving_adapter import ServingAdapter

    adapter = await ServingAdapter.connect(served.settings)
    try:
        yield adapter
    finally:
        await adapter.close()
        shutdown_ray()


@pytest.fixture(scope="package")
def experiments(stack: Settings) -> ExperimentStore:
    return ExperimentStore(ArtifactStore.from_settings(stack), sync_redis(stack))


@dataclass
class RunningRouter:
    app: RouterApp
    channel: grpc.aio.Channel
    stub: pb_grpc.PredictionServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"


StartRouter = Callable[..., Awaitable[RunningRouter]]


@asynccontextmanager
async def running_router(
    stack: Settings, serving: ServingPort, spool_dir: Path, **overrides: Any
) -> AsyncIterator[RunningRouter]:
    settings = RouterSettings(
        home=stack.home, router_port=0, router_spool_dir=spool_dir, **overrides
    )
    app = RouterApp(settings, serving)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield RunningRouter(app, channel, pb_grpc.PredictionServiceStub(channel))
    finally:
        await channel.close()
        await app.stop()


@pytest.fixture(scope="package")
async def router(
    stack: Settings, serving: ServingPort, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningRouter]:
    async with running_router(
        stack, serving, tmp_path_factory.mktemp("spool"), router_replica="main"
    ) as r:
        yield r
