"""The Kafka factories against the real broker of the local stack.

Every test works on its own, uniquely named topics and consumer groups, so tests (and
services under test) never read each other's records.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from driftloop.v1 import events_pb2 as pb
from services.common.kafka import (
    ConsumedBatch,
    DecodeFailure,
    Envelope,
    KafkaUnavailableError,
    MessageDecodeError,
    ProtobufConsumer,
    check_kafka,
    create_consumer,
    create_producer,
    ensure_topics,
)
from services.common.settings import Settings, TopicNames
from services.common.telemetry import Telemetry, build_telemetry
from services.common.topics import TOPIC_MESSAGES
from tests.unit.test_kafka_serde import SAMPLES


def _unique(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def telemetry(stack: Settings) -> Iterator[Telemetry]:
    tel = build_telemetry(stack.model_copy(update={"telemetry_exporter": "memory"}))
    yield tel
    tel.shutdown()


async def _consume(consumer: ProtobufConsumer, n: int, timeout_s: float = 60) -> ConsumedBatch:
    """Poll until n records (good or bad) arrived; fail with what did arrive otherwise."""
    total = ConsumedBatch()
    deadline = time.monotonic() + timeout_s
    while len(total) < n:
        assert time.monotonic() < deadline, f"only {len(total)} of {n} records in {timeout_s} s"
        batch = await consumer.getmany(timeout_ms=500)
        total.envelopes += batch.envelopes
        total.failures += batch.failures
        total.offsets.update(batch.offsets)
    return total


async def test_check_kafka_sees_the_stack_and_its_topics(stack: Settings) -> None:
    info = await check_kafka(stack)
    assert info.brokers == [stack.kafka_bootstrap] and info.cluster_id
    assert set(stack.topics.all()) <= set(info.topics)  # the launcher created them
    name = _unique("ensure")
    assert await ensure_topics(stack, [name], partitions=2) == [name]
    assert await ensure_topics(stack, [name], partitions=2) == []  # already there: no error
    assert name in (await check_kafka(stack)).topics


async def test_unreachable_kafka_is_one_actionable_error(stack: Settings) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nowhere = stack.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    with pytest.raises(KafkaUnavailableError, match=rf"127\.0\.0\.1:{port}.*driftloop stack up"):
        await check_kafka(nowhere, timeout_s=5)
    with pytest.raises(KafkaUnavailableError, match="DRIFTLOOP_KAFKA_BOOTSTRAP"):
        async with create_producer(nowhere):
            pass


async def test_every_message_type_round_trips_with_headers(stack: Settings) -> None:
    run = uuid.uuid4().hex[:10]
    # driftloop's own topic map, with this test's private names.
    names = TopicNames(**{f: f"test.{name}.{run}" for f, name in TopicNames().model_dump().items()})
    settings = stack.model_copy(update={"topics": names})
    await ensure_topics(settings, names.all(), partitions=2)
    async with create_producer(settings) as producer:
        for field in TOPIC_MESSAGES:
            meta = await producer.send_and_wait(getattr(names, field), SAMPLES[field], f"k-{field}")
            assert meta.offset == 0
    async with create_consumer(settings, *names.all(), group_id=f"test-{run}") as consumer:
        got = await _consume(consumer, len(TOPIC_MESSAGES))
        await consumer.commit(got)
    assert not got.failures
    by_topic = {e.topic: e for e in got.envelopes}
    for field, sample in SAMPLES.items():
        envelope = by_topic[getattr(names, field)]
        assert envelope.message == sample and type(envelope.message) is type(sample)
        assert envelope.key_str == f"k-{field}" and envelope.offset == 0
        assert envelope.headers["content-type"] == b"application/x-protobuf"
        assert envelope.headers["schema"] == sample.DESCRIPTOR.full_name.encode()
        assert envelope.timestamp_ms > 0


async def test_malformed_record_is_a_typed_failure_and_consumption_goes_on(
    stack: Settings,
) -> None:
    topic, group = _unique("malformed"), f"test-{uuid.uuid4().hex}"
    await ensure_topics(stack, [topic], partitions=1)
    types = {topic: pb.DataEvent}
    async with create_producer(stack) as producer:
        await producer.send_and_wait(topic, pb.DataEvent(event_id="good-1"), "k")
        await (
            await producer.send_raw(
                topic, b"\x0a\xff\xff", "k", [("schema", b"driftloop.v1.DataEvent")]
            )
        )
        await producer.send_and_wait(topic, pb.DataEvent(event_id="good-2"), "k")

    async with create_consumer(stack, topic, group_id=group, message_types=types) as consumer:
        got = await _consume(consumer, 3)
        await consumer.commit(got)
    assert [e.message.event_id for e in got.envelopes] == ["good-1", "good-2"]  # type: ignore[attr-defined]
    [failure] = got.failures
    assert (failure.offset, failure.reason) == (1, "decode_error")
    assert failure.value == b"\x0a\xff\xff" and failure.key == b"k"
    assert f"{topic}[0]@1" in str(failure) and "driftloop.v1.DataEvent" in str(failure)
    assert failure.to_rejected("test").original_value == b"\x0a\xff\xff"

    # The group committed past all three: a restart sees nothing again.
    async with create_consumer(stack, topic, group_id=group, message_types=types) as again:
        assert len(await again.getmany(timeout_ms=3000)) == 0

    # Strict mode raises, naming the record, and rewinds: polling again raises again.
    async with create_consumer(
        stack,
        topic,
        group_id=f"test-{uuid.uuid4().hex}",
        message_types=types,
        on_decode_error="raise",
    ) as strict:
        with pytest.raises(MessageDecodeError, match=rf"{topic}\[0\]@1") as caught:
            await _consume(strict, 3)
        assert caught.value.offset == 1 and caught.value.reason == "decode_error"
        with pytest.raises(MessageDecodeError):
            await _consume(strict, 3)


async def test_trace_context_survives_a_kafka_hop(stack: Settings, telemetry: Telemetry) -> None:
    topic = _unique("trace")
    await ensure_topics(stack, [topic], partitions=1)
    tracer = telemetry.tracer("test")
    async with create_producer(stack) as producer:
        with tracer.start_as_current_span("publish") as publish:
            await producer.send_and_wait(topic, pb.DataEvent(event_id="traced"), "k")
        await producer.send_and_wait(topic, pb.DataEvent(event_id="untraced"), "k")
    async with create_consumer(
        stack, topic, group_id=f"test-{uuid.uuid4().hex}", message_types={topic: pb.DataEvent}
    ) as consumer:
        items: list[Envelope | DecodeFailure] = []
        async for item in consumer:  # the record-by-record interface
            items.append(item)
            if len(items) == 2:
                break
    traced, untraced = items
    assert isinstance(traced, Envelope) and isinstance(untraced, Envelope)
    sent = publish.get_span_context()
    assert traced.headers["traceparent"].startswith(f"00-{sent.trace_id:032x}-".encode())
    assert traced.span_context.trace_id == sent.trace_id
    assert traced.span_context.span_id == sent.span_id and traced.span_context.is_remote
    assert "traceparent" not in untraced.headers and not untraced.span_context.is_valid

    with tracer.start_as_current_span(
        "process", context=traced.trace_context, links=[trace.Link(traced.span_context)]
    ):
        pass
    spans = {s.name: s for s in telemetry.span_exporter.get_finished_spans()}  # type: ignore[union-attr]
    process = spans["process"]
    assert process.context.trace_id == sent.trace_id
    assert process.parent is not None and process.parent.span_id == sent.span_id
    assert process.links[0].context.span_id == sent.span_id


async def test_send_many_keeps_each_key_on_one_partition_in_order(stack: Settings) -> None:
    topic = _unique("many")
    await ensure_topics(stack, [topic], partitions=3)
    keys = [f"user-{i % 17}" for i in range(600)]
    events = [(k, pb.DataEvent(event_id=f"e-{i:04d}", entity_key=k)) for i, k in enumerate(keys)]
    async with create_producer(stack) as producer:
        futures = await producer.send_many(topic, events)
        await asyncio.gather(*futures)
        single = await producer.send_and_wait(topic, pb.DataEvent(event_id="last"), "user-3")
    async with create_consumer(stack, topic, group_id=f"test-{uuid.uuid4().hex}") as consumer:
        got = await _consume(consumer, len(events) + 1)
    assert not got.failures
    partitions: dict[str, set[int]] = {}
    seen: dict[str, list[str]] = {}
    for envelope in sorted(got.envelopes, key=lambda e: (e.partition, e.offset)):
        partitions.setdefault(envelope.key_str or "", set()).add(envelope.partition)
        seen.setdefault(envelope.key_str or "", []).append(envelope.message.event_id)  # type: ignore[attr-defined]
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # spread, not one partition
    # send() and send_many() partition a key the same way, and each key keeps its order.
    assert partitions["user-3"] == {single.partition}
    for key, ids in seen.items():
        expected = [m.event_id for k, m in events if k == key] + (
            ["last"] if key == "user-3" else []
        )
        assert ids == expected
