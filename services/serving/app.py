"""Wiring of the serving service: Ray + Serve, the registry, and `models.events`.

At start it joins (or starts, on 127.0.0.1) Ray, starts Serve with its HTTP/gRPC proxies
disabled (the router is the front door; handles talk to replicas directly), and deploys
one application per served alias of each model. Then it consumes `models.events`: any
record about a served model reconciles that model with the registry (a new alias is
deployed, a moved alias hot-swapped through `reconfigure`, a removed alias deleted), and
a periodic full reconcile repairs anything an event did not say. Offsets are committed
after the reconcile they triggered, so a crash mid-change replays the event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from services.common.health import health_app
from services.common.http_server import embedded_server
from services.common.kafka import check_kafka, create_consumer
from services.common.logging import configure_logging, get_logger
from services.common.registry import ModelRegistry
from services.common.settings import Settings, load_settings
from services.serving.config import ServingSettings
from services.serving.state import ServingState, state_path, write_state

__all__ = ["ServingService", "main", "run"]

_log = get_logger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ServingService:
    """Owns the deployer and the state file; every change of deployments goes through it."""

    def __init__(
        self, settings: Settings, serving: ServingSettings, deployer: Any, address: str
    ) -> None:
        self.settings, self.serving, self.deployer = settings, serving, deployer
        self.address = address
        self.started_ms = _now_ms()
        self.ready = False
        self.consuming = False
        self._lock = asyncio.Lock()

    def readiness(self) -> tuple[bool, str]:
        if not self.ready:
            return False, "deploying the registry's variants"
        if not self.consuming:
            return False, "joining models.events"
        failed = self.deployer.failures
        return True, f"{len(self.deployer.deployed)} variant(s) served" + (
            f"; failing: {sorted(failed)}" if failed else ""
        )

    def variants(self) -> dict[str, Any]:
        return {
            "deployed": {a: v.model_dump() for a, v in self.deployer.deployed.items()},
            "failures": dict(self.deployer.failures),
        }

    async def reconcile(self, models: Sequence[str] | None = None) -> None:
        async with self._lock:  # one reconcile at a time: Serve changes are applied in order
            await asyncio.to_thread(self.deployer.reconcile, models)
            self.write_state()

    def write_state(self) -> None:
        write_state(
            self.settings.home,
            ServingState(
                ray_address=self.address,
                pid=os.getpid(),
                started_at_ms=self.started_ms,
                updated_at_ms=_now_ms(),
                ready=self.ready,
                apps=self.deployer.deployed,
            ),
        )


def start_serve() -> None:
    """Serve with no proxies: nothing listens for HTTP or gRPC but the replicas' own
    inter-deployment servers (rebound to loopback by `loopback.py`)."""
    from ray import serve

    serve.start(
        proxy_location="Disabled",
        http_options={"host": "127.0.0.1", "port": 0},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )


async def run(settings: Settings, serving: ServingSettings) -> None:
    """Run until SIGTERM/SIGINT; fails fast when Kafka or the registry is unreachable."""
    from services.common.ray_runtime import ensure_ray, ray_address, shutdown_ray
    from services.serving.deployer import ServeDeployer

    await check_kafka(settings)
    registry = await asyncio.to_thread(ModelRegistry.from_settings, settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(ensure_ray, serving.ray_address, serving.ray_num_cpus)
    local = not serving.ray_address
    try:
        await asyncio.to_thread(start_serve)
        deployer = ServeDeployer(settings, serving, registry, loop)
        service = ServingService(settings, serving, deployer, ray_address())
        server = embedded_server(
            health_app("serving", service.readiness, "/v1/variants", service.variants),
            serving.health_host,
            serving.health_port,
        )
        http = asyncio.create_task(server.serve())
        try:
            await asyncio.to_thread(deployer.adopt_running)
            await service.reconcile()
            service.ready = True
            service.write_state()
            _log.info("serving.started", ray=service.address, deployed=sorted(deployer.deployed))
            await _consume(service, stop)
        finally:
            server.should_exit = True
            await asyncio.gather(http, return_exceptions=True)
    finally:
        if local:  # a local Ray is ours: stop Serve and Ray, and say nothing runs any more
            state_path(settings.home).unlink(missing_ok=True)
            await asyncio.to_thread(_shutdown_serve)
            await asyncio.to_thread(shutdown_ray)
    _log.info("serving.stopped")


def _shutdown_serve() -> None:
    from ray import serve

    try:
        serve.shutdown()
    except Exception as exc:  # stopping anyway; Ray's shutdown takes the rest
        _log.warning("serve.shutdown_failed", error=str(exc))


async def _consume(service: ServingService, stop: asyncio.Event) -> None:
    settings, serving = service.settings, service.serving
    consumer = create_consumer(
        settings,
        settings.topics.models_events,
        group_id=serving.group_id,
        auto_offset_reset="latest",
    )
    next_full = time.monotonic() + serving.reconcile_interval_s
    async with consumer:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=serving.poll_timeout_ms)
            service.consuming = True
            for failure in batch.failures:
                _log.warning(
                    "models_event.undecodable",
                    partition=failure.partition,
                    offset=failure.offset,
                    error=failure.error,
                )
            models = sorted({env.message.model for env in batch.envelopes if env.message.model})
            if models:
                await service.reconcile(models)
            await consumer.commit(batch)
            if time.monotonic() >= next_full:
                next_full = time.monotonic() + serving.reconcile_interval_s
                await service.reconcile()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.serving", description=__doc__)
    parser.parse_args(argv)
    name = os.environ.get("DRIFTLOOP_SERVICE_NAME", "driftloop-serving")
    settings = load_settings(service_name=name)
    configure_logging(settings)
    asyncio.run(run(settings, ServingSettings()))
    return 0
