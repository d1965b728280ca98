"""Serialized `DataEvent`s straight to `FlatEvents`, with array operations only.

Building columns from upb messages costs ~10 µs a record, most of it reading the two maps
one entry at a time. This decoder reads the protobuf wire format of a whole batch at
once instead: the payloads are joined into one byte array and walked in lock step, one
field of every record per numpy pass (so ~15 passes for a typical record, whatever the
batch size); strings are cut out of the joined bytes by Arrow and checked for UTF-8 there.

It only accepts what it fully understands: `DataEvent`'s own fields with their own wire
types, single-byte tags, and map entries written key then value (as every protobuf
runtime writes them). A record with anything else — unknown or mistyped fields,
malformed or truncated bytes, invalid UTF-8, a varint longer than 10 bytes, no value at
all — is decoded by upb (`decode_events`) instead, so every record yields exactly the
fields upb would give it, or the same `decode_error`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError

from driftloop.v1.events_pb2 import DataEvent
from services.ingest.columns import FlatEvents, MapEntries, flat_from_events

__all__ = ["Undecodable", "decode_events", "decode_flat"]


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a record whose bytes are not a `DataEvent`."""

    error: str


def decode_events(payloads: Sequence[bytes | None]) -> list[DataEvent | Undecodable]:
    """Parse Kafka record values with upb; a bad or absent value becomes `Undecodable`,
    never raises."""
    out: list[DataEvent | Undecodable] = []
    for payload in payloads:
        if payload is None:
            out.append(Undecodable("record has no value"))
            continue
        event = DataEvent()
        try:
            event.ParseFromString(payload)
        except (DecodeError, ValueError) as exc:
            out.append(Undecodable(str(exc) or "not a driftloop.v1.DataEvent"))
        else:
            out.append(event)
    return out


_VARINT, _I64, _LEN = 0, 1, 2
_PAD = 16  # zero bytes after the joined payloads: a varint read never leaves the array


def _tag(number: int, wire: int) -> int:
    return (number << 3) | wire


_FIELDS = DataEvent.DESCRIPTOR.fields_by_name
_EVENT_ID, _DATASET, _ENTITY_KEY, _SOURCE = (
    _tag(_FIELDS[name].number, _LEN) for name in ("event_id", "dataset", "entity_key", "source")
)
_EVENT_TIME = _tag(_FIELDS["event_time_ms"].number, _VARINT)
_NUMERIC = _tag(_FIELDS["numeric"].number, _LEN)
_CATEGORICAL = _tag(_FIELDS["categorical"].number, _LEN)
_LABEL = _tag(_FIELDS["label"].number, _I64)
_STRINGS = (_EVENT_ID, _DATASET, _ENTITY_KEY, _SOURCE)
_KEY, _DOUBLE_VALUE, _STRING_VALUE = _tag(1, _LEN), _tag(2, _I64), _tag(2, _LEN)
assert max(*_STRINGS, _EVENT_TIME, _NUMERIC, _CATEGORICAL, _LABEL) < 0x80, "one-byte tags"

_WIRE = np.full(256, -1, dtype=np.int8)  # tag byte -> wire type (-1: not ours)
for _t in (*_STRINGS, _NUMERIC, _CATEGORICAL, _EVENT_TIME, _LABEL):
    _WIRE[_t] = _t & 7


