"""Rows/s of the ingest pipeline (consume + validate + dedup + seal versions + commit)
against a raw aiokafka consume + protobuf decode of the same topic, in one run.

    python -m bench.ingest_throughput              # the local stack (DRIFTLOOP_HOME)
    python -m bench.ingest_throughput -n 200000
    python -m bench.ingest_throughput --repeat 1   # a single pair (default: 5, median)

Both read the same N `credit` events (published once, before either clock starts) with
consumers that are already assigned, built by the same factory with the same settings
and polling the same number of records at a time. The raw path decodes every value
into a DataEvent and does nothing else; the pipeline path is the service's own
`IngestPipeline` with real Redis (dedup claims), a temporary artifact store (Parquet +
manifests) and commits, and its clock stops when every row is in a sealed, announced
version. With `--repeat R` the two run R times interleaved (raw, pipeline, raw, ...),
each pipeline run with its own consumer group, artifact store and dedup keys, and the
ratio of each pair is printed with their median: on a noisy machine one pair can land
on a slow moment.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from driftloop.v1.events_pb2 import DataEvent
from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import load_schemas
from services.common.kafka import create_consumer, create_producer, ensure_topics
from services.common.redis_client import sync_redis
from services.common.settings import Settings, TopicNames, load_settings
from services.ingest.config import IngestSettings
from services.ingest.decode.wire import warm_up
from services.ingest.dedup import EventDedup
from services.ingest.pipeline import IngestPipeline, wall_clock_ms
from services.ingest.seal.version import VersionWriter
from tests.integration.ingest.events_gen import credit_event

_console = Console()


async def _publish(settings: Settings, topic: str, n: int) -> None:
    rng, now_ms, prefix = random.Random(3), int(time.time() * 1000), uuid.uuid4().hex[:8]
    events = [credit_event(rng, f"{prefix}-{i:08d}", now_ms) for i in range(n)]
    async with create_producer(settings, linger_ms=20) as producer:
        futures = await producer.send_many(topic, ((e.entity_key, e) for e in events))
        await asyncio.gather(*futures)


async def _until_assigned(assigned: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not assigned():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark consumer got no partitions")
        await asyncio.sleep(0.02)


def _settle() -> None:
    """Right before a clock starts: collect, then freeze what is left (imports, the other
    path's leftovers) out of the collector's view, so neither path pays for full
    collections of objects that are not its own. The service does the same after start-up
    (`app.run`)."""
    gc.collect()
    gc.freeze()


async def raw_rate(settings: Settings, topic: str, n: int, max_records: int) -> float:
    # The service's own consumer factory, so both paths fetch with the same settings.
    consumer = create_consumer(settings, topic, group_id=None).raw
    await consumer.start()
    try:
        await _until_assigned(lambda: bool(consumer.assignment()))
        _settle()
        started, seen = time.perf_counter(), 0
        while seen < n:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            for records in fetched.values():
                for record in records:
                    DataEvent.FromString(record.value)
                seen += len(records)
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def pipeline_rate(
    settings: Settings, ingest: IngestSettings, n: int, artifacts: Path
) -> tuple[float, int]:
    """The service's pipeline from a fresh consumer group, store and dedup index."""
    storage = VersionWriter(ArtifactStore(f"file://{artifacts}"))
    redis = sync_redis(settings)

    async def sealed_ids(dataset: str, since_ms: int) -> list[str]:
        return await asyncio.to_thread(storage.event_ids, dataset, since_ms)

    consumer = create_consumer(settings, group_id=ingest.group_id)
    producer = create_producer(settings)
    pipeline = IngestPipeline(
        consumer=consumer,
        producer=producer,
        storage=storage,
        dedup=EventDedup(
            redis,
            sealed_ids,
            ingest.dedup_ttl_s,
            prefix=f"bench:dedup:{ingest.group_id}",
            now_ms=wall_clock_ms,
        ),
        schemas=load_schemas(ingest.schemas_dir),
        ingest=ingest,
        topics=settings.topics,
    )
    consumer.raw.subscribe([settings.topics.data_events], listener=pipeline.rebalance_listener())
    async with producer, consumer:
        await pipeline.recover()
        await _until_assigned(lambda: bool(consumer.assignment()))
        _settle()
        started = time.perf_counter()
        while pipeline.stats.consumed < n:
            await pipeline.step()
        await pipeline.seal_all()
        elapsed = time.perf_counter() - started
        await pipeline.stop_fetching()
    redis.close()
    assert pipeline.stats.sealed_rows == n, pipeline.stats  # every event is good
    return n / elapsed, pipeline.stats.versions


async def _timed(label: str, work: Awaitable[float]) -> float:
    with _console.status(label):
        return await work


async def main(n: int, repeat: int) -> None:
    base = load_settings()
    uid = uuid.uuid4().hex[:8]
    topics = TopicNames(
        data_events=f"bench.data.events.{uid}",
        data_rejected=f"bench.data.rejected.{uid}",
        datasets_versions=f"bench.datasets.versions.{uid}",
    )
    settings = base.model_copy(update={"topics": topics})
    with _console.status("compiling the decoder (numba; cached after the first time)"):
        warm_up()
    await ensure_topics(settings, [topics.data_events], partitions=3)
    await ensure_topics(settings, [topics.data_rejected, topics.datasets_versions], partitions=1)
    with _console.status(f"publishing {n:,} credit events to {topics.data_events}"):
        await _publish(settings, topics.data_events, n)

    table = Table(title=f"ingest throughput, {n:,} events, 3 partitions, {base.kafka_bootstrap}")
    for column in ("run", "raw rows/s", "raw µs/row", "pipeline rows/s", "pipeline µs/row"):
        table.add_column(column, justify="right")
    table.add_column("versions", justify="right")
    table.add_column("ratio", justify="right")
    ratios: list[float] = []
    for run in range(1, repeat + 1):
        # The production defaults (seal_max_rows 50,000, poll_max_records 5,000), stated.
        ingest = IngestSettings(
            group_id=f"bench-ingest-{uid}-{run}", seal_max_rows=50_000, poll_max_records=5_000
        )
        raw = await _timed(
            f"run {run}/{repeat}: raw aiokafka consume + decode",
            raw_rate(settings, topics.data_events, n, ingest.poll_max_records),
        )
        with (
            tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
            _console.status(f"run {run}/{repeat}: ingest pipeline (validate, dedup, version)"),
        ):
            rate, versions = await pipeline_rate(settings, ingest, n, Path(tmp))
        ratios.append(rate / raw)
        table.add_row(
            str(run),
            f"{raw:,.0f}",
            f"{1e6 / raw:.1f}",
            f"{rate:,.0f}",
            f"{1e6 / rate:.1f}",
            str(versions),
            f"{rate / raw:.2f}",
        )
    _console.print(table)
    ratio = statistics.median(ratios)
    verdict = "[green]meets[/]" if ratio >= 0.5 else "[red]misses[/]"
    label = "ratio" if repeat == 1 else f"median ratio of {repeat} runs"
    _console.print(f"{label} pipeline / raw = [bold]{ratio:.2f}[/] ({verdict} the 0.5 aim)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="events (default 100,000)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs (default 5)")
    args = parser.parse_args()
    asyncio.run(main(args.n, max(1, args.repeat)))
