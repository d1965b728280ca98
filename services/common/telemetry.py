"""OpenTelemetry setup (tracer + meter) and trace-context carriers for Kafka and gRPC.

One call per process, `setup_telemetry(settings)`, picks the exporters from
`settings.telemetry_exporter` (none | console | memory | otlp) and installs the providers
as OpenTelemetry's globals. The W3C trace context travels in Kafka record headers, in
gRPC metadata and in a small dict next to a Serve call's arguments (`trace_carrier`),
through the globally configured propagator (tracecontext + baggage).

Work done once for several requests (a coalesced Serve call, a `@serve.batch` batch)
gets one span, `start_batch_span`: a child of the first request's span and linked to
every request's, OpenTelemetry's idiom for batching (a span has one parent, any links).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind
from opentelemetry.util.types import Attributes

from services.common.settings import Settings

if TYPE_CHECKING:
    import grpc.aio
    from fastapi import FastAPI

__all__ = [
    "KafkaHeaders",
    "Telemetry",
    "TelemetryError",
    "TraceCarrier",
    "build_telemetry",
    "carried_span_context",
    "extract_grpc_metadata",
    "extract_kafka_headers",
    "inject_grpc_metadata",
    "inject_kafka_headers",
    "instrument_fastapi",
    "instrument_grpc_client",
    "instrument_grpc_server",
    "instrument_redis",
    "setup_telemetry",
    "start_batch_span",
    "trace_carrier",
]

_log = logging.getLogger(__name__)

# aiokafka's header shape: a list of (name, value-bytes) pairs; names may repeat.
KafkaHeaders = list[tuple[str, bytes]]
GrpcMetadata = list[tuple[str, str]]
# A Serve call's trace context: `traceparent` (and `tracestate`, `baggage`) -> value.
TraceCarrier = dict[str, str]


class TelemetryError(RuntimeError):
    """Telemetry cannot be set up as configured; the message says what to change."""


@dataclass
class Telemetry:
    """Providers for one configuration; the memory exporter/reader are set for `memory`."""

    service_name: str
    exporter: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    span_exporter: InMemorySpanExporter | None = None
    metric_reader: InMemoryMetricReader | None = None
    installed_globally: bool = field(default=False)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        """Flush and stop the exporters (call once, at process exit)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _otlp_exporters() -> tuple[Any, Any]:
    # Imported here: the gRPC exporter is only needed when a collector is configured
    # (endpoint from OTEL_EXPORTER_OTLP_ENDPOINT, the SDK's standard variable).
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(), OTLPMetricExporter()


def build_telemetry(settings: Settings) -> Telemetry:
    """Fresh providers for `settings`, not installed globally (tests use this directly)."""
    exporter = settings.telemetry_exporter
    resource = Resource.create({SERVICE_NAME: settings.service_name})
    # With nothing to export, spans are not recorded (ALWAYS_OFF): a span still gets its
    # ids, so the caller's trace id travels on in headers, but no attributes or events are
    # kept for nobody (measured at about a tenth of a busy router's CPU). Otherwise the
    # sampler is OpenTelemetry's default, or OTEL_TRACES_SAMPLER's.
    sampler = ALWAYS_OFF if exporter == "none" else None
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    readers: list[MetricReader] = []
    span_exporter: InMemorySpanExporter | None = None
    metric_reader: InMemoryMetricReader | None = None
    processor: SpanProcessor | None = None
    if exporter == "memory":
        span_exporter = InMemorySpanExporter()
        metric_reader = InMemoryMetricReader()
        # Simple (synchronous) so a test sees a span as soon as it ends.
        processor = SimpleSpanProcessor(span_exporter)
        readers.append(metric_reader)
    elif exporter == "console":
        processor = BatchSpanProcessor(ConsoleSpanExporter())
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    elif exporter == "otlp":
        otlp_spans, otlp_metrics = _otlp_exporters()
        processor = BatchSpanProcessor(otlp_spans)
        readers.append(PeriodicExportingMetricReader(otlp_metrics))
    if processor is not None:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(
        service_name=settings.service_name,
        exporter=exporter,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        span_exporter=span_exporter,
        metric_reader=metric_reader,
    )


_lock = threading.Lock()
_configured: dict[tuple[str, str], Telemetry] = {}
_global_owner: Telemetry | None = None


