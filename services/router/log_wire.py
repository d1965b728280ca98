"""The `numeric` map of many PredictionLogs at once, as protobuf wire bytes.

A PredictionBatch of 512 rows logs 512 PredictionLogs, and filling each message's
`numeric` map (one Python dict, then one map insertion per feature) was most of the cost
of logging them. The map's wire form is simple and fixed by the protobuf encoding spec:
each entry is the map field's tag, the entry's length, then the key (field 1, a string)
and the value (field 2, a double: 8 little-endian bytes). For a frame's rows, every entry
differs only in its 8 value bytes, so the entries are laid out once as a byte matrix, one
row per prediction, and the values are copied into it column by column (numpy).

A message's bytes followed by more fields' bytes parse as the merged message (the spec's
"last one wins" for scalars, entries added for maps), so a record is the PredictionLog of
the row's other fields, serialised by protobuf, followed by these bytes. Rows with a
missing value (NaN: the entry is left out) go through protobuf itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from driftloop.v1 import events_pb2 as ev

__all__ = ["numeric_entries"]

_LENGTH_DELIMITED, _FIXED64 = 2, 1  # wire types


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _tag(field: FieldDescriptor, wire_type: int) -> bytes:
    return _varint(field.number << 3 | wire_type)


_FIELD = ev.PredictionLog.DESCRIPTOR.fields_by_name["numeric"]
_KEY, _VALUE = (_FIELD.message_type.fields_by_name[n] for n in ("key", "value"))
if (_KEY.type, _VALUE.type) != (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_DOUBLE):
    raise TypeError("PredictionLog.numeric is no longer a map<string, double>")
_TAG, _KEY_TAG, _VALUE_TAG = (
    _tag(_FIELD, _LENGTH_DELIMITED),
    _tag(_KEY, _LENGTH_DELIMITED),
    _tag(_VALUE, _FIXED64),
)


def numeric_entries(names: Sequence[str], matrix: np.ndarray) -> list[bytes]:
    """For each row of `matrix` (rows x len(names), float64), the wire bytes of the
    PredictionLog `numeric` map {name: value} without its NaN values."""
    rows = matrix.shape[0]
    if not names or rows == 0:
        return [b""] * rows
    heads: list[bytes] = []
    for name in names:
        key = name.encode()
        body = _KEY_TAG + _varint(len(key)) + key + _VALUE_TAG
        heads.append(_TAG + _varint(len(body) + 8) + body)
    width = sum(len(h) + 8 for h in heads)
    out = np.empty((rows, width), dtype=np.uint8)
    values = np.ascontiguousarray(matrix, dtype="<f8").view(np.uint8).reshape(rows, -1, 8)
    at = 0
    for j, head in enumerate(heads):
        out[:, at : at + len(head)] = np.frombuffer(head, dtype=np.uint8)
        at += len(head)
        out[:, at : at + 8] = values[:, j, :]
        at += 8
    flat = out.tobytes()
    entries = [flat[i * width : (i + 1) * width] for i in range(rows)]
    for i in np.flatnonzero(np.isnan(matrix).any(axis=1)).tolist():
        kept = {n: v for n, v in zip(names, matrix[i].tolist(), strict=True) if v == v}
        entries[i] = ev.PredictionLog(numeric=kept).SerializeToString()
    return entries
