"""Validate a batch of data events against their declared schemas, vectorised.

The batch is first turned into flat columns (`FlatEvents`): straight from the Kafka
payloads by `wire.decode_flat` (`validate_payloads`, the ingest loop's path), or from
decoded `DataEvent`s (`validate_batch`, for callers that hold messages, such as the HTTP
API); both give the same result. Every rule after that is an array operation over the
whole batch, so the cost per record stays flat as rules are added. Each input record
ends up either as one row of its dataset's canonical table or as one `Rejection`
listing every reason code that applies, indexed by its position in the input, so the
caller can dead-letter it with its original bytes. Nothing is dropped silently:
`accepted_count + rejected_count == total` always.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftloop.v1.events_pb2 import DataEvent, RejectionReason
from services.common.datasets.schema import DatasetSchema
from services.ingest.decode.columns import (
    EventColumns,
    FlatEvents,
    columns_from_events,
    columns_from_flat,
    flat_from_events,
)
from services.ingest.decode.wire import Undecodable, decode_events, decode_flat
from services.ingest.rules import Code, Flag, evaluate_rules

__all__ = [
    "AcceptedRows",
    "Code",
    "DatasetContext",
    "EventColumns",
    "Reason",
    "Rejection",
    "Undecodable",
    "ValidationResult",
    "columns_from_events",
    "decode_events",
    "validate_batch",
    "validate_flat",
    "validate_payloads",
]


@dataclass(frozen=True)
class Reason:
    code: Code
    field: str  # offending field ("" when the record as a whole is bad)
    message: str

    def to_proto(self) -> RejectionReason:
        return RejectionReason(code=str(self.code), field=self.field, message=self.message)


@dataclass(frozen=True)
class Rejection:
    """Why input record `index` was rejected (reasons in rule order, never empty)."""

    index: int
    reasons: tuple[Reason, ...]
    dataset: str = ""  # when the record could be decoded
    event_id: str = ""

    @property
    def codes(self) -> list[str]:
        return [str(r.code) for r in self.reasons]


@dataclass(frozen=True)
class DatasetContext:
    """What the caller knows beyond this batch, per dataset.

    `seen_event_ids`: ids already accepted earlier (sealed or pending); a record reusing
    one is a `duplicate_event_id`. `known_categories`: per open-domain feature, values
    already accepted; they do not count against `max_cardinality` again.
    """

    seen_event_ids: Collection[str] = frozenset()
    known_categories: Mapping[str, Collection[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class AcceptedRows:
    dataset: str
    table: pa.Table  # canonical layout: DatasetSchema.arrow_schema()
    indices: np.ndarray  # input position of each table row (int64, row-aligned)


@dataclass(frozen=True)
class ValidationResult:
    total: int
    accepted: dict[str, AcceptedRows]  # by dataset; only datasets with accepted rows
    rejected: list[Rejection]  # sorted by index

    @property
    def accepted_count(self) -> int:
        return sum(a.table.num_rows for a in self.accepted.values())

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)

    @property
    def reason_counts(self) -> dict[str, int]:
        """Rejected records per reason code (a record counts once per distinct code)."""
        counts: Counter[str] = Counter()
        for rejection in self.rejected:
            counts.update(set(rejection.codes))
        return dict(sorted(counts.items()))


def validate_payloads(
    payloads: Sequence[bytes | None],
    schemas: Mapping[str, DatasetSchema],
    now_ms: int,
    contexts: Mapping[str, DatasetContext] | None = None,
) -> ValidationResult:
    """`validate_batch` of Kafka record values, decoded column-wise (`wire.decode_flat`):
    the same result as `validate_batch(decode_events(payloads), ...)`, several times faster."""
    return validate_flat(decode_flat(payloads), schemas, now_ms, contexts)


def validate_batch(
    records: Sequence[DataEvent | Undecodable],
    schemas: Mapping[str, DatasetSchema],
    now_ms: int,
    contexts: Mapping[str, DatasetContext] | None = None,
) -> ValidationResult:
    """Validate `records` (mixed datasets) at ingest time `now_ms` (epoch ms)."""
    flat = flat_from_events([r if isinstance(r, DataEvent) else None for r in records])
    errors = {i: r.error for i, r in enumerate(records) if isinstance(r, Undecodable)}
    return validate_flat(replace(flat, errors=errors), schemas, now_ms, contexts)


def validate_flat(
    flat: FlatEvents,
    schemas: Mapping[str, DatasetSchema],
    now_ms: int,
    contexts: Mapping[str, DatasetContext] | None = None,
) -> ValidationResult:
    """Record-level failures (undecodable, no or unknown dataset) are settled here; the rest
    are grouped by dataset and checked column-wise by `services.ingest.rules`."""
    rejected = [
        Rejection(i, (Reason(Code.DECODE_ERROR, "", error),)) for i, error in flat.errors.items()
    ]
    decoded = np.ones(flat.n, dtype=bool)
    decoded[list(flat.errors)] = False
    encoded = flat.dataset.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    groups: dict[str, np.ndarray] = {}
    for code, name in enumerate(encoded.dictionary.to_pylist()):
        positions = np.flatnonzero((codes == code) & decoded)
        if not positions.size:
            continue
        if name in schemas:
            groups[name] = positions
            continue
        ids = flat.event_id.take(pa.array(positions)).to_pylist()
        if not name:
            reason = Reason(Code.MISSING_FIELD, "dataset", "dataset is empty")
        else:
            message = f"no dataset named {name[:100]!r} is declared"
            reason = Reason(Code.UNKNOWN_DATASET, "dataset", message)
        rejected += [
            Rejection(int(i), (reason,), name, e) for i, e in zip(positions, ids, strict=True)
        ]

    accepted: dict[str, AcceptedRows] = {}
    for name, positions in groups.items():
        context = (contexts or {}).get(name, DatasetContext())
        subset = flat if positions.size == flat.n else flat.take(positions)
        rows, rejections = _validate_dataset(schemas[name], subset, positions, now_ms, context)
        if rows.table.num_rows:
            accepted[name] = rows
        rejected.extend(rejections)
    rejected.sort(key=lambda r: r.index)
    return ValidationResult(total=flat.n, accepted=accepted, rejected=rejected)


def _validate_dataset(
    schema: DatasetSchema,
    flat: FlatEvents,
    positions: np.ndarray,
    now_ms: int,
    context: DatasetContext,
) -> tuple[AcceptedRows, list[Rejection]]:
    columns = columns_from_flat(schema, flat)
    flags = evaluate_rules(
        schema, columns, now_ms, context.seen_event_ids, context.known_categories
    )
    bad = np.zeros(columns.n, dtype=bool)
    for flag in flags:
        bad[flag.rows] = True
    keep = np.flatnonzero(~bad)
    return (
        AcceptedRows(schema.name, _accepted_table(schema, columns, keep), positions[keep]),
        _rejections(schema.name, flags, columns, positions),
    )


def _rejections(
    dataset: str, flags: list[Flag], columns: EventColumns, positions: np.ndarray
) -> list[Rejection]:
    by_row: dict[int, list[Reason]] = {}
    for flag in flags:  # rule order, so each record's reasons come out in rule order
        for row, fld, message in zip(flag.rows.tolist(), flag.fields, flag.messages, strict=True):
            by_row.setdefault(row, []).append(Reason(flag.code, fld, message))
    return [
        Rejection(int(positions[row]), tuple(reasons), dataset, columns.event_id[row].as_py())
        for row, reasons in by_row.items()
    ]


def _accepted_table(schema: DatasetSchema, columns: EventColumns, keep: np.ndarray) -> pa.Table:
    take = pa.array(keep, type=pa.int64())
    arrays: list[pa.Array] = [
        columns.event_id.take(take),
        columns.entity_key.take(take),
        pa.array(columns.event_time_ms[keep], type=pa.int64()),
    ]
    for name in schema.feature_names:
        if name in schema.numeric:
            values, present = columns.numeric[name][keep], columns.numeric_present[name][keep]
            if schema.numeric[name].dtype == "int":
                # Validation proved present values integral and within ±2^53, so exact.
                ints = np.where(present, values, 0.0).astype(np.int64)
                arrays.append(pa.array(ints, type=pa.int64(), mask=~present))
            else:
                arrays.append(pa.array(values, type=pa.float64(), mask=~present))
        else:
            arrays.append(pc.take(columns.categorical[name], take))
    if schema.label is not None:
        arrays.append(
            pa.array(columns.label[keep], type=pa.float64(), mask=~columns.has_label[keep])
        )
    return pa.Table.from_arrays(arrays, schema=schema.arrow_schema())
