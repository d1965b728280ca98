"""The router's OpenTelemetry instruments (one place, so tests can read them by name)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics

__all__ = ["RouterMetrics"]


@dataclass
class RouterMetrics:
    requests: metrics.Counter
    latency_ms: metrics.Histogram
    batch_rows: metrics.Histogram
    errors: metrics.Counter
    fallbacks: metrics.Counter
    log_dropped: metrics.Counter

    @classmethod
    def create(cls, meter: metrics.Meter | None = None) -> RouterMetrics:
        m = meter or metrics.get_meter("driftloop.router")
        return cls(
            requests=m.create_counter(
                "driftloop.router.requests", unit="{row}", description="rows routed per variant"
            ),
            latency_ms=m.create_histogram(
                "driftloop.router.latency", unit="ms", description="request latency"
            ),
            batch_rows=m.create_histogram(
                "driftloop.router.batch_rows",
                unit="{row}",
                description="rows per coalesced Serve call",
            ),
            errors=m.create_counter(
                "driftloop.router.errors", unit="{error}", description="errors per variant"
            ),
            fallbacks=m.create_counter(
                "driftloop.router.fallbacks",
                unit="{call}",
                description="variant calls that fell back to the control",
            ),
            log_dropped=m.create_counter(
                "driftloop.router.log_dropped",
                unit="{record}",
                description="PredictionLog records dropped (queue or spool full)",
            ),
        )
