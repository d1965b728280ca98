"""Wiring: `python -m services.router` builds the ports from settings and serves
PredictionService, the Open Inference Protocol, grpc.health.v1 and reflection on one
127.0.0.1 port until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from driftloop.v1 import open_inference_pb2 as oip
from driftloop.v1 import open_inference_pb2_grpc as oip_grpc
from driftloop.v1 import prediction_pb2 as pb
from driftloop.v1 import prediction_pb2_grpc as pb_grpc
from services.common.artifacts import ArtifactStore
from services.common.experiments import ExperimentStore
from services.common.feature_store import OnlineFeatureReader
from services.common.kafka import create_producer
from services.common.logging import configure_logging, get_logger
from services.common.redis_client import async_redis, sync_redis
from services.common.registry import ModelRegistry
from services.common.telemetry import Telemetry, setup_telemetry
from services.router.auth import BearerTokenInterceptor
from services.router.coalescing import Coalescer, VariantResult
from services.router.config import RouterSettings
from services.router.contracts import ContractCache, online_lookup
from services.router.experiments_view import ExperimentsView
from services.router.features import FeatureFrame
from services.router.grpc_api import PredictionServicer
from services.router.log_sink import KafkaSink
from services.router.metrics import RouterMetrics
from services.router.open_inference import InferenceServicer
from services.router.prediction_log import PredictionLogger
from services.router.reflection import enable_reflection
from services.router.routing import Router, RoutingConfig
from services.router.serving_port import ServingPort
from services.router.spool import Spool

__all__ = ["RouterApp", "main"]

_log = get_logger(__name__)
SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


class RouterApp:
    """One router replica: `await start()` (returns the bound port), `await stop()`."""

    def __init__(
        self,
        settings: RouterSettings,
        serving: ServingPort,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.serving = serving
        self.telemetry = telemetry
        self.metrics = RouterMetrics.create(
            telemetry.meter("driftloop.router") if telemetry else None
        )
        self._redis = sync_redis(settings, connect_timeout_s=1, timeout_s=2)
        self._pubsub_redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        store = ArtifactStore.from_settings(settings)
        self.experiments_store = ExperimentStore(store, self._redis)
        self.experiments = ExperimentsView(self.experiments_store, self._pubsub_redis)
        self.contracts = ContractCache(ModelRegistry(store, self._redis))
        self._lookup_redis = async_redis(settings, connect_timeout_s=1, timeout_s=2)
        features = OnlineFeatureReader(self._lookup_redis)
        kafka_settings = settings.model_copy(update={"kafka_request_timeout_ms": 5_000})
        producer = create_producer(kafka_settings, client_id=f"router-{settings.router_replica}")
        self.sink = KafkaSink(producer.raw, settings.topics.predictions_log)
        self.logger = PredictionLogger(
            self.sink,
            Spool(settings.spool_path, settings.router_spool_max_bytes),
            queue_size=settings.router_log_queue,
            on_drop=lambda why, n: self.metrics.log_dropped.add(n, {"reason": why}),
        )
        self.sink.on_late_failure = self.logger.spool_late
        self.coalescer = Coalescer(
            self._call_serving,
            max_in_flight=settings.router_calls_in_flight,
            max_rows=settings.router_coalesce_rows,
            on_batch=lambda m, v, rows: self.metrics.batch_rows.record(
                rows, {"model": m, "variant": v}
            ),
        )
        self.router = Router(
            self.coalescer,
            self.contracts,
            self.experiments.for_model,
            online_lookup(features),
            self.logger,
            self.metrics,
            RoutingConfig(
                variant_timeout_s=settings.router_variant_timeout_s,
                shadow_timeout_s=settings.router_shadow_timeout_s,
                max_shadow_tasks=settings.router_max_shadow_tasks,
            ),
            topic=settings.topics.predictions_log,
        )
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def _call_serving(self, model: str, variant: str, frame: FeatureFrame) -> VariantResult:
        out = await self.serving.predict(model, variant, frame.columns())
        return VariantResult(out.scores, out.version, out.variant)

    def _ready(self, model: str) -> bool:
        try:
            return bool(self.serving.variants(model))
        except Exception:
            return False

    async def start(self) -> int:
        s = self.settings
        await self.experiments.start()
        self.logger.start()
        # Tracing is the servicers' own (grpc_api.request_span): one span per request,
        # continued from the caller's metadata, with or without an SDK installed.
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if s.router_auth_token:
            interceptors.append(BearerTokenInterceptor(s.router_auth_token))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        pb_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.router, s.router_max_batch_rows), server
        )
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.router, s.router_max_batch_rows, self._ready), server
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.port = server.add_insecure_port(f"{s.router_host}:{s.router_port}")
        if self.port == 0:
            raise OSError(f"cannot bind {s.router_host}:{s.router_port}")
        await server.start()
        self.server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        _log.info(
            "router.started",
            address=f"{s.router_host}:{self.port}",
            replica=s.router_replica,
            auth=bool(s.router_auth_token),
        )
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        if self.server is not None:
            await self._health.enter_graceful_shutdown()
            await self.server.stop(grace_s)
        await self.router.close()
        await self.coalescer.close()
        await self.logger.close(timeout_s=grace_s)
        await self.sink.close()
        await self.experiments.close()
        await self._pubsub_redis.aclose()
        await self._lookup_redis.aclose()
        self._redis.close()
        _log.info("router.stopped", **vars(self.logger.stats))


async def run(settings: RouterSettings) -> None:
    from services.router.serving_adapter import ServingAdapter

    telemetry = setup_telemetry(settings)
    serving = await ServingAdapter.connect(settings)
    app = RouterApp(settings, serving, telemetry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()
        await serving.close()
        telemetry.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("DRIFTLOOP_SERVICE_NAME", "driftloop-router")
    settings = RouterSettings()
    configure_logging(settings)
    asyncio.run(run(settings))
    return 0
