"""Pure helpers of the Kafka factories: protobuf (de)serialisation and record headers.

No I/O here: these functions turn a message into (key, value, headers) and a received
record back into an `Envelope` — or a `DecodeFailure` that says exactly what was wrong,
so a service can dead-letter the record instead of crashing (DESIGN.md §4).
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from google.protobuf.message import DecodeError, Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from driftloop.v1 import events_pb2
from services.common.settings import TopicNames
from services.common.telemetry import KafkaHeaders, extract_kafka_headers, inject_kafka_headers
from services.common.topics import TOPIC_MESSAGES

__all__ = [
    "CONTENT_TYPE",
    "HEADER_CONTENT_TYPE",
    "HEADER_SCHEMA",
    "DecodeFailure",
    "Envelope",
    "KeyPartitioner",
    "MessageDecodeError",
    "MessageResolver",
    "RecordLike",
    "base_headers",
    "build_headers",
    "decode_record",
    "deserialize",
    "encode_key",
    "murmur2",
    "parse_headers",
    "schema_name",
    "serialize",
]

CONTENT_TYPE = "application/x-protobuf"
HEADER_CONTENT_TYPE = "content-type"
HEADER_SCHEMA = "schema"
_CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()


class MessageDecodeError(ValueError):
    """A record's payload is not the protobuf message its topic or schema header promises."""

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        partition: int,
        offset: int,
        expected_schema: str,
        reason: str,
    ) -> None:
        super().__init__(message)
        self.topic, self.partition, self.offset = topic, partition, offset
        self.expected_schema, self.reason = expected_schema, reason


class RecordLike(Protocol):
    """What a received record offers (aiokafka's ConsumerRecord has exactly these)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def schema_name(message: Message | type[Message]) -> str:
    """The full protobuf name, e.g. `driftloop.v1.DataEvent` (the `schema` header)."""
    return message.DESCRIPTOR.full_name


def serialize(message: Message) -> bytes:
    return message.SerializeToString()


def deserialize(value: bytes, message_cls: type[Message]) -> Message:
    """Parse `value`; raises google.protobuf's DecodeError on malformed bytes."""
    return message_cls.FromString(value)


