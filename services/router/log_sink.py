"""Sending PredictionLog records to Kafka for the prediction logger: one batch at a time,
awaiting Kafka's acknowledgement before the next, so the producer's accumulator never
holds a full batch while the broker is away (and enqueueing never blocks), and a failed
delivery means the records were not written (they go to the spool)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from services.common.kafka_serde import KeyPartitioner
from services.common.logging import get_logger
from services.router.spool import Record

__all__ = ["KafkaSink"]

_log = get_logger(__name__)


class KafkaSink:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        start_timeout_s: float = 5.0,
        enqueue_timeout_s: float = 2.0,
        settle_timeout_s: float = 10.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partitioner = KeyPartitioner()
        self._started = False
        self._start_timeout_s = start_timeout_s
        self._enqueue_timeout_s = enqueue_timeout_s
        self._settle_timeout_s = settle_timeout_s
        self._in_doubt: set[asyncio.Future[object]] = set()
        self.on_late_failure: Callable[[list[Record]], None] | None = None

    async def _ensure_started(self) -> None:
        if self._started:
            return
        # A producer that failed to start must be stopped before it can try again.
        try:
            await asyncio.wait_for(self._producer.start(), self._start_timeout_s)
        except BaseException:
            await self._producer.stop()
            raise
        self._started = True
        _log.info("prediction_log.kafka_connected", topic=self._topic)

    async def __call__(self, records: Sequence[Record]) -> list[Record]:
        """Send `records`; returns those Kafka did not take (in their order). Enqueueing is
        bounded by `enqueue_timeout_s`; a record once enqueued is awaited to its outcome
        (delivered, or expired by the producer after its request timeout) and never
        abandoned, so a record is reported undelivered only when it was not written."""
        if self._in_doubt:  # Kafka has not settled earlier records: enqueue nothing more
            return list(records)
        try:
            await self._ensure_started()
            partitions = sorted(
                await asyncio.wait_for(
                    self._producer.partitions_for(self._topic), self._enqueue_timeout_s
                )
            )
        except Exception as exc:  # nothing was enqueued
            _log.debug("prediction_log.not_enqueued", error=f"{type(exc).__name__}: {exc}")
            return list(records)
        by_partition: dict[int, list[Record]] = {}
        for r in records:
            p = self._partitioner(r.key or None, partitions, partitions)
            by_partition.setdefault(p, []).append(r)
        pending: list[tuple[asyncio.Future[object], list[Record]]] = []
        failed: list[Record] = []
        for p, recs in by_partition.items():
            for chunk, builder in self._batches(recs):
                try:
                    fut = await asyncio.wait_for(
                        self._producer.send_batch(builder, self._topic, partition=p),
                        self._enqueue_timeout_s,
                    )
                except Exception:  # not enqueued (cancelled while waiting for room)
                    failed.extend(chunk)
                    continue
                pending.append((fut, chunk))
        if pending:
            await asyncio.wait([f for f, _ in pending], timeout=self._settle_timeout_s)
        for fut, chunk in pending:
            if not fut.done():
                # Not settled in time (the producer keeps retrying while it knows a leader):
                # neither delivered nor failed, so neither counted nor spooled now. It is
                # settled in the background; a late failure hands its records back.
                self._in_doubt.add(fut)
                fut.add_done_callback(functools.partial(self._settled, chunk=chunk))
            elif fut.cancelled() or fut.exception() is not None:
                failed.extend(chunk)
        return failed

    def _settled(self, fut: asyncio.Future[object], *, chunk: list[Record]) -> None:
        self._in_doubt.discard(fut)
        if (fut.cancelled() or fut.exception() is not None) and self.on_late_failure:
            self.on_late_failure(chunk)

    def _batches(self, recs: list[Record]) -> Iterator[tuple[list[Record], BatchBuilder]]:
        """Record batches of `recs`, in order: a batch is closed when the next record does
        not fit (`append` returns None; an empty batch always takes one record)."""
        builder = self._producer.create_batch()
        chunk: list[Record] = []
        for r in recs:
            headers = list(r.headers)
            if (
                builder.append(key=r.key or None, value=r.value, timestamp=None, headers=headers)
                is None
            ):
                yield chunk, builder
                builder, chunk = self._producer.create_batch(), []
                builder.append(key=r.key or None, value=r.value, timestamp=None, headers=headers)
            chunk.append(r)
        if chunk:
            yield chunk, builder

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._started:
            try:  # stop() flushes: with the broker away it would wait for ever
                await asyncio.wait_for(self._producer.stop(), timeout_s)
            except TimeoutError:
                _log.warning("prediction_log.producer_stop_timeout", in_doubt=len(self._in_doubt))