def setup_telemetry(settings: Settings) -> Telemetry:
    """Configure telemetry for this process; calling it again returns the same object.

    OpenTelemetry lets a process set its global providers only once. A second call with a
    *different* configuration therefore returns new providers that are not global (its
    `tracer()` / `meter()` and the instrument helpers still use them) and logs a warning.
    """
    global _global_owner
    key = (settings.service_name, settings.telemetry_exporter)
    with _lock:
        if key in _configured:
            return _configured[key]
        telemetry = build_telemetry(settings)
        if _global_owner is None:
            trace.set_tracer_provider(telemetry.tracer_provider)
            metrics.set_meter_provider(telemetry.meter_provider)
            telemetry.installed_globally = True
            _global_owner = telemetry
        else:
            _log.warning(
                "telemetry already configured in this process (service=%s, exporter=%s); "
                "the new configuration (service=%s, exporter=%s) is not global",
                _global_owner.service_name,
                _global_owner.exporter,
                *key,
            )
        _configured[key] = telemetry
        return telemetry


class _KafkaHeaderSetter(Setter[KafkaHeaders]):
    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        # Replace rather than append: one traceparent per record.
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode("ascii")))


class _KafkaHeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [v.decode("ascii", "replace") for k, v in carrier if k == key and v is not None]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _GrpcMetadataSetter(Setter[GrpcMetadata]):
    def set(self, carrier: GrpcMetadata, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key.lower(), value))  # gRPC requires lower-case metadata keys


class _GrpcMetadataGetter(Getter[Iterable[tuple[str, Any]]]):
    def get(self, carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        values = [
            v if isinstance(v, str) else v.decode("ascii", "replace")
            for k, v in carrier
            if k.lower() == key
        ]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


_KAFKA_SETTER = _KafkaHeaderSetter()
_KAFKA_GETTER = _KafkaHeaderGetter()
_GRPC_SETTER = _GrpcMetadataSetter()
_GRPC_GETTER = _GrpcMetadataGetter()


def inject_kafka_headers(headers: KafkaHeaders, context: Context | None = None) -> KafkaHeaders:
    """Add `traceparent` (and `tracestate`, baggage) of `context` (default: current) in place."""
    propagate.inject(headers, context=context, setter=_KAFKA_SETTER)
    return headers


def extract_kafka_headers(headers: Sequence[tuple[str, bytes]]) -> Context:
    """The trace context carried by a record's headers (empty context when there is none)."""
    return propagate.extract(headers, getter=_KAFKA_GETTER)


def inject_grpc_metadata(
    metadata: Iterable[tuple[str, str]] | None = None, context: Context | None = None
) -> GrpcMetadata:
    """A copy of `metadata` with the trace context added, ready for a gRPC call."""
    carrier: GrpcMetadata = list(metadata or ())
    propagate.inject(carrier, context=context, setter=_GRPC_SETTER)
    return carrier


def extract_grpc_metadata(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    return propagate.extract(list(metadata or ()), getter=_GRPC_GETTER)


def trace_carrier(context: Context | None = None) -> TraceCarrier | None:
    """The trace context of `context` (default: the current one) as a small dict, or None
    when its span is not sampled (or there is none).

    An unsampled span is recorded nowhere downstream (samplers follow the parent), so an
    untraced call, and every call of a process whose exporter is `none` (its spans are
    never sampled), carries nothing and pays one context-variable read."""
    if not trace.get_current_span(context).get_span_context().trace_flags.sampled:
        return None
    carrier: TraceCarrier = {}
    propagate.inject(carrier, context=context)
    return carrier


def carried_span_context(carrier: Mapping[str, str] | None) -> SpanContext | None:
    """The caller's span context in a `trace_carrier` dict; None when there is none."""
    if not carrier:
        return None
    span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


def start_batch_span(
    tracer: trace.Tracer,
    name: str,
    requests: Sequence[SpanContext],
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> AbstractContextManager[trace.Span]:
    """The current span for work done once for `requests` (at least one span context):
    a child of the first request's span, linked to every request's."""
    parent = trace.set_span_in_context(NonRecordingSpan(requests[0]))
    return tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        links=[Link(request) for request in requests],
        attributes=attributes,
    )


def instrument_grpc_server(telemetry: Telemetry) -> grpc.aio.ServerInterceptor:
    """An interceptor for `grpc.aio.server(interceptors=[...])` that traces every call."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor(tracer_provider=telemetry.tracer_provider)


def instrument_grpc_client(telemetry: Telemetry) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for `grpc.aio.insecure_channel(..., interceptors=...)`."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return aio_client_interceptors(tracer_provider=telemetry.tracer_provider)


def instrument_fastapi(app: FastAPI, telemetry: Telemetry) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )


def instrument_redis(telemetry: Telemetry) -> None:
    """Trace every redis-py command (process-wide; a second call is a no-op)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
