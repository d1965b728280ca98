"""Wiring of the monitor: the store's single writer, its analysis timer and query API.

- Sinks (sinks/writer.py): one aiokafka consumer over the seven topics it records; a
  buffer written by size or age from the writer thread, offsets committed after.
- Analysis (live/): every `tick_s`, in its own store thread, drift per closed window,
  performance, experiments; events published, then the rows that record them written.
- HTTP (http_api.py) on 127.0.0.1:`http_port`, reading through a third store thread.

SIGTERM / SIGINT: the buffer in hand is written and committed, then everything stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import IllegalStateError

from services.common.artifacts import ArtifactStore
from services.common.clickhouse import apply_migrations
from services.common.http_server import embedded_server
from services.common.kafka import (
    ProtobufConsumer,
    ProtobufProducer,
    check_kafka,
    create_consumer,
    create_producer,
)
from services.common.logging import configure_logging, get_logger
from services.common.registry import ModelRegistry
from services.common.settings import Settings, load_settings
from services.monitor.config import MonitorSettings
from services.monitor.http_api import create_http_app
from services.monitor.live.reference_bins import ReferenceBins
from services.monitor.live.scheduler import Analysis
from services.monitor.sinks.watermark import Watermarks
from services.monitor.sinks.writer import SinkBuffer, write_pending
from services.monitor.specs import load_monitor_specs
from services.monitor.store import StoreThread

__all__ = ["main", "run", "sink_topics"]

_log = get_logger(__name__)


def sink_topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [
        t.predictions_log, t.labels_feedback, t.datasets_versions, t.data_rejected,
        t.models_events, t.drift_events, t.experiments_events,
    ]  # fmt: skip


class Monitor:
    """Owns the loops' shared state: readiness, the stop flag, counters."""

    def __init__(self, settings: Settings, monitor: MonitorSettings) -> None:
        self.settings = settings
        self.config = monitor
        self.stop = asyncio.Event()
        self.migrated = False
        self.consumer: ProtobufConsumer | None = None
        self.written = 0
        self.ticks = 0
        self.watermarks = Watermarks()  # predictions.log
        self.label_watermarks = Watermarks()  # labels.feedback

    def readiness(self) -> list[str]:
        missing = []
        if not self.migrated:
            missing.append("store migrations")
        if self.consumer is None or not self.consumer.assignment():
            missing.append("kafka partitions")
        return missing

    async def sink_loop(self, consumer: ProtobufConsumer, writer: StoreThread) -> None:
        buffer = SinkBuffer(self.config.sink_max_rows, self.config.sink_max_age_ms)

        async def flush() -> None:
            pending = buffer.take()
            if not pending.offsets:
                return
            result = await writer.run(write_pending, pending)
            await consumer.commit(pending.offsets)
            self.watermarks.written(pending.prediction_times)
            self.label_watermarks.written(pending.label_times)
            await self.track_positions(consumer)
            self.written += pending.records
            if pending.records:
                _log.info(
                    "sink.written", records=pending.records, inserted=result.inserted,
                    skipped={k: v for k, v in result.skipped.items() if v},
                    rejected=result.rejected,
                )  # fmt: skip

        while not self.stop.is_set():
            batch = await consumer.getmany(
                timeout_ms=self.config.poll_timeout_ms, max_records=self.config.poll_max_records
            )
            buffer.add(batch)
            if buffer.due():
                await flush()
            elif not len(buffer):  # idle: has a partition been read to its end meanwhile?
                await self.track_positions(consumer)
        await flush()

    async def track_positions(self, consumer: ProtobufConsumer) -> None:
        """Which partitions of predictions.log and labels.feedback are read to their end
        (the last stable offset under read_committed, else the high watermark), for the
        watermarks. Called when nothing consumed is waiting to be written, so read means
        written."""
        raw, topics = consumer.raw, self.settings.topics
        marks = {
            topics.predictions_log: self.watermarks,
            topics.labels_feedback: self.label_watermarks,
        }
        behind: dict[str, dict[int, bool]] = {topic: {} for topic in marks}
        for tp in consumer.assignment():
            if tp.topic not in marks:
                continue
            end = raw.last_stable_offset(tp)
            if end is None or end < 0:
                end = raw.highwater(tp)
            try:
                behind[tp.topic][tp.partition] = end is None or await raw.position(tp) < end
            except IllegalStateError:  # revoked meanwhile
                continue
        for topic, watermarks in marks.items():
            watermarks.positions(behind[topic])

    async def analysis_loop(
        self, analysis: Analysis, reader: StoreThread, producer: ProtobufProducer
    ) -> None:
        await reader.run(analysis.restore)
        topics = self.settings.topics
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                result = await reader.run(
                    analysis.tick, self.watermarks.snapshot(), self.label_watermarks.snapshot()
                )
                for event in result.drift_events:
                    await producer.send_and_wait(topics.drift_events, event, event.model)
                    _log.info("drift.event", **_brief(event))
                for event in result.experiment_events:
                    await producer.send_and_wait(topics.experiments_events, event, event.experiment)
                    _log.info("experiment.event", **_brief(event))
                await reader.run(Analysis.write, result)
                self.ticks += 1
            except Exception as exc:  # one failed tick must not stop the sinks
                _log.exception("analysis.failed", error=str(exc))
            elapsed = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, self.config.tick_s - elapsed))


def _brief(event: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(event, preserving_proto_field_name=True)


async def run(settings: Settings, config: MonitorSettings) -> None:
    specs = load_monitor_specs(config.models_dir, config)
    await check_kafka(settings)
    monitor = Monitor(settings, config)
    writer = StoreThread(settings.clickhouse_dsn, "writer")
    analysis_store = StoreThread(settings.clickhouse_dsn, "analysis")
    reader = StoreThread(settings.clickhouse_dsn, "reader")
    applied = await writer.run(apply_migrations)
    monitor.migrated = True
    consumer = create_consumer(settings, group_id=config.group_id)
    consumer.raw.subscribe(sink_topics(settings))
    monitor.consumer = consumer
    producer = create_producer(settings, linger_ms=5)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, monitor.stop.set)

    async def run_query(fn: Any, arg: Any) -> Any:
        return await reader.run(fn, arg)

    app = create_http_app(config, run_query, monitor.readiness)
    server = embedded_server(app, config.http_host, config.http_port)
    registry = ModelRegistry(ArtifactStore.from_settings(settings))  # manifests only
    analysis = Analysis(config, specs, ReferenceBins(registry))
    async with producer, consumer:
        _log.info(
            "monitor.started", topics=sink_topics(settings), group_id=config.group_id,
            migrations=[m.name for m in applied], models=sorted(specs),
            http=f"{config.http_host}:{config.http_port}",
        )  # fmt: skip
        serving = asyncio.create_task(server.serve())
        tasks = [
            asyncio.create_task(monitor.sink_loop(consumer, writer)),
            asyncio.create_task(monitor.analysis_loop(analysis, analysis_store, producer)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    monitor.stop.set()
                    raise task.exception()  # type: ignore[misc]
            await asyncio.gather(*tasks)
        finally:
            monitor.stop.set()
            for task in tasks:
                if not task.done():
                    await asyncio.wait([task], timeout=30)
            server.should_exit = True
            await serving
    for store in (writer, analysis_store, reader):
        store.close()
    _log.info("monitor.stopped", records=monitor.written, ticks=monitor.ticks)


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    name = os.environ.get("DRIFTLOOP_SERVICE_NAME", "driftloop-monitor")
    settings = load_settings(service_name=name)
    configure_logging(settings)
    asyncio.run(run(settings, MonitorSettings()))
    return 0
