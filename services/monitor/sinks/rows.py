"""From decoded Kafka messages to ClickHouse rows, one `TableSpec` per sink table (pure).

Each table names its idempotence key as a SQL expression and the same key computed in
Python (`key_of`), so the writer can ask the store which keys of a batch it already holds
and insert only the others (see sinks/writer.py for why a key check and not FINAL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from driftloop.v1 import events_pb2 as pb
from services.common.kafka_serde import DecodeFailure, Envelope

__all__ = [
    "POSITION_KEY_SQL",
    "REJECTED_SPEC_COLUMNS",
    "SINK_TABLES",
    "Row",
    "TableSpec",
    "keyed_once",
    "rejected_row",
    "spec_for_message",
    "storable_ms",
    "ts",
    "unstorable_row",
]

Row = tuple[Any, ...]


# DateTime64's range; ClickHouse would silently wrap a time outside it.
_MIN_MS, _MAX_MS = -2_208_988_800_000, 10_413_792_000_000  # 1900-01-01, 2300-01-01


def storable_ms(ms: int) -> int:
    """`ms` itself when a DateTime64(3, 'UTC') column can hold it; ValueError outside the
    years 1900-2299."""
    if not _MIN_MS <= ms < _MAX_MS:
        raise ValueError(f"time {ms} ms is outside the years 1900-2299")
    return ms


def ts(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime (DateTime64(3, 'UTC')); ValueError
    outside the years 1900-2299 the column can hold."""
    return datetime.fromtimestamp(storable_ms(ms) / 1000.0, UTC)


_NAME_LISTS: dict[tuple[str, ...], tuple[str, ...]] = {}
_NAME_LISTS_MAX = 4096


def _interned(names: tuple[str, ...]) -> tuple[str, ...]:
    """One shared tuple per distinct feature-name list (a model sends the same few lists
    again and again), so the Arrow conversion can tell a repeated list by identity."""
    found = _NAME_LISTS.get(names)
    if found is None:
        if len(_NAME_LISTS) >= _NAME_LISTS_MAX:
            _NAME_LISTS.clear()
        found = _NAME_LISTS[names] = names
    return found


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]
    key_sql: str  # the idempotence key as a ClickHouse expression over the table's columns
    to_row: Callable[[Envelope], Row]
    key_index: Callable[[Row], str]  # the same key from a row built by `to_row`
    # narrows the key check to the batch's time range; the row holds it as epoch ms
    time_column: str | None = None
    time_index: int = -1

    def key_of(self, row: Row) -> str:
        return self.key_index(row)


def _prediction(env: Envelope) -> Row:
    """The hottest row: its time stays epoch milliseconds and its feature values a float64
    numpy array, so `to_arrow` converts the batch's columns without a Python object per
    value (for 20k rows x 30 features: ~4x less Arrow-building time than datetimes and
    lists, for ~10 % more here); the names are a shared tuple per distinct list."""
    m: pb.PredictionLog = env.message
    # One conversion of each protobuf map; the arrays keep the map's order (the store finds
    # a feature with indexOf, so no order is needed, and sorting costs 2x the conversion).
    numeric = dict(m.numeric)
    categorical = dict(m.categorical)
    return (
        m.request_id,
        storable_ms(m.time_ms or env.timestamp_ms),
        m.model,
        m.version,
        m.variant,
        m.experiment,
        m.shadow,
        m.entity_key,
        m.bucket,
        _interned(tuple(numeric)),
        np.fromiter(numeric.values(), np.float64, len(numeric)),
        list(categorical),
        list(categorical.values()),
        m.score,
        m.latency_ms,
        m.error,
    )


def _label(env: Envelope) -> Row:
    m: pb.LabelEvent = env.message
    # A label without its own id is keyed by what it labels (one outcome per request).
    label_id = m.label_id or f"{m.request_id or m.entity_key}@{m.event_time_ms}"
    return (
        label_id,
        m.request_id,
        m.entity_key,
        m.model,
        m.outcome,
        ts(m.event_time_ms or env.timestamp_ms),
    )


def _dataset_version(env: Envelope) -> Row:
    m: pb.DatasetVersion = env.message
    features = [MessageToDict(f, preserving_proto_field_name=True) for f in m.features]
    return (
        m.dataset,
        m.version_id,
        m.parent_version_id,
        m.row_count,
        m.schema_hash,
        m.status or "ok",
        list(m.status_reasons),
        m.storage_uri,
        m.manifest_uri,
        ts(m.min_event_time_ms),
        ts(m.max_event_time_ms),
        ts(m.created_at_ms or env.timestamp_ms),
        json.dumps(features, sort_keys=True),
    )


def _data_rejected(env: Envelope) -> Row:
    m: pb.RejectedEvent = env.message
    return (
        m.source_topic,
        m.source_partition,
        m.source_offset,
        m.dataset,
        m.event_id,
        m.service,
        [r.code for r in m.reasons],
        [r.field for r in m.reasons],
        [r.message for r in m.reasons],
        m.original_value.decode("utf-8", "backslashreplace"),
        ts(m.rejected_at_ms or env.timestamp_ms),
    )


def _model_event(env: Envelope) -> Row:
    m: pb.ModelEvent = env.message
    return (
        m.event_id,
        m.model,
        m.version,
        pb.ModelEventType.Name(m.type) if m.type in pb.ModelEventType.values() else str(m.type),
        m.alias,
        m.previous_version,
        m.reason,
        m.actor,
        m.traffic_percent,
        m.report_json,
        dict(m.attributes),
        ts(m.created_at_ms or env.timestamp_ms),
    )