def _varints(buf: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value (uint64, bits past 64 dropped as upb does) and length of the varint at each
    position; length 0 for one that does not end within 10 bytes."""
    byte = buf[at]
    value = (byte & 0x7F).astype(np.uint64)
    size = np.ones(at.size, dtype=np.int64)
    more = np.flatnonzero(byte & 0x80)
    for k in range(1, 10):
        if not more.size:
            return value, size
        byte = buf[at[more] + k]
        value[more] |= (byte & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        size[more] += 1
        more = more[(byte & 0x80) != 0]
    size[more] = 0
    return value, size


def _walk(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, bad: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Lock step over the records: the i-th yield is the i-th field of every record that
    has one, as (record, tag, payload start, payload size; for a varint its length). A
    record whose next field is not one of ours, or does not fit, is marked in `bad`."""
    pos = starts.copy()
    live = np.flatnonzero(pos < ends)
    while live.size:
        at = pos[live]
        tag = buf[at]
        wire = _WIRE[tag]
        at += 1
        head, head_size = _varints(buf, at)
        is_len = wire == _LEN
        start = np.where(is_len, at + head_size, at)
        size = np.where(is_len, np.minimum(head, np.uint64(2**40)).astype(np.int64), head_size)
        is_i64 = wire == _I64
        size[is_i64] = 8
        nxt = start + size
        ok = (wire >= 0) & ((head_size > 0) | is_i64) & (nxt <= ends[live])
        if not ok.all():
            bad[live[~ok]] = True
            live, tag, start, size, nxt = (a[ok] for a in (live, tag, start, size, nxt))
        yield live, tag, start, size
        pos[live] = nxt
        live = live[nxt < ends[live]]


def _strings(base: pa.Buffer, starts: np.ndarray, sizes: np.ndarray) -> pa.Array:
    """The byte spans (increasing, disjoint) of `base` as a binary array, copied by Arrow:
    a zero-copy array over `base` whose odd elements are the gaps, then its even ones."""
    m = starts.size
    offsets = np.empty(2 * m + 1, dtype=np.int64)
    offsets[0:-1:2] = starts
    offsets[1::2] = starts + sizes
    offsets[-1] = offsets[-2] if m else 0
    spans = pa.Array.from_buffers(pa.large_binary(), 2 * m, [None, pa.py_buffer(offsets), base])
    return spans.take(pa.array(np.arange(0, 2 * m, 2, dtype=np.int64)))


def _utf8(values: pa.Array, owners: np.ndarray, bad: np.ndarray) -> pa.Array:
    """`values` as strings; a record owning an invalid one is marked bad (that string
    becomes "", the record is decoded again by upb)."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        valid = np.array([_is_utf8(v) for v in values.to_pylist()], dtype=bool)
        bad[owners[~valid]] = True
        cleaned = [v if ok else b"" for v, ok in zip(values.to_pylist(), valid, strict=True)]
        return pa.array(cleaned, pa.binary()).cast(pa.string())


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _single(
    fields: tuple[np.ndarray, ...], tag: int, n: int, starts: np.ndarray, bad: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per record the payload (start, size) of its `tag` field; (record start, 0) when it
    has none. A record with two is left to upb (the last one wins, but upb still checks
    the others): serializers never write that, only concatenated messages have it."""
    record, tags, start, size = fields
    sel = np.flatnonzero(tags == tag)
    where, length = starts.copy(), np.zeros(n, np.int64)
    if sel.size > 1:
        again = sel[1:][record[sel][1:] == record[sel][:-1]]  # fields are in record order
        bad[record[again]] = True
    where[record[sel]], length[record[sel]] = start[sel], size[sel]
    return where, length


def _entries(
    buf: np.ndarray, base: pa.Buffer, fields: tuple[np.ndarray, ...], tag: int, bad: np.ndarray
) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """The entries of one map field: (record, key strings, value payload (start, size)
    as one (2, m) array). Entries not written as key then value mark their record bad."""
    record, tags, start, size = fields
    sel = np.flatnonzero(tags == tag)
    record, start, size = record[sel], start[sel], size[sel]
    key_len, key_head = _varints(buf, start + 1)
    key_len = np.minimum(key_len, size.astype(np.uint64)).astype(np.int64)  # stay in bounds
    key_start = start + 1 + key_head
    value_at = key_start + key_len
    value_tag = buf[value_at]
    if tag == _NUMERIC:
        value_start, value_size = value_at + 1, np.full(sel.size, 8, dtype=np.int64)
        ok = value_tag == _DOUBLE_VALUE
    else:
        value_len, value_head = _varints(buf, value_at + 1)
        value_start = value_at + 1 + value_head
        value_size = value_len.astype(np.int64)
        ok = (value_tag == _STRING_VALUE) & (value_head > 0) & (value_len < 2**40)
    ok &= (buf[start] == _KEY) & (key_head > 0) & (key_len < size)
    ok &= value_start + value_size == start + size
    if not ok.all():
        bad[record[~ok]] = True
        key_len = np.where(ok, key_len, 0)
        key_start, value_start = np.where(ok, key_start, start), np.where(ok, value_start, start)
        value_size = np.where(ok, value_size, 0)
    keys = _utf8(_strings(base, key_start, key_len), record, bad)
    return record, keys, np.stack([value_start, value_size])


def decode_flat(payloads: Sequence[bytes | None]) -> FlatEvents:
    """Decode Kafka record values into `FlatEvents`; never raises on bad input."""
    n = len(payloads)
    missing = [i for i, p in enumerate(payloads) if p is None] if None in payloads else []
    values: Sequence[bytes] = [p or b"" for p in payloads] if missing else payloads  # type: ignore[assignment]
    base = pa.py_buffer(b"".join([*values, bytes(_PAD)]))
    buf = np.frombuffer(base, dtype=np.uint8)
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=n)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    bad = np.zeros(n, dtype=bool)
    bad[missing] = True

    fields = _in_message_order(list(_walk(buf, starts, ends, bad)), n)
    strings = {}
    for tag in _STRINGS:
        where, length = _single(fields, tag, n, starts, bad)
        strings[tag] = _utf8(_strings(base, where, length), np.arange(n), bad)
    where, length = _single(fields, _EVENT_TIME, n, starts, bad)
    event_time = np.zeros(n, dtype=np.int64)
    has_time = np.flatnonzero(length)
    event_time[has_time] = _varints(buf, where[has_time])[0].view(np.int64)
    where, length = _single(fields, _LABEL, n, starts, bad)
    has_label = length > 0
    label = np.zeros(n, dtype=np.float64)
    label[has_label] = _doubles(buf, where[has_label])

    num_record, num_keys, num_value = _entries(buf, base, fields, _NUMERIC, bad)
    cat_record, cat_keys, cat_value = _entries(buf, base, fields, _CATEGORICAL, bad)
    flat = FlatEvents(
        n=n,
        dataset=strings[_DATASET],
        event_id=strings[_EVENT_ID],
        entity_key=strings[_ENTITY_KEY],
        event_time_ms=event_time,
        label=label,
        has_label=has_label,
        numeric=MapEntries(num_record, num_keys, _doubles(buf, num_value[0])),
        categorical=MapEntries(
            cat_record,
            cat_keys,
            _utf8(_strings(base, cat_value[0], cat_value[1]), cat_record, bad),
        ),
    )
    return _with_upb(flat, payloads, np.flatnonzero(bad)) if bad.any() else flat


