"""Pure Kafka helpers: headers, protobuf (de)serialisation, decode failures, trace context,
partitioning, the faust codec. No broker: records are built in memory."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from driftloop.v1 import events_pb2 as pb
from services.common import telemetry as telemetry_module
from services.common.faust_codec import ProtobufCodec, ProtobufCodecError
from services.common.kafka_serde import (
    CONTENT_TYPE,
    DecodeFailure,
    Envelope,
    KeyPartitioner,
    MessageDecodeError,
    MessageResolver,
    build_headers,
    decode_record,
    murmur2,
    parse_headers,
    schema_name,
)
from services.common.settings import TopicNames, load_settings
from services.common.telemetry import (
    Telemetry,
    build_telemetry,
    extract_grpc_metadata,
    extract_kafka_headers,
    inject_grpc_metadata,
    setup_telemetry,
)
from services.common.topics import TOPIC_MESSAGES

NAMES = TopicNames()

# One realistic, fully populated message per topic type (maps, repeated, enums, optional).
SAMPLES: dict[str, Message] = {
    "data_events": pb.DataEvent(
        event_id="e-1",
        dataset="loans",
        entity_key="user-7",
        event_time_ms=1_700_000_000_000,
        numeric={"income": 52_000.5, "age": 41.0},
        categorical={"country": "DE"},
        label=1.0,
        source="app",
    ),
    "data_rejected": pb.RejectedEvent(
        source_topic="data.events",
        source_partition=2,
        source_offset=99,
        original_key=b"user-7",
        original_value=b"\x00\xff",
        reasons=[pb.RejectionReason(code="out_of_range", field="age", message="age < 0")],
        dataset="loans",
        event_id="e-1",
        service="ingest",
        rejected_at_ms=1,
    ),
    "datasets_versions": pb.DatasetVersion(
        dataset="loans",
        version_id="sha256:ab",
        parent_version_id="sha256:aa",
        row_count=10,
        features=[
            pb.FeatureStats(
                name="age",
                kind="numeric",
                count=10,
                bin_edges=[0, 50, 99],
                bin_counts=[4, 6],
                category_counts={},
            )
        ],
        source_offsets=[
            pb.OffsetRange(topic="data.events", partition=0, first_offset=0, last_offset=9)
        ],
        status="ok",
        storage_uri="file:///d.parquet",
    ),
    "labels_feedback": pb.LabelEvent(label_id="l-1", request_id="r-1", outcome=1.0),
    "predictions_log": pb.PredictionLog(
        request_id="r-1",
        model="loans",
        version="3",
        variant="canary",
        shadow=True,
        numeric={"age": 41.0},
        score=0.83,
        latency_ms=2.5,
        bucket=9_999,
    ),
    "drift_events": pb.DriftEvent(
        event_id="d-1",
        metric="psi",
        feature="age",
        value=0.31,
        threshold=0.2,
        severity=pb.SEVERITY_CRITICAL,
    ),
    "experiments_events": pb.ExperimentEvent(
        event_id="x-1",
        experiment="exp",
        variants=[pb.VariantResult(variant="a", requests=5)],
        effect=0.02,
        guardrail_breaches=["latency"],
        decision=pb.EXPERIMENT_DECISION_PROMOTE,
    ),
    "models_events": pb.ModelEvent(
        event_id="m-1",
        model="loans",
        version="3",
        type=pb.MODEL_EVENT_TYPE_PROMOTED,
        attributes={"k": "v"},
    ),
}


def _record(
    topic: str,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    key: bytes | None = b"user-7",
    offset: int = 41,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=2,
        offset=offset,
        timestamp=1_700_000_000_123,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value or b""),
        headers=tuple(headers),
    )


@pytest.fixture()
def telemetry() -> Iterator[Telemetry]:
    tel = build_telemetry(load_settings(telemetry_exporter="memory", service_name="unit"))
    yield tel
    tel.shutdown()


def test_samples_cover_every_topic() -> None:
    assert set(SAMPLES) == set(TOPIC_MESSAGES)
    for field, sample in SAMPLES.items():
        assert type(sample) is TOPIC_MESSAGES[field]


@pytest.mark.parametrize("field", sorted(TOPIC_MESSAGES))
def test_round_trip_of_every_topic_message(field: str) -> None:
    message = SAMPLES[field]
    topic = getattr(NAMES, field)
    headers = build_headers(type(message))
    assert parse_headers(headers) == {
        "content-type": CONTENT_TYPE.encode(),
        "schema": f"driftloop.v1.{type(message).__name__}".encode(),
    }  # no span is active: no traceparent
    got = decode_record(
        _record(topic, message.SerializeToString(), headers), MessageResolver.for_topics(NAMES)
    )
    assert isinstance(got, Envelope)
    assert got.message == message and type(got.message) is type(message)
    assert (got.topic, got.partition, got.offset, got.key) == (topic, 2, 41, b"user-7")
    assert got.timestamp_ms == 1_700_000_000_123 and got.key_str == "user-7"
    assert got.schema == schema_name(message)
    assert not got.span_context.is_valid  # nothing to continue


def test_parse_headers_last_value_wins_and_handles_none() -> None:
    assert parse_headers([("a", b"1"), ("b", b"2"), ("a", b"3")]) == {"a": b"3", "b": b"2"}
    assert parse_headers(None) == {} and parse_headers(()) == {}


def test_traceparent_injected_from_the_active_span_and_extracted(telemetry: Telemetry) -> None:
    with telemetry.tracer("test").start_as_current_span("produce") as span:
        headers = build_headers(pb.DataEvent)
    ctx = span.get_span_context()
    values = parse_headers(headers)
    want = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    assert values["traceparent"] == want.encode()
    assert "tracestate" not in values  # the span has none

    envelope = decode_record(
        _record(NAMES.data_events, SAMPLES["data_events"].SerializeToString(), headers),
        MessageResolver.for_topics(NAMES),
    )
    assert isinstance(envelope, Envelope)
    remote = envelope.span_context
    assert (remote.trace_id, remote.span_id, remote.is_remote) == (ctx.trace_id, ctx.span_id, True)
    # A consumer-side span started in that context is the producer span's child.
    with telemetry.tracer("test").start_as_current_span("consume", context=envelope.trace_context):
        pass
    spans = {s.name: s for s in telemetry.span_exporter.get_finished_spans()}  # type: ignore[union-attr]
    assert spans["consume"].context.trace_id == ctx.trace_id
    assert spans["consume"].parent is not None and spans["consume"].parent.span_id == ctx.span_id


def test_tracestate_travels_with_traceparent() -> None:
    parent = SpanContext(
        trace_id=0x1234,
        span_id=0x99,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    headers = parse_headers(build_headers(pb.LabelEvent, ctx))
    assert headers["traceparent"] == b"00-" + f"{0x1234:032x}-{0x99:016x}-01".encode()
    assert headers["tracestate"] == b"vendor=v1"
    back = trace.get_current_span(extract_kafka_headers(list(headers.items())))
    assert back.get_span_context().trace_state.get("vendor") == "v1"


def test_grpc_metadata_carries_the_trace_context(telemetry: Telemetry) -> None:
    with telemetry.tracer("test").start_as_current_span("call") as span:
        metadata = inject_grpc_metadata([("x-request-id", "r-1")])
    assert ("x-request-id", "r-1") in metadata
    assert all(key == key.lower() for key, _ in metadata)
    remote = trace.get_current_span(extract_grpc_metadata(metadata)).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
    assert not trace.get_current_span(extract_grpc_metadata(None)).get_span_context().is_valid


def test_malformed_payload_gives_a_typed_failure_naming_everything() -> None:
    record = _record(NAMES.data_events, b"\x0a\xff", build_headers(pb.DataEvent), offset=7)
    failure = decode_record(record, MessageResolver.for_topics(NAMES))
    assert isinstance(failure, DecodeFailure)
    assert failure.reason == "decode_error"
    assert failure.expected_schema == "driftloop.v1.DataEvent"
    assert (failure.topic, failure.partition, failure.offset) == ("data.events", 2, 7)
    assert failure.value == b"\x0a\xff" and failure.key == b"user-7"
    text = str(failure)
    assert "data.events[2]@7" in text and "driftloop.v1.DataEvent" in text
    assert "protobuf parse failed" in text
    error = failure.as_error()
    assert isinstance(error, MessageDecodeError) and error.offset == 7 and str(error) == text
    rejected = failure.to_rejected("ingest")
    assert rejected.original_value == b"\x0a\xff" and rejected.source_offset == 7
    assert rejected.reasons[0].code == "decode_error" and rejected.service == "ingest"


@pytest.mark.parametrize(
    ("topic", "headers", "value", "reason"),
    [
        # A LabelEvent announced on the DataEvent topic: refuse, even if the bytes parse.
        ("data.events", [("schema", b"driftloop.v1.LabelEvent")], b"", "schema_mismatch"),
        ("other.topic", [("schema", b"acme.v1.Thing")], b"", "unknown_schema"),
        ("other.topic", [], b"", "unknown_topic"),
        ("data.events", [("content-type", b"application/json")], b"{}", "wrong_content_type"),
        ("data.events", [], None, "empty_value"),
    ],
)
def test_records_that_are_not_what_they_claim_are_failures(
    topic: str, headers: list[tuple[str, bytes]], value: bytes | None, reason: str
) -> None:
    got = decode_record(_record(topic, value, headers), MessageResolver.for_topics(NAMES))
    assert isinstance(got, DecodeFailure) and got.reason == reason
    assert topic in str(got)


def test_schema_header_decodes_a_topic_without_declared_type() -> None:
    label = SAMPLES["labels_feedback"]
    got = decode_record(
        _record("team.custom", label.SerializeToString(), build_headers(pb.LabelEvent)),
        MessageResolver.for_topics(NAMES),
    )
    assert isinstance(got, Envelope) and got.message == label


def test_headerless_record_uses_the_topic_type_and_overrides() -> None:
    resolver = MessageResolver.for_topics(NAMES, {"echo.out": pb.PredictionLog})
    log = SAMPLES["predictions_log"]
    for topic in ("predictions.log", "echo.out"):
        got = decode_record(_record(topic, log.SerializeToString(), []), resolver)
        assert isinstance(got, Envelope) and got.message == log


def test_partitioner_matches_aiokafka_and_the_java_client() -> None:
    rng = random.Random(3)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(3000)]
    assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys]
    ours, theirs, parts = KeyPartitioner(), DefaultPartitioner(), list(range(7))
    assert [ours(k, parts, parts) for k in keys] == [theirs(k, parts, parts) for k in keys]
    assert ours(b"user-7", parts, parts) == ours(b"user-7", parts, parts)  # memoised, stable
    assert ours(None, parts, [3]) == 3  # keyless: an available partition


def test_faust_codec_round_trip_and_clear_errors() -> None:
    codec = ProtobufCodec(pb.DataEvent)
    event = SAMPLES["data_events"]
    assert codec.loads(codec.dumps(event)) == event
    assert codec.clone().loads(event.SerializeToString()) == event  # faust clones codecs
    with pytest.raises(ProtobufCodecError, match=r"2 bytes are not a valid driftloop\.v1\.Da"):
        codec.loads(b"\x0a\xff")
    with pytest.raises(ProtobufCodecError, match="cannot encode a LabelEvent"):
        codec.dumps(SAMPLES["labels_feedback"])
    with pytest.raises(TypeError, match="needs the message class"):
        ProtobufCodec()


def test_setup_telemetry_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fresh module state, and record instead of setting OpenTelemetry's process globals,
    # so this test leaves the rest of the session untouched.
    monkeypatch.setattr(telemetry_module, "_configured", {})
    monkeypatch.setattr(telemetry_module, "_global_owner", None)
    installed: list[object] = []
    monkeypatch.setattr(telemetry_module.trace, "set_tracer_provider", installed.append)
    monkeypatch.setattr(telemetry_module.metrics, "set_meter_provider", installed.append)

    settings = load_settings(telemetry_exporter="memory", service_name="unit-idem")
    first = setup_telemetry(settings)
    assert setup_telemetry(settings) is first and first.installed_globally
    assert installed == [first.tracer_provider, first.meter_provider]  # once, not twice
    other = setup_telemetry(load_settings(telemetry_exporter="none", service_name="unit-idem"))
    assert other is not first and not other.installed_globally and other.span_exporter is None
    assert len(installed) == 2
    with other.tracer("t").start_as_current_span("s") as span:  # still usable, no crash
        assert span.get_span_context().is_valid
    with first.tracer("t").start_as_current_span("recorded"):
        pass
    assert [s.name for s in first.span_exporter.get_finished_spans()] == ["recorded"]  # type: ignore[union-attr]


def test_otlp_exporter_is_wired_for_production() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    tel = build_telemetry(load_settings(telemetry_exporter="otlp"))
    processors = tel.tracer_provider._active_span_processor._span_processors
    assert [type(p.span_exporter) for p in processors] == [OTLPSpanExporter]  # type: ignore[attr-defined]


def test_without_an_exporter_spans_are_not_recorded_but_the_trace_id_travels_on() -> None:
    """Exporter "none": nothing is kept for nobody, yet a record built inside a request's
    span still carries the caller's trace id."""
    tel = build_telemetry(load_settings(telemetry_exporter="none", service_name="unit-none"))
    caller = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(caller))
    tracer = tel.tracer_provider.get_tracer("unit")
    with tracer.start_as_current_span("request", context=parent) as span:
        assert not span.is_recording()
        headers = build_headers(pb.PredictionLog)
    carried = trace.get_current_span(extract_kafka_headers(headers)).get_span_context()
    assert carried.trace_id == caller.trace_id
    tel.shutdown()
