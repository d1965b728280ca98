"""Protobuf values for faust-streaming topics (the monitor consumes its topics with faust).

`ProtobufCodec(DataEvent)` turns record bytes into a `DataEvent` and back;
`protobuf_topic(app, name, DataEvent)` declares a faust topic that uses it. Records an
agent publishes should carry the same headers as the factory producer's
(`record_headers(message)`), so any driftloop consumer decodes them by their schema.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.serializers import codecs
from faust.types import EventT
from google.protobuf.message import DecodeError, Message
from opentelemetry.context import Context

from services.common.kafka_serde import build_headers, parse_headers, schema_name
from services.common.telemetry import extract_kafka_headers

__all__ = [
    "ProtobufCodec",
    "ProtobufCodecError",
    "event_trace_context",
    "protobuf_topic",
    "record_headers",
]


class ProtobufCodecError(ValueError):
    """Bytes that are not the expected protobuf message (names the schema and the cause)."""


class ProtobufCodec(codecs.Codec):
    """A faust codec for one protobuf message class."""

    def __init__(
        self,
        message_cls: type[Message] | None = None,
        children: tuple[codecs.CodecT, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        if message_cls is None:
            raise TypeError("ProtobufCodec needs the message class, e.g. ProtobufCodec(DataEvent)")
        # faust's clone() rebuilds a codec as type(self)(children=…, **self.kwargs),
        # so the message class must travel in kwargs.
        super().__init__(children=children, message_cls=message_cls, **kwargs)
        self.message_cls = message_cls
        self.schema = schema_name(message_cls)

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, bytes):  # already encoded (e.g. forwarded as is)
            return obj
        if not isinstance(obj, self.message_cls):
            raise ProtobufCodecError(
                f"ProtobufCodec({self.schema}) cannot encode a {type(obj).__name__}"
            )
        return obj.SerializeToString()

    def _loads(self, s: bytes) -> Message:
        try:
            return self.message_cls.FromString(s)
        except DecodeError as exc:
            raise ProtobufCodecError(
                f"{len(s)} bytes are not a valid {self.schema}: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"ProtobufCodec({self.schema})"


def protobuf_topic(
    app: faust.App, name: str, message_cls: type[Message], **kwargs: Any
) -> faust.TopicT:
    """A faust topic whose values are `message_cls` and whose keys are raw bytes.

    A malformed value makes faust raise ValueDecodeError (carrying ProtobufCodecError's
    message) into the agent's stream after acknowledging the record; faust's supervisor
    restarts the agent, which then continues with the next record.
    """
    return app.topic(
        name,
        key_type=bytes,
        key_serializer="raw",
        value_serializer=ProtobufCodec(message_cls),
        **kwargs,
    )


def record_headers(
    message: Message | type[Message], context: Context | None = None
) -> list[tuple[str, bytes]]:
    """driftloop's headers (content-type, schema, trace context) for `topic.send(headers=…)`."""
    return build_headers(message if isinstance(message, type) else type(message), context)


def event_trace_context(event: EventT) -> Context:
    """The producer's trace context of a faust event (from `stream.events()`)."""
    headers = event.headers or {}
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    return extract_kafka_headers(list(parse_headers(pairs).items()))
