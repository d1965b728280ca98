"""The feature maps of many PredictionLogs at once, as protobuf wire bytes.

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
missing value (NaN: the entry is left out) go through protobuf itself. The `categorical`
map's entries (name, value) repeat across rows, so each distinct one is encoded once per
frame and a row's bytes are its entries joined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from driftloop.v1 import events_pb2 as ev

__all__ = ["categorical_entries", "numeric_entries"]

_LENGTH_DELIMITED, _FIXED64 = 2, 1  # wire types
_FEW_ROWS = 4  # up to this many rows, the numeric maps go through protobuf itself


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


def _map_tags(name: str, value_type: int, value_wire: int) -> tuple[bytes, bytes, bytes]:
    """The tags of PredictionLog map field `name` (map<string, value_type>) and of its
    entries' key and value."""
    field = ev.PredictionLog.DESCRIPTOR.fields_by_name[name]
    key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
    if (key.type, value.type) != (FieldDescriptor.TYPE_STRING, value_type):
        raise TypeError(f"PredictionLog.{name} is no longer the map this encoder writes")
    return _tag(field, _LENGTH_DELIMITED), _tag(key, _LENGTH_DELIMITED), _tag(value, value_wire)


_TAG, _KEY_TAG, _VALUE_TAG = _map_tags("numeric", FieldDescriptor.TYPE_DOUBLE, _FIXED64)
_CAT_TAG, _CAT_KEY_TAG, _CAT_VALUE_TAG = _map_tags(
    "categorical", FieldDescriptor.TYPE_STRING, _LENGTH_DELIMITED
)


def numeric_entries(names: Sequence[str], matrix: np.ndarray) -> list[bytes]:
    """For each row of `matrix` (rows x len(names), float64), the wire bytes of the
    PredictionLog `numeric` map {name: value} without its NaN values."""
    rows = matrix.shape[0]
    if not names or rows == 0:
        return [b""] * rows
    if rows <= _FEW_ROWS:  # laying out the matrix costs more than protobuf for a few rows
        return [
            ev.PredictionLog(
                numeric={n: v for n, v in zip(names, values, strict=True) if v == v}
            ).SerializeToString()
            for values in matrix.tolist()
        ]
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


def categorical_entries(columns: dict[str, list[str | None]], rows: int) -> list[bytes]:
    """For each row, the wire bytes of the PredictionLog `categorical` map {name: value}
    of `columns` (None: the entry is left out)."""
    if not columns:
        return [b""] * rows
    encoded: dict[tuple[str, str], bytes] = {}

    def entry(name: str, value: str) -> bytes:
        key, val = name.encode(), value.encode()
        body = _CAT_KEY_TAG + _varint(len(key)) + key + _CAT_VALUE_TAG + _varint(len(val)) + val
        return _CAT_TAG + _varint(len(body)) + body

    out = []
    names = list(columns)
    for values in zip(*columns.values(), strict=True):
        parts = []
        for name, value in zip(names, values, strict=True):
            if value is not None:
                found = encoded.get((name, value))
                if found is None:
                    found = encoded[(name, value)] = entry(name, value)
                parts.append(found)
        out.append(b"".join(parts))
    return out
