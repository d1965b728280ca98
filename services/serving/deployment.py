"""The Ray Serve deployment that serves one variant of one model, and how it is built.

Each live variant (`champion`, `challenger`, `canary`, `shadow`: a registry alias) is its
own Serve application `<model>.<variant>` with one deployment, `variant`, so variants are
deployed, scaled and removed independently. The model version travels in the deployment's
`user_config`; Serve hands a changed `user_config` to the live replicas' `reconfigure`
without restarting them, because the deployment's code version is pinned (see
`build_variant_app`). `reconfigure` loads and warms the new version in a worker thread
while the old one keeps answering, then swaps it in one assignment: zero downtime.

Each request is a mapping of feature columns; `@serve.batch` merges concurrent requests
(the router already merges its own) into one predict call. The reply is a `Scored` or a
`Rejected` value, never an exception, so one bad request cannot fail the batch it shares.

Tracing: a request may carry its caller's trace context (`trace_carrier`, see client.py).
Each replica process sets up telemetry once (as `driftloop-serving`, with the serving
process's exporter setting and OTEL_* variables, see `build_variant_app`); a batch with
traced requests gets one `serving.batch` span, a child of the first traced request's span
and linked to every traced request's. A batch of untraced requests makes no span.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from ray import serve
from ray.serve.config import AutoscalingConfig

from services.common.artifacts import ArtifactStore
from services.common.ray_runtime import REPO_ROOT
from services.common.registry import ModelRegistry
from services.common.settings import Settings
from services.common.telemetry import (
    TraceCarrier,
    carried_span_context,
    setup_telemetry,
    start_batch_span,
)
from services.serving import SERVING_RAY_ENV
from services.serving.config import BatchingSpec, ServingSettings
from services.serving.loopback import bind_replicas_to_loopback
from services.serving.servable import Columns, Reply, Servable

__all__ = [
    "DEPLOYMENT_NAME",
    "REPLICA_ENV",
    "REPLICA_SERVICE_NAME",
    "VariantServer",
    "app_name",
    "build_variant_app",
    "code_version",
    "parse_app_name",
]

DEPLOYMENT_NAME = "variant"
REPLICA_ENV = {k: v for k, v in SERVING_RAY_ENV.items() if k.startswith("RAY_SERVE_")}
REPLICA_SERVICE_NAME = "driftloop-serving"
_CODE_FILES = (
    "services/serving/deployment.py",
    "services/serving/servable.py",
    "services/common/telemetry.py",
    "services/common/encoding.py",
    "services/common/predictors.py",
    "services/common/registry/formats.py",
)


class _Call(NamedTuple):
    """One call as `@serve.batch` queues it (one argument: Serve batches each positional
    argument into a list of its own)."""

    columns: Columns
    trace_carrier: TraceCarrier | None


def app_name(model: str, variant: str) -> str:
    return f"{model}.{variant}"


def parse_app_name(name: str) -> tuple[str, str] | None:
    """(model, variant) of a serving application name, None for other applications."""
    model, dot, variant = name.rpartition(".")
    return (model, variant) if dot and model and variant else None


def code_version() -> str:
    """A hash of the code a replica runs: pinned as the deployment's version, so a new
    `user_config` reconfigures live replicas while new code still replaces them."""
    digest = hashlib.sha256()
    for rel in _CODE_FILES:
        digest.update(rel.encode() + b"\0" + (REPO_ROOT / rel).read_bytes())
    return digest.hexdigest()[:16]


class VariantServer:
    """One replica of one variant: a `Servable` behind `@serve.batch`."""

    def __init__(self, settings: Settings, model: str, variant: str) -> None:
        bind_replicas_to_loopback()  # before Serve starts this replica's gRPC server
        self._registry = ModelRegistry(ArtifactStore.from_settings(settings))
        self._model, self._variant = model, variant
        self._servable: Servable | None = None
        self._warm_up: dict[str, Any] = {}
        self._rejected: dict[str, Any] = {}  # the last version that failed to load, and why
        self._swaps = 0
        self._batch_sizes: Counter[int] = Counter()  # requests per batch -> batches
        self._rows = 0
        self._started = time.time()
        # Settings built without a service name (a deployer given generic settings) still
        # report the replicas' spans as the serving service's.
        generic = settings.service_name == Settings.model_fields["service_name"].default
        name = REPLICA_SERVICE_NAME if generic else settings.service_name
        self._telemetry = setup_telemetry(settings.model_copy(update={"service_name": name}))
        # Exporter `none` samples nothing: skip even reading the carriers.
        self._tracer = (
            self._telemetry.tracer("driftloop.serving")
            if self._telemetry.exporter != "none"
            else None
        )

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply `user_config`: batching knobs at once, a new version after its warm-up."""
        batching = BatchingSpec.model_validate(config.get("batching", {}))
        self._score_batch.set_max_batch_size(batching.max_batch_size)  # type: ignore[attr-defined]
        self._score_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)  # type: ignore[attr-defined]
        version = int(config["version"])
        if self._servable is not None and self._servable.version == version:
            return
        # Off the replica's event loop: the current version keeps answering meanwhile.
        try:
            servable = await asyncio.to_thread(Servable.load, self._registry, self._model, version)
            warm = await asyncio.to_thread(
                servable.warm_up, int(config.get("warmup_rounds", 3)), batching.max_batch_size
            )
        except Exception as exc:
            if self._servable is None:
                raise  # nothing to serve: the replica fails to start, Serve reports it
            # A version that cannot be loaded (tampered artifact, bad params) must not take
            # the variant down: keep answering with the current one and say so.
            self._rejected = {"version": version, "error": f"{type(exc).__name__}: {exc}"}
            return
        self._warm_up = {**warm, "version": version}
        self._rejected = {}
        self._servable = servable  # the swap: one assignment, between two batches
        self._swaps += 1

    async def predict(self, columns: Columns, trace_carrier: TraceCarrier | None = None) -> Reply:
        return await self._score_batch(_Call(columns, trace_carrier))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _score_batch(self, calls: list[_Call]) -> list[Reply]:
        servable = self._servable
        if servable is None:  # cannot happen: Serve routes only to ready replicas
            raise RuntimeError("no model loaded")
        with self._batch_span(calls, servable.version) as span:
            replies = servable.score([call.columns for call in calls])
            rows = sum(len(r.scores) for r in replies if hasattr(r, "scores"))
            if span is not None:
                span.set_attribute("driftloop.rows", rows)
        self._batch_sizes[len(calls)] += 1
        self._rows += rows
        return replies

    @contextmanager
    def _batch_span(self, calls: Sequence[_Call], version: int) -> Iterator[trace.Span | None]:
        traced = []
        if self._tracer is not None:
            carried = (carried_span_context(c.trace_carrier) for c in calls if c.trace_carrier)
            traced = [span_context for span_context in carried if span_context is not None]
        if self._tracer is None or not traced:
            yield None
            return
        attributes: dict[str, str | int] = {
            "driftloop.model": self._model,
            "driftloop.variant": self._variant,
            "driftloop.version": version,
            "driftloop.requests": len(calls),
        }
        with start_batch_span(
            self._tracer, "serving.batch", traced, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    def stats(self) -> dict[str, Any]:
        """What this replica serves and how it has batched (tests, debugging)."""
        context = serve.get_replica_context()
        return {
            "model": self._model,
            "variant": self._variant,
            "version": self._servable.version if self._servable else None,
            "replica": context.replica_id.unique_id,
            "warm_up": dict(self._warm_up),
            "swaps": self._swaps,
            "rejected": dict(self._rejected),
            "batch_sizes": dict(self._batch_sizes),
            "rows": self._rows,
            "uptime_s": round(time.time() - self._started, 3),
        }

    def check_health(self) -> None:
        if self._servable is None:
            raise RuntimeError(f"{self._model}.{self._variant}: no model loaded")

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown: spans still queued for export leave now.
        telemetry = getattr(self, "_telemetry", None)
        if telemetry is not None:
            telemetry.tracer_provider.force_flush(timeout_millis=2_000)


def build_variant_app(
    settings: Settings,
    serving: ServingSettings,
    model: str,
    variant: str,
    version: int,
    *,
    pinned_code_version: str | None = None,
) -> Any:
    """The Serve application for `variant` of `model` at `version`."""
    user_config = {
        "version": version,
        "batching": serving.batching.model_dump(),
        "warmup_rounds": serving.warmup_rounds,
    }
    # Replicas export spans as this process is configured to (the exporter setting travels
    # in `settings`; the OTLP endpoint, headers and batching in OTEL_* variables).
    otel_env = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    env = {**otel_env, **REPLICA_ENV, "PYTHONPATH": str(Path(REPO_ROOT))}
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": serving.max_ongoing_requests,
        "user_config": user_config,
        "ray_actor_options": {
            "num_cpus": serving.replica_num_cpus,
            "runtime_env": {"env_vars": env},
        },
        "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
        "health_check_period_s": 2.0,
        "graceful_shutdown_timeout_s": 5.0,
        # Serve gives an imperatively deployed class a random version on every run,
        # which would replace the replicas instead of reconfiguring them.
        "version": pinned_code_version or code_version(),
        "_internal": True,
    }
    scaling = serving.autoscaling.get(variant)
    if scaling is not None:
        options["autoscaling_config"] = AutoscalingConfig(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            target_ongoing_requests=scaling.target_ongoing_requests,
            upscale_delay_s=scaling.upscale_delay_s,
            downscale_delay_s=scaling.downscale_delay_s,
            look_back_period_s=scaling.look_back_period_s,
        )
    else:
        options["num_replicas"] = serving.replicas_for(variant)
    deployment = serve.deployment(VariantServer).options(**options)  # type: ignore[attr-defined]
    return deployment.bind(settings, model, variant)
