"""Wiring of the ingest service: build the clients from settings, run the consume/seal
loop and, with `--http`, the HTTP API in the same event loop.

SIGTERM / SIGINT stop the loop after the batch in hand: nothing more is sealed or
committed, so whatever is not yet durable is simply consumed again by the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import load_schemas
from services.common.feature_store import OnlineFeatureStore
from services.common.http_server import embedded_server
from services.common.kafka import check_kafka, create_consumer, create_producer
from services.common.kafka_stuck import RedisStuckLedger, StuckPartition
from services.common.logging import configure_logging, get_logger
from services.common.redis_client import check_redis, sync_redis
from services.common.settings import Settings, load_settings
from services.common.telemetry import setup_telemetry
from services.ingest.config import IngestSettings
from services.ingest.decode.wire import warm_up
from services.ingest.dedup import EventDedup
from services.ingest.pipeline import IngestPipeline, wall_clock_ms
from services.ingest.seal.version import VersionWriter

__all__ = ["main", "run"]

_log = get_logger(__name__)


def _http_server(
    settings: Settings, ingest: IngestSettings, stuck: Callable[[], list[StuckPartition]]
) -> uvicorn.Server | None:
    try:
        from services.ingest.http.api import create_http_app
    except ImportError as exc:  # the API module is optional for the consumer loop
        _log.warning("http.unavailable", error=str(exc))
        return None
    app = create_http_app(settings, ingest, stuck)
    return embedded_server(app, ingest.http_host, ingest.http_port, lifespan="on")


async def run(settings: Settings, ingest: IngestSettings, *, http: bool = False) -> None:
    """Run until SIGTERM/SIGINT; fails fast if Kafka, Redis or a schema is not right."""
    schemas = load_schemas(ingest.schemas_dir)
    await check_kafka(settings)
    await asyncio.to_thread(check_redis, settings)
    storage = VersionWriter(ArtifactStore.from_settings(settings))
    telemetry = setup_telemetry(settings)

    async def sealed_ids(dataset: str, since_ms: int) -> list[str]:
        return await asyncio.to_thread(storage.event_ids, dataset, since_ms)

    dedup_redis = sync_redis(settings)  # claims are sent from a worker thread (dedup.py)
    dedup = EventDedup(dedup_redis, sealed_ids, ingest.dedup_ttl_s, now_ms=wall_clock_ms)
    # Short timeouts: the online feature store is a fast path that must not stall a batch.
    features_redis = sync_redis(settings, connect_timeout_s=1, timeout_s=2)
    features = OnlineFeatureStore(features_redis, schemas=schemas)
    options: dict[str, Any] = {"max_poll_interval_ms": 300_000}
    if ingest.group_instance_id:
        options["group_instance_id"] = ingest.group_instance_id
    ledger = RedisStuckLedger(dedup_redis)  # unreadable partitions, for operators
    consumer = create_consumer(settings, group_id=ingest.group_id, stuck_ledger=ledger, **options)
    producer = create_producer(settings, linger_ms=5)
    pipeline = IngestPipeline(
        consumer=consumer,
        producer=producer,
        storage=storage,
        dedup=dedup,
        schemas=schemas,
        ingest=ingest,
        topics=settings.topics,
        service_name=settings.service_name,
        meter=telemetry.meter("driftloop.ingest"),
        features=features,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer.raw.subscribe([settings.topics.data_events], listener=pipeline.rebalance_listener())
    server = _http_server(settings, ingest, lambda: consumer.fetcher.stuck) if http else None
    warm_up()  # the decoder's compiled kernels, before joining the group (blocks the loop)
    async with producer, consumer:
        await pipeline.recover()
        # Start-up objects (imports, schemas, the recovered state) never die: out of the
        # collector's view, full collections only walk what the stream allocates.
        gc.collect()
        gc.freeze()
        _log.info(
            "ingest.started",
            topic=settings.topics.data_events,
            group_id=ingest.group_id,
            datasets=sorted(schemas),
            http=f"{ingest.http_host}:{ingest.http_port}" if server else None,
        )
        serving = asyncio.create_task(server.serve()) if server else None
        try:
            await pipeline.run(stop)
        finally:
            if server is not None and serving is not None:
                server.should_exit = True
                await serving
            dedup_redis.close()
            features_redis.close()
    _log.info("ingest.stopped", **vars(pipeline.stats))
    telemetry.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.ingest", description=__doc__)
    parser.add_argument(
        "--http", action="store_true", help="also serve the HTTP API (DRIFTLOOP_INGEST_HTTP_*)"
    )
    args = parser.parse_args(argv)
    name = os.environ.get("DRIFTLOOP_SERVICE_NAME", "driftloop-ingest")
    settings = load_settings(service_name=name)
    configure_logging(settings)
    # A known failure (no broker, wrong password, untrusted CA, no Redis, a bad setting)
    # propagates to services.common.failures.run_main in __main__: one line naming the
    # cause, exit 1 for an unavailable dependency and 2 for bad input.
    asyncio.run(run(settings, IngestSettings(), http=args.http))
    return 0
