"""The compiled half of `services.ingest.decode.wire`: one walk over the joined payloads that
finds every record's fields (`scan`), and the copy of byte spans into one buffer
(`gather`). Compiled by numba with `cache=True` (the machine code is kept in
`__pycache__` beside this file), and imported on the first decode only: importing numba
costs ~1.5 s, which nothing else that imports `wire` should pay.

The walk takes exactly what the numpy decoder before it took, the protobuf wire format
as every runtime writes `DataEvent`: its own fields with their own wire types, one-byte
tags, each single field at most once, map entries written key then value and filling
the entry exactly. Anything else marks the record bad, and `wire` decodes it with upb.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from driftloop.v1.events_pb2 import DataEvent

__all__ = ["gather", "scan"]

_VARINT, _I64, _LEN = 0, 1, 2


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

# Tag byte -> slot: 0-3 the strings (in _STRINGS order), 4 event time, 5 label, 6 numeric
# map, 7 categorical map; -1 not ours.
_SLOT = np.full(256, -1, dtype=np.int64)
for _slot, _t in enumerate((*_STRINGS, _EVENT_TIME, _LABEL, _NUMERIC, _CATEGORICAL)):
    _SLOT[_t] = _slot
_WIRE_OF_SLOT = np.array([t & 7 for t in (*_STRINGS, _EVENT_TIME, _LABEL, _NUMERIC, _CATEGORICAL)])


@njit(cache=True, nogil=True, inline="always")
def _varint(buf: np.ndarray, at: int, limit: int) -> tuple[np.uint64, int]:
    """Value (bits past 64 dropped, as upb does) and length of the varint at `at`; length
    0 when it does not end within 10 bytes and before `limit`."""
    value = np.uint64(0)
    for k in range(10):
        if at + k >= limit:
            return value, 0
        byte = buf[at + k]
        value |= np.uint64(byte & 0x7F) << np.uint64(7 * k)
        if byte < 0x80:
            return value, k + 1
    return value, 0


@njit(cache=True, nogil=True)
def scan(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, bad: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every record's fields, found by walking its wire format (compiled by numba; one
    pass over the bytes). A record with anything the fast path does not take is marked
    in `bad` and left for upb. Returns per record the (start, size) of each single field
    (absent: (record start, 0)) and the event time; then per entry of the numeric map,
    and of the categorical map, a column of (record, key start, key size, value start,
    value size)."""
    n = starts.size
    at = np.empty((6, n), dtype=np.int64)
    size = np.zeros((6, n), dtype=np.int64)
    for i in range(n):
        at[:, i] = starts[i]
    event_time = np.zeros(n, dtype=np.uint64)
    total = ends[n - 1] if n else 0
    # Map entries, numeric then categorical: (record, key at, size, value at, size). An
    # entry takes at least 13 bytes (numeric) or 6 (categorical), which bounds the count.
    maps = (np.empty((5, total // 13 + 1), np.int64), np.empty((5, total // 6 + 1), np.int64))
    m = [0, 0]
    for i in range(n):
        pos, end = starts[i], ends[i]
        while pos < end:
            slot = _SLOT[buf[pos]]
            if slot < 0:
                bad[i] = True
                break
            wire = _WIRE_OF_SLOT[slot]
            head, head_size = np.uint64(0), 0
            if wire == _I64:
                start, length = pos + 1, np.int64(8)
            else:
                head, head_size = _varint(buf, pos + 1, end)
                if head_size == 0:
                    bad[i] = True
                    break
                if wire == _LEN:
                    start = pos + 1 + head_size
                    if head > np.uint64(end - start):
                        bad[i] = True
                        break
                    length = np.int64(head)
                else:
                    start, length = pos + 1, np.int64(head_size)
            nxt = start + length
            if nxt > end:
                bad[i] = True
                break
            if slot < 6:
                if at[slot, i] != starts[i]:  # a field starts after its tag, so it was seen
                    bad[i] = True  # twice: only concatenated messages have that, upb decides
                    break
                at[slot, i], size[slot, i] = start, length
                if slot == 4:
                    event_time[i] = head
            else:
                # A map entry, written key then value, exactly filling the entry.
                if length < 1 or buf[start] != _KEY:
                    bad[i] = True
                    break
                key_len, key_head = _varint(buf, start + 1, nxt)
                if key_head == 0 or key_len >= np.uint64(length):
                    bad[i] = True
                    break
                key_at = start + 1 + key_head
                value_tag_at = key_at + np.int64(key_len)
                if value_tag_at >= nxt:
                    bad[i] = True
                    break
                if slot == 6:
                    value_at, value_len = value_tag_at + 1, np.int64(8)
                    ok = buf[value_tag_at] == _DOUBLE_VALUE and value_at + 8 == nxt
                else:
                    vlen, vhead = _varint(buf, value_tag_at + 1, nxt)
                    value_at = value_tag_at + 1 + vhead
                    value_len = np.int64(vlen) if vhead else np.int64(0)
                    ok = (
                        buf[value_tag_at] == _STRING_VALUE
                        and vhead > 0
                        and vlen == np.uint64(nxt - value_at)
                    )
                if not ok:
                    bad[i] = True
                    break
                entries, j = maps[slot - 6], m[slot - 6]
                entries[0, j], entries[1, j], entries[2, j] = i, key_at, key_len
                entries[3, j], entries[4, j] = value_at, value_len
                m[slot - 6] = j + 1
            pos = nxt
    return at, size, event_time, maps[0][:, : m[0]].copy(), maps[1][:, : m[1]].copy()


@njit(cache=True, nogil=True)
def gather(buf: np.ndarray, at: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The byte spans (`at`, `size`) of `buf`, copied one after the other: (offsets, data)."""
    offsets = np.empty(at.size + 1, dtype=np.int64)
    offsets[0] = 0
    for j in range(at.size):
        offsets[j + 1] = offsets[j] + size[j]
    data = np.empty(offsets[-1], dtype=np.uint8)
    for j in range(at.size):  # byte by byte: the spans are short, slicing costs more
        to, source = offsets[j], at[j]
        for k in range(size[j]):
            data[to + k] = buf[source + k]
    return offsets, data