def _doubles(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian doubles at arbitrary byte positions: one gather from a view whose
    i-th element is the 8 bytes starting at byte i."""
    every = np.ndarray((buf.size - 7,), dtype="<f8", buffer=buf, strides=(1,))
    return every[at].astype(np.float64)


def _in_message_order(
    passes: list[tuple[np.ndarray, ...]], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fields of every pass, ordered by record and then by position in the record
    (the i-th pass holds each record's i-th field, so its rank is i): in buffer order."""
    if not passes:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.astype(np.uint8), empty, empty
    record = np.concatenate([p[0] for p in passes])
    rank = np.concatenate([np.full(p[0].size, i, dtype=np.int64) for i, p in enumerate(passes)])
    counts = np.bincount(record, minlength=n)
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    order = np.empty(record.size, dtype=np.int64)
    order[first[record] + rank] = np.arange(record.size)
    tag, start, size = (np.concatenate([p[k] for p in passes])[order] for k in (1, 2, 3))
    return np.repeat(np.arange(n, dtype=np.int64), counts), tag, start, size


def _with_upb(flat: FlatEvents, payloads: Sequence[bytes | None], redo: np.ndarray) -> FlatEvents:
    """`flat` with the records at `redo` decoded by upb instead."""
    decoded = decode_events([payloads[i] for i in redo.tolist()])
    slow = flat_from_events([e if isinstance(e, DataEvent) else None for e in decoded])
    errors = {int(redo[j]): e.error for j, e in enumerate(decoded) if isinstance(e, Undecodable)}
    # Fast results of the redone records are replaced: gather from [fast..., slow...].
    source = np.arange(flat.n, dtype=np.int64)
    source[redo] = flat.n + np.arange(redo.size)
    picked = pa.array(source)
    maps = []
    for fast_map, slow_map in ((flat.numeric, slow.numeric), (flat.categorical, slow.categorical)):
        keep = ~np.isin(fast_map.rows, redo)
        merged = fast_map.take(keep, fast_map.rows[keep])
        rows = np.concatenate([merged.rows, redo[slow_map.rows]])
        keys = pa.concat_arrays([merged.keys, slow_map.keys])
        if isinstance(merged.values, np.ndarray):
            values: np.ndarray | pa.Array = np.concatenate([merged.values, slow_map.values])
        else:
            values = pa.concat_arrays([merged.values, slow_map.values])
        maps.append(MapEntries(rows, keys, values))

    def scalar(fast: np.ndarray, slow_values: np.ndarray) -> np.ndarray:
        out = fast.copy()
        out[redo] = slow_values
        return out

    return FlatEvents(
        n=flat.n,
        dataset=pa.concat_arrays([flat.dataset, slow.dataset]).take(picked),
        event_id=pa.concat_arrays([flat.event_id, slow.event_id]).take(picked),
        entity_key=pa.concat_arrays([flat.entity_key, slow.entity_key]).take(picked),
        event_time_ms=scalar(flat.event_time_ms, slow.event_time_ms),
        label=scalar(flat.label, slow.label),
        has_label=scalar(flat.has_label, slow.has_label),
        numeric=maps[0],
        categorical=maps[1],
        errors=errors,
    )