def _drift_event(env: Envelope) -> Row:
    m: pb.DriftEvent = env.message
    return (
        m.event_id,
        m.model,
        m.version,
        ts(m.window_start_ms),
        ts(m.window_end_ms),
        m.metric,
        m.feature,
        m.slice,
        m.value,
        m.threshold,
        pb.Severity.Name(m.severity) if m.severity in pb.Severity.values() else str(m.severity),
        m.consecutive_windows,
        ts(m.created_at_ms or env.timestamp_ms),
    )


def _experiment_event(env: Envelope) -> Row:
    m: pb.ExperimentEvent = env.message
    variants = [MessageToDict(v, preserving_proto_field_name=True) for v in m.variants]
    decision = m.decision
    return (
        m.event_id,
        m.experiment,
        m.model,
        ts(m.window_start_ms),
        ts(m.window_end_ms),
        m.control_variant,
        m.treatment_variant,
        m.metric,
        m.effect,
        m.ci_low,
        m.ci_high,
        m.p_value,
        m.significant,
        m.srm_detected,
        m.srm_p_value,
        list(m.guardrail_breaches),
        pb.ExperimentDecision.Name(decision)
        if decision in pb.ExperimentDecision.values()
        else str(decision),
        json.dumps(variants, sort_keys=True),
        ts(m.created_at_ms or env.timestamp_ms),
    )


def _cols(names: str) -> tuple[str, ...]:
    return tuple(names.split())


POSITION_KEY_SQL = (
    "concat(source_topic, '/', toString(source_partition), '/', toString(source_offset))"
)


def _first(row: Row) -> str:
    return str(row[0])


SINK_TABLES: dict[type[Message], TableSpec] = {
    pb.PredictionLog: TableSpec(
        "predictions",
        _cols(
            "request_id time model version variant experiment shadow entity_key bucket "
            "feature_names feature_values category_names category_values score latency_ms "
            "error"
        ),
        # A shadow copy shares its request id with the live answer: both are kept.
        key_sql="concat(request_id, if(shadow, '|s', ''))",
        to_row=_prediction,
        key_index=lambda r: f"{r[0]}|s" if r[6] else str(r[0]),
        time_column="time",
        time_index=1,
    ),
    pb.LabelEvent: TableSpec(
        "labels",
        ("label_id", "request_id", "entity_key", "model", "outcome", "time"),
        key_sql="label_id",
        to_row=_label,
        key_index=_first,
    ),
    pb.DatasetVersion: TableSpec(
        "dataset_versions",
        _cols(
            "dataset version_id parent_version_id row_count schema_hash status "
            "status_reasons storage_uri manifest_uri min_event_time max_event_time "
            "created_at features_json"
        ),
        key_sql="concat(dataset, '/', version_id)",
        to_row=_dataset_version,
        key_index=lambda r: f"{r[0]}/{r[1]}",
    ),
    pb.RejectedEvent: TableSpec(
        "data_rejected",
        _cols(
            "source_topic source_partition source_offset dataset event_id service "
            "reason_codes reason_fields reason_messages original_value rejected_at"
        ),
        # Ingest may dead-letter one undecodable record twice after a crash: its source
        # position is the identity, not the (absent) event id.
        key_sql=POSITION_KEY_SQL,
        to_row=_data_rejected,
        key_index=lambda r: f"{r[0]}/{r[1]}/{r[2]}",
    ),
    pb.ModelEvent: TableSpec(
        "model_events",
        _cols(
            "event_id model version type alias previous_version reason actor "
            "traffic_percent report_json attributes created_at"
        ),
        key_sql="event_id",
        to_row=_model_event,
        key_index=_first,
    ),
    pb.DriftEvent: TableSpec(
        "drift_events",
        _cols(
            "event_id model version window_start window_end metric feature slice value "
            "threshold severity consecutive_windows created_at"
        ),
        key_sql="event_id",
        to_row=_drift_event,
        key_index=_first,
    ),
    pb.ExperimentEvent: TableSpec(
        "experiment_events",
        _cols(
            "event_id experiment model window_start window_end control_variant "
            "treatment_variant metric effect ci_low ci_high p_value significant "
            "srm_detected srm_p_value guardrail_breaches decision variants_json created_at"
        ),
        key_sql="event_id",
        to_row=_experiment_event,
        key_index=_first,
    ),
}

REJECTED_SPEC_COLUMNS = _cols(
    "source_topic source_partition source_offset reason original_key original_value rejected_at"
)


def spec_for_message(message: Message) -> TableSpec | None:
    return SINK_TABLES.get(type(message))


def rejected_row(failure: DecodeFailure, now_ms: int) -> Row:
    """A record the monitor could not decode, keyed by its source position."""
    return (
        failure.topic,
        failure.partition,
        failure.offset,
        f"{failure.reason}: {failure.error}",
        (failure.key or b"").decode("utf-8", "backslashreplace"),
        (failure.value or b"").decode("utf-8", "backslashreplace"),
        ts(now_ms),
    )


def unstorable_row(env: Envelope, reason: str, now_ms: int) -> Row:
    """A decoded record that cannot become a row (e.g. a time outside DateTime64's range)."""
    return (
        env.topic,
        env.partition,
        env.offset,
        f"unstorable: {reason}",
        (env.key or b"").decode("utf-8", "backslashreplace"),
        env.message.SerializeToString().decode("utf-8", "backslashreplace"),
        ts(now_ms),
    )


def keyed_once(spec: TableSpec, rows: Sequence[Row]) -> dict[str, Row]:
    """The first row of each key, by key, in the rows' order (a producer retry can repeat a
    record within a batch)."""
    out: dict[str, Row] = {}
    for row in rows:
        out.setdefault(spec.key_of(row), row)
    return out
