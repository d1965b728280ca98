"""The column-wise decoder (`wire.decode_flat`) against upb: for any bytes, validating the
decoded columns gives exactly what validating upb's messages gives — the same rows, the
same rejections with the same reasons and messages, at the same positions."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from driftloop.v1.events_pb2 import DataEvent
from services.common.datasets.schema import DatasetSchema
from services.ingest.decode.wire import decode_flat
from services.ingest.validation import (
    DatasetContext,
    ValidationResult,
    decode_events,
    validate_batch,
    validate_payloads,
)
from tests.unit.ingest.conftest import NOW_MS, make_event


def _both(
    schema: DatasetSchema, payloads: list[bytes | None], **kwargs: object
) -> ValidationResult:
    """Validate both ways, assert the results are equal, return one."""
    schemas = {schema.name: schema, "other": schema.model_copy(update={"name": "other"})}
    reference = validate_batch(decode_events(payloads), schemas, NOW_MS, **kwargs)  # type: ignore[arg-type]
    fast = validate_payloads(payloads, schemas, NOW_MS, **kwargs)  # type: ignore[arg-type]
    assert fast.total == reference.total
    assert fast.rejected == reference.rejected
    assert fast.accepted.keys() == reference.accepted.keys()
    for name, rows in reference.accepted.items():
        assert fast.accepted[name].table.equals(rows.table), name
        assert fast.accepted[name].indices.tolist() == rows.indices.tolist()
    return fast


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    head = _varint((number << 3) | wire)
    return head + (_varint(len(payload)) + payload if wire == 2 else payload)


def _entry(key: bytes, value: bytes, value_wire: int) -> bytes:
    return _field(1, 2, key) + _field(2, value_wire, value)


def _events(rng: random.Random, n: int) -> list[DataEvent]:
    events = []
    for i in range(n):
        event = make_event(i, label=rng.choice([None, 0.0, 1.0]))
        if rng.random() < 0.3:
            del event.numeric["income"]
        if rng.random() < 0.2:
            event.categorical["merchant"] = rng.choice(["m1", "m2", "m3", "m4", "é" * 70])
        events.append(event)
    return events


def test_a_clean_stream_decodes_as_upb_does(loans: DatasetSchema) -> None:
    payloads: list[bytes | None] = [e.SerializeToString() for e in _events(random.Random(1), 400)]
    result = _both(loans, payloads)
    assert result.accepted_count > 300 and not result.accepted_count + result.rejected_count - 400


def test_every_rule_sees_the_same_records(loans: DatasetSchema) -> None:
    bad = [
        make_event(1, dataset="nope"),
        make_event(2, dataset=""),
        make_event(3, event_id=""),
        make_event(4, numeric={"age": 30.5, "zz": 1.0, "yy": 2.0}, categorical={"age": "x"}),
        make_event(5, numeric={"age": 30, "score": math.nan}, categorical={"region": "mars"}),
        make_event(6, event_time_ms=-5),  # a negative int64: a 10-byte varint
        make_event(7, event_time_ms=0, label=3.0),
        make_event(1, dataset="other"),
        make_event(0),  # a repeat of the first good one below
    ]
    payloads: list[bytes | None] = [make_event(0).SerializeToString()]
    payloads += [e.SerializeToString() for e in bad]
    payloads += [None, b"", b"\xff\xff\xff\xff", b"\x12\x02\xc3\x28", b"\x0a\x05ab"]
    result = _both(loans, payloads, contexts={"loans": DatasetContext(seen_event_ids={"e3"})})
    assert result.rejected_count == len(payloads) - 2


@pytest.mark.parametrize(
    "payload",
    [
        # a later occurrence of a field wins, maps merge with the later value winning
        make_event(1).SerializeToString() + make_event(2, numeric={"age": 99}).SerializeToString(),
        make_event(1).SerializeToString() + _field(5, 2, _entry(b"age", b"\0" * 8, 1)),
        # an overwritten string must still be UTF-8
        _field(1, 2, b"\xed\xa0\x80") + make_event(1).SerializeToString(),
        _field(3, 2, b"\xc0\x80") + make_event(1).SerializeToString(),
        # map entries written value first, without a value, or with an extra field
        make_event(1).SerializeToString()
        + _field(6, 2, _field(2, 2, b"north") + _field(1, 2, b"region")),
        make_event(1).SerializeToString() + _field(5, 2, _field(1, 2, b"score")),
        make_event(1).SerializeToString()
        + _field(5, 2, _entry(b"score", b"\0" * 8, 1) + b"\x18\x01"),
        make_event(1).SerializeToString() + _field(5, 2, b""),
        # invalid UTF-8 in a map key or value
        make_event(1).SerializeToString() + _field(6, 2, _entry(b"merchant", b"\xff", 2)),
        make_event(1).SerializeToString() + _field(5, 2, _entry(b"\xc3", b"\0" * 8, 1)),
        # unknown fields, a mistyped known one, a multi-byte tag, an over-long varint
        make_event(1).SerializeToString() + _field(9, 0, b"\x05"),
        make_event(1).SerializeToString() + _field(4, 2, b"12"),
        make_event(1).SerializeToString() + b"\x8a\x00\x02e9",
        b"\x0a\x82\x00e1" + make_event(1).SerializeToString()[4:],
        make_event(1).SerializeToString() + b"\x20" + b"\xff" * 10 + b"\x01",
        # long strings: multi-byte lengths
        make_event(
            1, event_id="x" * 300, categorical={"region": "north", "merchant": "m" * 200}
        ).SerializeToString(),
    ],
)
def test_unusual_encodings_decode_as_upb_does(loans: DatasetSchema, payload: bytes) -> None:
    _both(loans, [make_event(0).SerializeToString(), payload, make_event(9).SerializeToString()])


def test_fuzzed_bytes_decode_as_upb_does(loans: DatasetSchema) -> None:
    rng = random.Random(11)
    base = [e.SerializeToString() for e in _events(rng, 200)]
    for _ in range(60):
        payloads: list[bytes | None] = []
        for payload in rng.sample(base, 40):
            b = bytearray(payload)
            roll = rng.random()
            if roll < 0.3:
                for _ in range(rng.randint(1, 3)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
            elif roll < 0.4:
                del b[rng.randrange(len(b)) :]
            elif roll < 0.5:
                b += bytes([rng.choice([0x08, 0x0A, 0x12, 0x20, 0x2A, 0x32, 0x39, 0x48, 0x7A])])
                b += bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
            elif roll < 0.6:
                b += rng.choice(base)
            payloads.append(bytes(b) if rng.random() > 0.02 else None)
        _both(loans, payloads)


def test_columns_are_upbs_values() -> None:
    events = _events(random.Random(3), 50)
    flat = decode_flat([e.SerializeToString() for e in events])
    assert not flat.errors
    assert flat.event_id.to_pylist() == [e.event_id for e in events]
    assert flat.dataset.to_pylist() == ["loans"] * 50
    assert flat.event_time_ms.tolist() == [e.event_time_ms for e in events]
    assert flat.has_label.tolist() == [e.HasField("label") for e in events]
    for maps, entries in (
        (lambda e: e.numeric, flat.numeric),
        (lambda e: e.categorical, flat.categorical),
    ):
        values = (
            entries.values if isinstance(entries.values, np.ndarray) else entries.values.to_pylist()
        )
        got = [{} for _ in events]
        for row, key, value in zip(
            entries.rows.tolist(), entries.keys.to_pylist(), list(values), strict=True
        ):
            got[row][key] = value
        assert got == [dict(maps(e)) for e in events]


def test_an_empty_batch_decodes() -> None:
    assert decode_flat([]).n == 0
    assert validate_payloads([], {}, NOW_MS).total == 0


def test_clean_records_take_the_compiled_path_and_odd_ones_go_to_upb() -> None:
    """The equality tests above would also pass if every record fell back to upb; the
    walk must take what serializers write and leave only the unusual to upb."""
    from services.ingest.decode.kernels import scan

    clean = [e.SerializeToString() for e in _events(random.Random(5), 30)]
    odd = [
        clean[0] + _field(9, 0, b"\x05"),  # an unknown field
        clean[0] + _field(5, 2, _field(2, 1, b"\0" * 8) + _field(1, 2, b"age")),  # value first
        clean[0] + clean[1],  # two event ids: a concatenation
        clean[0][:-1],  # truncated
    ]
    payloads = clean + odd
    buf = np.frombuffer(b"".join([*payloads, bytes(16)]), dtype=np.uint8)
    sizes = np.array([len(p) for p in payloads], dtype=np.int64)
    ends = np.cumsum(sizes)
    bad = np.zeros(len(payloads), dtype=bool)
    _, _, event_time, numeric, categorical = scan(buf, ends - sizes, ends, bad)
    assert np.flatnonzero(bad).tolist() == list(range(len(clean), len(payloads)))
    events = [DataEvent.FromString(p) for p in clean]
    assert event_time[: len(clean)].tolist() == [e.event_time_ms for e in events]
    for entries, of in ((numeric, lambda e: e.numeric), (categorical, lambda e: e.categorical)):
        per_record = np.bincount(entries[0][entries[0] < len(clean)], minlength=len(clean))
        assert per_record.tolist() == [len(of(e)) for e in events]
