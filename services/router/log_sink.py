"""Sending PredictionLog records to Kafka for the prediction logger: one batch at a time,
awaiting Kafka's acknowledgement before the next, so the producer's accumulator never
holds a full batch while the broker is away (and enqueueing never blocks), and a failed
delivery means the records were not written (they go to the spool)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from services.common.kafka_serde import KeyPartitioner
from services.common.logging import get_logger
from services.router.spool import Record

__all__ = ["KafkaSink"]

_log = get_logger(__name__)


class KafkaSink:
    def __init__(self, producer: AIOKafkaProducer, topic: str, start_timeout_s: float = 5.0):
        self._producer = producer
        self._topic = topic
        self._partitioner = KeyPartitioner()
        self._started = False
        self._start_timeout_s = start_timeout_s

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

    async def __call__(self, records: Sequence[Record]) -> None:
        await self._ensure_started()
        producer = self._producer
        partitions = sorted(await producer.partitions_for(self._topic))
        builders: dict[int, BatchBuilder] = {}
        futures = []
        for r in records:
            key = r.key or None
            p = self._partitioner(key, partitions, partitions)
            builder = builders.get(p)
            if builder is None:
                builder = builders[p] = producer.create_batch()
            if (
                builder.append(key=key, value=r.value, timestamp=None, headers=list(r.headers))
                is None
            ):
                futures.append(await producer.send_batch(builder, self._topic, partition=p))
                builder = builders[p] = producer.create_batch()
                builder.append(key=key, value=r.value, timestamp=None, headers=list(r.headers))
        for p, builder in builders.items():
            if builder.record_count():
                futures.append(await producer.send_batch(builder, self._topic, partition=p))
        await asyncio.gather(*futures)

    async def close(self) -> None:
        if self._started:
            await self._producer.stop()
