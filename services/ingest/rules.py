"""The validation rules, as array operations over one dataset's batch (`EventColumns`).

`evaluate_rules` yields one `Flag` per rule and field that fires: the rows it rejects,
the field each row is blamed on, and a message built only for those rows, so the cost of
a clean batch is a handful of vectorised comparisons per feature.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.datasets.schema import CategoricalFeature, DatasetSchema
from services.ingest.decode.columns import EventColumns

__all__ = ["Code", "Flag", "evaluate_rules"]

# Integers travel as proto doubles; beyond 2^53 a double no longer holds every integer.
_INT_LIMIT = float(2**53)


class Code(StrEnum):
    """Machine-readable rejection reason codes (`RejectionReason.code`)."""

    DECODE_ERROR = "decode_error"
    UNKNOWN_DATASET = "unknown_dataset"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    NOT_FINITE = "not_finite"
    UNKNOWN_CATEGORY = "unknown_category"
    CARDINALITY_EXCEEDED = "cardinality_exceeded"
    EVENT_TIME_FUTURE = "event_time_future"
    EVENT_TIME_TOO_OLD = "event_time_too_old"
    DUPLICATE_EVENT_ID = "duplicate_event_id"


@dataclass(frozen=True)
class Flag:
    code: Code
    rows: np.ndarray  # batch-local row numbers (int64)
    fields: list[str]  # aligned with rows
    messages: list[str]


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flag(code: Code, mask: np.ndarray, fld: str, message: Callable[[int], str]) -> list[Flag]:
    """One flag for the rows in `mask`, with messages built for those rows only."""
    rows = np.flatnonzero(mask)
    if not rows.size:
        return []
    return [Flag(code, rows, [fld] * rows.size, [message(int(r)) for r in rows])]


def _bounds(low: float | None, high: float | None) -> str:
    return f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"


def _value_flags(
    fld: str, v: np.ndarray, present: np.ndarray, low: float | None, high: float | None
) -> list[Flag]:
    """not_finite, then out_of_range against the inclusive [low, high] (None = unbounded)."""
    finite = np.isfinite(v)
    flags = _flag(Code.NOT_FINITE, present & ~finite, fld, lambda r: f"value is {v[r]}")
    out = np.zeros_like(present)
    if low is not None:
        out |= present & finite & (v < low)
    if high is not None:
        out |= present & finite & (v > high)
    range_text = _bounds(low, high)
    flags += _flag(Code.OUT_OF_RANGE, out, fld, lambda r: f"{v[r]:g} is outside {range_text}")
    return flags


def _numeric_flags(
    name: str, schema: DatasetSchema, c: EventColumns, sent_wrong: np.ndarray
) -> list[Flag]:
    spec, v, present = schema.numeric[name], c.numeric[name], c.numeric_present[name]
    flags: list[Flag] = []
    if not spec.nullable:
        absent = ~present & ~sent_wrong
        flags += _flag(Code.MISSING_FIELD, absent, name, lambda r: "required feature is absent")
    low, high = spec.min, spec.max
    if spec.dtype == "int":
        fractional = present & np.isfinite(v) & (v != np.round(v))
        flags += _flag(
            Code.WRONG_TYPE, fractional, name, lambda r: f"expected an integer, got {v[r]:g}"
        )
        low = -_INT_LIMIT if low is None else max(low, -_INT_LIMIT)
        high = _INT_LIMIT if high is None else min(high, _INT_LIMIT)
    return flags + _value_flags(name, v, present, low, high)


def _categorical_flags(
    name: str, spec: CategoricalFeature, col: pa.Array, sent_wrong: np.ndarray
) -> list[Flag]:
    present = col.is_valid().to_numpy(zero_copy_only=False)
    flags: list[Flag] = []
    if not spec.nullable:
        absent = ~present & ~sent_wrong
        flags += _flag(Code.MISSING_FIELD, absent, name, lambda r: "required feature is absent")
    if spec.domain is not None:
        inside = pc.is_in(col, value_set=pa.array(spec.domain, pa.string()))
        outside = present & ~inside.to_numpy(zero_copy_only=False)
        size = len(spec.domain)
        flags += _flag(
            Code.UNKNOWN_CATEGORY,
            outside,
            name,
            lambda r: f"{_short(col[r].as_py())} is not one of the {size} declared values",
        )
    return flags


def _cardinality_flags(
    name: str, cap: int, col: pa.Array, ok: np.ndarray, known: Collection[str]
) -> list[Flag]:
    """Admit at most `cap - len(known)` new values, most frequent first (ties by value),
    so which rows are refused does not depend on the order of records in the batch.
    Only otherwise-valid rows compete for a slot."""
    known_values = pa.array(sorted(set(known)), pa.string())
    is_known = pc.is_in(col, value_set=known_values).to_numpy(zero_copy_only=False)
    new = ok & col.is_valid().to_numpy(zero_copy_only=False) & ~is_known
    if not new.any():
        return []
    counts = pc.value_counts(col.filter(pa.array(new))).flatten()
    ranked = pa.table({"value": counts[0], "count": counts[1]}).sort_by(
        [("count", "descending"), ("value", "ascending")]
    )
    slots = max(cap - len(known_values), 0)
    if ranked.num_rows <= slots:
        return []
    admitted = ranked.column("value").slice(0, slots)
    over = new & ~pc.is_in(col, value_set=admitted).to_numpy(zero_copy_only=False)
    detail = f"{len(known_values)} known + {ranked.num_rows} new values in this batch"
    return _flag(
        Code.CARDINALITY_EXCEEDED,
        over,
        name,
        lambda r: f"{_short(col[r].as_py())} exceeds max_cardinality {cap} ({detail})",
    )


def _stray_flags(
    schema: DatasetSchema, c: EventColumns, sent_wrong: dict[str, np.ndarray]
) -> list[Flag]:
    """Map entries not declared in their map: wrong_type if declared in the other map
    (marked in `sent_wrong` so the feature is not also reported missing), else unknown."""
    flags: list[Flag] = []
    kinds = {"numeric": "categorical", "categorical": "numeric"}
    for (rows, keys), sent_as, other in (
        (c.stray_numeric, "numeric", schema.categorical),
        (c.stray_categorical, "categorical", schema.numeric),
    ):
        wrong = np.fromiter((k in other for k in keys), dtype=bool, count=len(keys))
        for row, key in zip(rows[wrong].tolist(), keys[wrong].tolist(), strict=True):
            sent_wrong[key][row] = True
        for code, mask, text in (
            (Code.WRONG_TYPE, wrong, f"declared {kinds[sent_as]}, sent as {sent_as}"),
            (Code.UNKNOWN_FIELD, ~wrong, f"sent as {sent_as}, not declared by {schema.name!r}"),
        ):
            if mask.any():
                fields = [k[:200] for k in keys[mask].tolist()]
                flags.append(Flag(code, rows[mask], fields, [text] * len(fields)))
    return flags


def _time_flags(schema: DatasetSchema, c: EventColumns, now_ms: int) -> list[Flag]:
    t, spec = c.event_time_ms, schema.event_time
    unset = t == 0  # proto3 cannot tell 0 from unset, and 1970-01-01 is never a real time
    fld = "event_time_ms"
    return [
        *_flag(Code.MISSING_FIELD, unset, fld, lambda r: "event time is not set"),
        *_flag(
            Code.EVENT_TIME_FUTURE,
            t > now_ms + spec.max_future_skew_ms,
            fld,
            lambda r: (
                f"{(int(t[r]) - now_ms) / 1000:.1f}s ahead of the ingest clock "
                f"(limit {spec.max_future_skew_s}s)"
            ),
        ),
        *_flag(
            Code.EVENT_TIME_TOO_OLD,
            ~unset & (t < now_ms - spec.max_age_ms),
            fld,
            lambda r: f"{(now_ms - int(t[r])) / 1000:.0f}s old (limit {spec.max_age_s}s)",
        ),
    ]


def _label_flags(schema: DatasetSchema, c: EventColumns) -> list[Flag]:
    has, v = c.has_label, c.label
    if schema.label is None:
        return _flag(Code.UNKNOWN_FIELD, has, "label", lambda r: "the dataset declares no label")
    if schema.label.kind == "numeric":
        return _value_flags("label", v, has, schema.label.min, schema.label.max)
    flags = _flag(Code.NOT_FINITE, has & ~np.isfinite(v), "label", lambda r: f"value is {v[r]}")
    not_binary = has & np.isfinite(v) & (v != 0.0) & (v != 1.0)
    return flags + _flag(
        Code.OUT_OF_RANGE, not_binary, "label", lambda r: f"a binary label is 0 or 1, got {v[r]:g}"
    )


def _rejected(flags: list[Flag], n: int) -> np.ndarray:
    bad = np.zeros(n, dtype=bool)
    for flag in flags:
        bad[flag.rows] = True
    return bad


def evaluate_rules(
    schema: DatasetSchema,
    c: EventColumns,
    now_ms: int,
    seen_event_ids: Collection[str] = (),
    known_categories: Mapping[str, Collection[str]] | None = None,
) -> list[Flag]:
    """Every rule that fires, in a fixed order; a row is accepted iff no flag names it.

    Cardinality and duplicates run last and only over rows nothing else rejected: a
    broken record neither takes a category slot nor shadows a valid record's event id.
    """
    empty = pc.equal(c.event_id, "").to_numpy(zero_copy_only=False)
    no_key = pc.equal(c.entity_key, "").to_numpy(zero_copy_only=False)
    flags = [
        *_flag(Code.MISSING_FIELD, empty, "event_id", lambda r: "event id is empty"),
        *_flag(Code.MISSING_FIELD, no_key, "entity_key", lambda r: "entity key is empty"),
        *_time_flags(schema, c, now_ms),
    ]
    sent_wrong = {name: np.zeros(c.n, dtype=bool) for name in schema.feature_names}
    flags += _stray_flags(schema, c, sent_wrong)
    for name in schema.feature_names:
        if name in schema.numeric:
            flags += _numeric_flags(name, schema, c, sent_wrong[name])
        else:
            spec = schema.categorical[name]
            flags += _categorical_flags(name, spec, c.categorical[name], sent_wrong[name])
    flags += _label_flags(schema, c)

    ok = ~_rejected(flags, c.n)
    for name, spec in sorted(schema.categorical.items()):
        if spec.max_cardinality is not None:
            known = (known_categories or {}).get(name, ())
            col = c.categorical[name]
            flags += _cardinality_flags(name, spec.max_cardinality, col, ok, known)
    ok &= ~_rejected(flags, c.n)
    return flags + _duplicate_flags(c.event_id, ok, seen_event_ids)


def _duplicate_flags(ids: pa.Array, ok: np.ndarray, seen: Collection[str]) -> list[Flag]:
    """Among otherwise-valid rows: ids accepted before this batch, then repeats within it
    (the first occurrence in batch order is kept)."""
    fld = "event_id"
    earlier = np.zeros_like(ok)
    if len(seen) and isinstance(seen, AbstractSet):  # hashed already: look the batch up
        rows = np.flatnonzero(ok)
        found = map(seen.__contains__, ids.take(pa.array(rows)).to_pylist())
        earlier[rows] = np.fromiter(found, dtype=bool, count=rows.size)
    elif len(seen):
        value_set = pa.array(list(seen), pa.string())
        earlier = ok & pc.is_in(ids, value_set=value_set).to_numpy(zero_copy_only=False)
    flags = _flag(Code.DUPLICATE_EVENT_ID, earlier, fld, lambda r: "accepted in an earlier batch")
    candidates = np.flatnonzero(ok & ~earlier)
    codes = pc.dictionary_encode(ids.take(pa.array(candidates))).indices
    _, first = np.unique(codes.to_numpy(zero_copy_only=False), return_index=True)
    repeat = np.ones(candidates.size, dtype=bool)
    repeat[first] = False
    mask = np.zeros_like(ok)
    mask[candidates[repeat]] = True
    return flags + _flag(
        Code.DUPLICATE_EVENT_ID, mask, fld, lambda r: "repeats an earlier record in this batch"
    )
