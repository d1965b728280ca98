"""Helpers for the router's integration tests: requests from table rows, waiting, and
reading predictions.log back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, TopicPartition

from driftloop.v1 import events_pb2 as ev
from driftloop.v1 import prediction_pb2 as pb
from services.common.settings import Settings
from tests.integration.trainer.synthetic import credit_schema


def credit_table_features() -> tuple[list[str], list[str]]:
    schema = credit_schema()
    return list(schema.numeric), list(schema.categorical)


NUMERIC, CATEGORICAL = credit_table_features()


def row_features(table: pa.Table, i: int) -> dict[str, Any]:
    """Row i's features (None where null), as request columns would carry them."""
    return {n: table.column(n)[i].as_py() for n in (*NUMERIC, *CATEGORICAL)}


def complete_rows(table: pa.Table, n: int) -> list[dict[str, Any]]:
    """The first `n` rows of `table` with every feature present."""
    out = []
    for i in range(table.num_rows):
        row = row_features(table, i)
        if all(v is not None for v in row.values()):
            out.append(row)
            if len(out) == n:
                return out
    raise AssertionError(f"only {len(out)} complete rows")


def predict_request(
    model: str, features: dict[str, Any], key: str = "", rid: str = ""
) -> pb.PredictRequest:
    return pb.PredictRequest(
        model=model,
        entity_key=key,
        request_id=rid,
        numeric={n: float(v) for n, v in features.items() if n in NUMERIC and v is not None},
        categorical={n: v for n, v in features.items() if n in CATEGORICAL and v is not None},
    )


def batch_request(
    model: str,
    rows: list[dict[str, Any]],
    keys: list[str] | None = None,
    rids: list[str] | None = None,
) -> pb.PredictBatchRequest:
    values = [float("nan") if r[n] is None else float(r[n]) for r in rows for n in NUMERIC]
    cats = ["" if r[n] is None else r[n] for r in rows for n in CATEGORICAL]
    return pb.PredictBatchRequest(
        model=model,
        rows=len(rows),
        feature_names=NUMERIC,
        values=values,
        categorical_names=CATEGORICAL,
        categorical_values=cats,
        entity_keys=keys or [],
        request_ids=rids or [],
    )


async def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what or cond}"
        await asyncio.sleep(0.02)


async def read_logs(
    settings: Settings, request_ids: Iterable[str], *, want: int, timeout_s: float = 60.0
) -> list[ev.PredictionLog]:
    records = await read_log_records(settings, request_ids, want=want, timeout_s=timeout_s)
    return [m for m, _ in records]


async def read_log_records(
    settings: Settings, request_ids: Iterable[str], *, want: int, timeout_s: float = 60.0
) -> list[tuple[ev.PredictionLog, dict[str, bytes]]]:
    """Every PredictionLog on the topic whose request id is in `request_ids`: reads from the
    beginning until `want` matching records are seen and the end of each partition is
    reached (so duplicates after them are seen too)."""
    ids = set(request_ids)
    topic = settings.topics.predictions_log
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        found: list[tuple[ev.PredictionLog, dict[str, bytes]]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    msg = ev.PredictionLog.FromString(r.value)
                    if msg.request_id in ids:
                        found.append((msg, dict(r.headers)))
            if len(found) >= want:
                ends = await consumer.end_offsets(parts)
                positions = [await consumer.position(p) for p in parts]
                if all(pos >= ends[p] for pos, p in zip(positions, parts, strict=True)):
                    return found
            if time.monotonic() >= deadline:
                kinds = sorted({m.request_id.split("-")[0] for m, _ in found})
                per_kind = {k: sum(m.request_id.startswith(k) for m, _ in found) for k in kinds}
                ends = await consumer.end_offsets(parts)
                raise AssertionError(
                    f"saw {len(found)} of {want} PredictionLogs {per_kind}; ends {ends}"
                )
    finally:
        await consumer.stop()