def encode_key(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


_BASE_HEADERS: dict[str, tuple[tuple[str, bytes], ...]] = {}


def base_headers(message_cls: type[Message]) -> tuple[tuple[str, bytes], ...]:
    """content-type + schema for a message class, built once per class."""
    name = schema_name(message_cls)
    headers = _BASE_HEADERS.get(name)
    if headers is None:
        headers = _BASE_HEADERS[name] = (
            (HEADER_CONTENT_TYPE, _CONTENT_TYPE_BYTES),
            (HEADER_SCHEMA, name.encode()),
        )
    return headers


def build_headers(message_cls: type[Message], context: Context | None = None) -> KafkaHeaders:
    """All headers of a record: content-type, schema and the W3C trace context (if any)."""
    headers: KafkaHeaders = list(base_headers(message_cls))
    ctx = context if context is not None else otel_context.get_current()
    if trace.get_current_span(ctx).get_span_context().is_valid:
        inject_kafka_headers(headers, ctx)
    return headers


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 key hash (Java client's Utils.murmur2), the same value as aiokafka's.

    Unpacking whole 32-bit words at once makes it ~2x faster than aiokafka's byte loop.
    """
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for k in struct.unpack_from(f"<{length >> 2}I", data):
        k = (k * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    extra = length & 3
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h = ((h ^ data[tail]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


class KeyPartitioner:
    """aiokafka's DefaultPartitioner (same key -> same partition as every Kafka client),
    with the key hash memoised: entity keys repeat, and hashing was ~10% of a send."""

    def __init__(self, cache_size: int = 65_536) -> None:
        self._hash = lru_cache(maxsize=cache_size)(murmur2)

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[(self._hash(key) & 0x7FFFFFFF) % len(all_partitions)]


def parse_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """Headers as a dict; for a repeated name the last value wins (Kafka's convention)."""
    return dict(headers) if headers else {}


@dataclass(slots=True)
class Envelope:
    """A decoded record. `trace_context` is extracted from the headers on first use."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    message: Message
    headers: dict[str, bytes]
    timestamp_ms: int
    _trace_context: Context | None = field(default=None, repr=False)

    @property
    def schema(self) -> str:
        return schema_name(self.message)

    @property
    def key_str(self) -> str | None:
        return self.key.decode("utf-8", "replace") if self.key is not None else None

    @property
    def trace_context(self) -> Context:
        """The producer's trace context: pass it as `context=` to start a child span."""
        if self._trace_context is None:
            self._trace_context = extract_kafka_headers(list(self.headers.items()))
        return self._trace_context

    @property
    def span_context(self) -> trace.SpanContext:
        """The producer's span (invalid when the record carried none), e.g. for a Link."""
        return trace.get_current_span(self.trace_context).get_span_context()


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """A record that could not be decoded, with everything needed to dead-letter it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int
    expected_schema: str
    reason: str  # machine-readable: decode_error | schema_mismatch | unknown_schema | …
    error: str

    def __str__(self) -> str:
        return (
            f"cannot decode record {self.topic}[{self.partition}]@{self.offset} as "
            f"{self.expected_schema or 'an unknown schema'}: {self.error}"
        )

    def as_error(self) -> MessageDecodeError:
        return MessageDecodeError(
            str(self),
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            expected_schema=self.expected_schema,
            reason=self.reason,
        )

    def to_rejected(self, service: str) -> events_pb2.RejectedEvent:
        """The dead-letter record for `data.rejected` (the original bytes, untouched)."""
        return events_pb2.RejectedEvent(
            source_topic=self.topic,
            source_partition=self.partition,
            source_offset=self.offset,
            original_key=self.key or b"",
            original_value=self.value or b"",
            reasons=[events_pb2.RejectionReason(code=self.reason, message=str(self))],
            service=service,
            rejected_at_ms=int(time.time() * 1000),
        )


class MessageResolver:
    """Which message class a record holds: the topic's declared type, else its schema header."""

    def __init__(
        self, topic_types: Mapping[str, type[Message]], extra_types: Sequence[type[Message]] = ()
    ) -> None:
        self.topic_types = dict(topic_types)
        known = [*TOPIC_MESSAGES.values(), *self.topic_types.values(), *extra_types]
        self.schemas: dict[str, type[Message]] = {schema_name(cls): cls for cls in known}
        # (topic, raw schema header) -> resolve() result; a consumer sees few distinct pairs.
        self._cache: dict[tuple[str, bytes | None], tuple[type[Message] | None, str, str]] = {}

    @classmethod
    def for_topics(
        cls, names: TopicNames, overrides: Mapping[str, type[Message]] | None = None
    ) -> MessageResolver:
        """driftloop's topics (configured names) plus any `topic -> class` overrides."""
        types = {getattr(names, f): m for f, m in TOPIC_MESSAGES.items()}
        return cls({**types, **(overrides or {})})

    def resolve_header(
        self, topic: str, raw_schema: bytes | None
    ) -> tuple[type[Message] | None, str, str]:
        """resolve() for a raw `schema` header value, memoised (it runs once per record)."""
        key = (topic, raw_schema)
        found = self._cache.get(key)
        if found is None:
            schema = raw_schema.decode("utf-8", "replace") if raw_schema is not None else None
            found = self.resolve(topic, schema)
            if len(self._cache) < 10_000:  # bounded: headers are producer-controlled input
                self._cache[key] = found
        return found

    def resolve(self, topic: str, schema: str | None) -> tuple[type[Message] | None, str, str]:
        """(class or None, expected schema name, failure reason or "")."""
        expected = self.topic_types.get(topic)
        if expected is not None:
            name = schema_name(expected)
            if schema and schema != name:
                return None, name, "schema_mismatch"
            return expected, name, ""
        if schema:
            found = self.schemas.get(schema)
            return (found, schema, "") if found is not None else (None, schema, "unknown_schema")
        return None, "", "unknown_topic"


_REASON_TEXT = {
    "schema_mismatch": "the record's schema header is {got!r} but topic {topic!r} carries {want}",
    "unknown_schema": "schema {got!r} is not a known message type",
    "unknown_topic": "topic {topic!r} has no declared message type and the record no schema "
    "header; pass message_types={{topic: MessageClass}}",
}


def decode_record(record: RecordLike, resolver: MessageResolver) -> Envelope | DecodeFailure:
    """Decode one received record; never raises for bad input, returns a DecodeFailure."""
    headers = parse_headers(record.headers)
    raw_schema = headers.get(HEADER_SCHEMA)
    message_cls, expected, reason = resolver.resolve_header(record.topic, raw_schema)
    error = ""
    if reason:
        schema = raw_schema.decode("utf-8", "replace") if raw_schema is not None else None
        error = _REASON_TEXT[reason].format(got=schema, topic=record.topic, want=expected)
    elif (ctype := headers.get(HEADER_CONTENT_TYPE)) not in (None, _CONTENT_TYPE_BYTES):
        reason, error = "wrong_content_type", f"content-type is {ctype!r}, not {CONTENT_TYPE}"
    elif record.value is None:
        reason, error = "empty_value", "the record has no value (a tombstone?)"
    else:
        assert message_cls is not None
        try:
            message = deserialize(record.value, message_cls)
        except DecodeError as exc:
            reason, error = "decode_error", f"protobuf parse failed: {exc}"
        else:
            return Envelope(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                message,
                headers,
                record.timestamp,
            )
    return DecodeFailure(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        headers,
        record.timestamp,
        expected,
        reason,
        error,
    )
