"""The one place that knows how to talk to Kafka: protobuf producer/consumer factories.

Every record carries `content-type`, `schema` and the W3C trace context in its headers
(DESIGN.md §2). The consumer decodes records into `Envelope`s and hands back records it
cannot decode as `DecodeFailure`s next to the good ones, so a service dead-letters them
instead of crashing; offsets are committed explicitly, after the work is durable.
Admin helpers (`check_kafka`, `ensure_topics`) live in kafka_admin and are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from opentelemetry import context as otel_context

from services.common.kafka_admin import (
    KafkaClusterInfo,
    KafkaUnavailableError,
    check_kafka,
    diagnose_unavailable,
    ensure_topics,
)
from services.common.kafka_fetch import GuardedFetcher, disable_codecs
from services.common.kafka_security import client_options
from services.common.kafka_serde import (
    DecodeFailure,
    Envelope,
    KeyPartitioner,
    MessageDecodeError,
    MessageResolver,
    build_headers,
    decode_record,
    encode_key,
)
from services.common.kafka_stuck import StuckLedger
from services.common.settings import Settings

__all__ = [
    "ConsumedBatch",
    "DecodeFailure",
    "Envelope",
    "KafkaClusterInfo",
    "KafkaUnavailableError",
    "MessageDecodeError",
    "ProtobufConsumer",
    "ProtobufProducer",
    "check_kafka",
    "create_consumer",
    "create_producer",
    "ensure_topics",
]

_log = logging.getLogger(__name__)

DeliveryFuture = asyncio.Future[RecordMetadata]


class ProtobufProducer:
    """AIOKafkaProducer that sends protobuf messages with driftloop's headers.

    `send()` returns the delivery future as soon as the record is queued, so a caller
    sends many and then awaits them together (that is what makes batches fill).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str | None = None,
        linger_ms: int = 5,
        compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None,
        **options: Any,
    ) -> None:
        self._settings = settings
        self._partitioner = options.pop("partitioner", None) or KeyPartitioner()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id or settings.service_name,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            compression_type=compression_type,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            partitioner=self._partitioner,
            **{**client_options(settings), **options},
        )
        # Headers are identical for every record sent from one trace context and of one
        # type; rebuilding (and re-running the propagator) per record costs ~10 µs.
        self._header_ctx: object = None
        self._header_cache: dict[type[Message], list[tuple[str, bytes]]] = {}

    @property
    def raw(self) -> AIOKafkaProducer:
        return self._producer

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaConnectionError as exc:
            await self._producer.stop()
            raise await diagnose_unavailable(self._settings, exc) from None

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _headers(self, message_cls: type[Message]) -> list[tuple[str, bytes]]:
        ctx = otel_context.get_current()
        if ctx is not self._header_ctx:  # contexts are immutable: identity is enough
            self._header_ctx, self._header_cache = ctx, {}
        headers = self._header_cache.get(message_cls)
        if headers is None:
            headers = self._header_cache[message_cls] = build_headers(message_cls, ctx)
        return headers

    def send(
        self,
        topic: str,
        message: Message,
        key: str | bytes | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Coroutine[Any, Any, DeliveryFuture]:
        """Queue one message: `fut = await producer.send(...)`, then `await fut` for its
        partition/offset. (A plain function returning aiokafka's coroutine: one frame less
        per record.)"""
        return self._producer.send(
            topic,
            message.SerializeToString(),
            key=encode_key(key),
            partition=partition,
            timestamp_ms=timestamp_ms,
            headers=self._headers(type(message)),
        )

    async def send_and_wait(
        self, topic: str, message: Message, key: str | bytes | None = None, **kwargs: Any
    ) -> RecordMetadata:
        return await (await self.send(topic, message, key, **kwargs))

    async def send_many(
        self, topic: str, items: Iterable[tuple[str | bytes | None, Message]]
    ) -> list[DeliveryFuture]:
        """Queue (key, message) pairs as whole record batches, one per partition at a time.

        Same partitioning, headers and ordering per key as `send()`, at a fraction of its
        per-record cost (no coroutine, future or accumulator lookup per record). Returns one
        future per batch (its RecordMetadata has the batch's base offset); gather them to
        confirm delivery. Records of a batch still being filled are not yet queued, so do not
        interleave concurrent `send()` calls for the same keys if their order matters.
        """
        partitions = sorted(await self._producer.partitions_for(topic))
        partitioner = self._partitioner
        builders: dict[int, BatchBuilder] = {}
        futures: list[DeliveryFuture] = []
        for key, message in items:
            key_bytes = encode_key(key)
            partition = partitioner(key_bytes, partitions, partitions)
            value = message.SerializeToString()
            headers = self._headers(type(message))
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = self._producer.create_batch()
            if builder.append(key=key_bytes, value=value, timestamp=None, headers=headers) is None:
                futures.append(await self._producer.send_batch(builder, topic, partition=partition))
                builder = builders[partition] = self._producer.create_batch()
                # An empty batch always takes one record, however large.
                builder.append(key=key_bytes, value=value, timestamp=None, headers=headers)
        for partition, builder in builders.items():
            if builder.record_count():
                futures.append(await self._producer.send_batch(builder, topic, partition=partition))
        return futures

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> DeliveryFuture:
        """Send bytes as they are (forwarding, replay); no driftloop headers are added."""
        return await self._producer.send(topic, value, key=encode_key(key), headers=list(headers))

    async def flush(self) -> None:
        await self._producer.flush()


@dataclass
class ConsumedBatch:
    """One `getmany()`: decoded envelopes and failures, each in offset order per partition."""

    envelopes: list[Envelope] = field(default_factory=list)
    failures: list[DecodeFailure] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read

    def __len__(self) -> int:
        return len(self.envelopes) + len(self.failures)


class ProtobufConsumer:
    """AIOKafkaConsumer that decodes protobuf records; auto-commit is off.

    on_decode_error="return" (default): bad records come back in `ConsumedBatch.failures`.
    on_decode_error="raise": `getmany()` raises MessageDecodeError and rewinds the batch's
    partitions, so nothing is skipped when the service restarts.

    Every producer's records are readable: all of Kafka's codecs (gzip; snappy, lz4 and
    zstd through aiokafka's `cramjam` extra), and `isolation_level` is `read_committed`
    (`DRIFTLOOP_KAFKA_ISOLATION_LEVEL`) because a transactional producer (Kafka Streams,
    Flink, any exactly-once app) takes aborted writes back, and with `read_uncommitted`
    those rows would become training data. A batch that still cannot be read (corrupt,
    or a codec missing after all) pauses only its partition: see `kafka_fetch`; pass
    `stuck_ledger` to make it visible to operators (Redis).
    """

    def __init__(
        self,
        settings: Settings,
        *topics: str,
        group_id: str | None,
        auto_offset_reset: Literal["earliest", "latest", "none"] = "earliest",
        message_types: Mapping[str, type[Message]] | None = None,
        on_decode_error: Literal["return", "raise"] = "return",
        client_id: str | None = None,
        stuck_ledger: StuckLedger | None = None,
        **options: Any,
    ) -> None:
        self._settings = settings
        self._resolver = MessageResolver.for_topics(settings.topics, message_types)
        self._on_decode_error = on_decode_error
        if disabled := os.environ.get("DRIFTLOOP_KAFKA_DISABLED_CODECS"):
            disable_codecs(disabled)  # fault injection (tests): a poison batch, for real
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            client_id=client_id or settings.service_name,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            isolation_level=options.pop("isolation_level", settings.kafka_isolation_level),
            **{**client_options(settings), **options},
        )
        self.fetcher = GuardedFetcher(
            self._consumer,
            group=group_id or "",
            service=settings.service_name,
            ledger=stuck_ledger,
            retry_s=settings.kafka_stuck_retry_s,
        )

    @property
    def raw(self) -> AIOKafkaConsumer:
        return self._consumer

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except KafkaConnectionError as exc:
            await self._consumer.stop()
            raise await diagnose_unavailable(self._settings, exc) from None

    async def stop(self) -> None:
        try:
            await self._consumer.stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled: let it through
            # aiokafka cancels its own in-flight fetch on stop and, after a fetch timed
            # out, that CancelledError can escape stop() (aiokafka issue #974). Nobody
            # cancelled us, so the consumer is stopped: say so and carry on.
            _log.warning("kafka consumer stop: aiokafka cancelled its own fetch; consumer stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def getmany(
        self, timeout_ms: int = 1000, max_records: int | None = None
    ) -> ConsumedBatch:
        records = await self.fetcher.getmany(timeout_ms=timeout_ms, max_records=max_records)
        batch = ConsumedBatch()
        resolver = self._resolver
        for tp, recs in records.items():
            for rec in recs:
                decoded = decode_record(rec, resolver)
                if type(decoded) is Envelope:
                    batch.envelopes.append(decoded)
                else:
                    assert isinstance(decoded, DecodeFailure)
                    batch.failures.append(decoded)
            batch.offsets[tp] = recs[-1].offset + 1
        if batch.failures and self._on_decode_error == "raise":
            for tp, recs in records.items():
                self._consumer.seek(tp, recs[0].offset)
            raise batch.failures[0].as_error()
        return batch

    async def __aiter__(self) -> AsyncIterator[Envelope | DecodeFailure]:
        """Records one by one, in order per partition (offsets still need `commit()`)."""
        while True:
            batch = await self.getmany()
            items: list[Envelope | DecodeFailure] = [*batch.envelopes, *batch.failures]
            items.sort(key=lambda item: (item.topic, item.partition, item.offset))
            for item in items:
                yield item

    async def commit(
        self,
        offsets: ConsumedBatch | Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """Commit a processed batch (or explicit next offsets; None = everything consumed)."""
        if isinstance(offsets, ConsumedBatch):
            offsets = offsets.offsets
        if offsets is not None and not offsets:
            return
        await self._consumer.commit(dict(offsets) if offsets is not None else None)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())


def create_producer(settings: Settings, **options: Any) -> ProtobufProducer:
    """A producer (not started): `async with create_producer(settings) as producer:`."""
    return ProtobufProducer(settings, **options)


def create_consumer(
    settings: Settings, *topics: str, group_id: str | None, **options: Any
) -> ProtobufConsumer:
    """A consumer of `topics` (not started): `async with create_consumer(...) as c:`."""
    return ProtobufConsumer(settings, *topics, group_id=group_id, **options)
