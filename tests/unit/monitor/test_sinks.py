"""Sink rows and the buffer's size/age rule (pure)."""

from __future__ import annotations

import struct
from typing import Any

import pyarrow as pa
from aiokafka import TopicPartition

from driftloop.v1 import events_pb2 as pb
from services.common.kafka import ConsumedBatch
from services.common.kafka_serde import DecodeFailure, Envelope
from services.monitor.sinks.arrow import to_arrow
from services.monitor.sinks.rows import SINK_TABLES, keyed_once
from services.monitor.sinks.writer import SinkBuffer, write_pending


def _env(msg: object, offset: int, topic: str = "predictions.log") -> Envelope:
    return Envelope(topic, 0, offset, b"k", msg, {}, 1_000)


def test_shadow_copies_keep_their_own_key_and_repeats_collapse() -> None:
    spec = SINK_TABLES[pb.PredictionLog]
    live = spec.to_row(_env(pb.PredictionLog(request_id="r1", numeric={"b": 2, "a": 1}), 0))
    shadow = spec.to_row(_env(pb.PredictionLog(request_id="r1", shadow=True), 1))
    assert spec.key_of(live) != spec.key_of(shadow)
    assert list(keyed_once(spec, [live, shadow, live]).values()) == [live, shadow]
    names = live[spec.columns.index("feature_names")]
    values = live[spec.columns.index("feature_values")]
    assert dict(zip(names, values, strict=True)) == {"a": 1.0, "b": 2.0}


def test_every_topic_message_has_a_table_with_matching_columns() -> None:
    for cls, spec in SINK_TABLES.items():
        row = spec.to_row(_env(cls(), 0))
        assert len(row) == len(spec.columns), spec.table


def test_dead_letters_are_keyed_by_source_position() -> None:
    spec = SINK_TABLES[pb.RejectedEvent]
    a = spec.to_row(
        _env(pb.RejectedEvent(source_topic="t", source_partition=1, source_offset=5), 0)
    )
    b = spec.to_row(
        _env(pb.RejectedEvent(source_topic="t", source_partition=1, source_offset=5), 9)
    )
    assert spec.key_of(a) == spec.key_of(b) == "t/1/5"


def test_buffer_is_due_by_size_or_age_and_keeps_the_highest_offsets() -> None:
    now = [0]
    buffer = SinkBuffer(max_rows=3, max_age_ms=100, clock_ms=lambda: now[0])
    batch = ConsumedBatch(
        envelopes=[_env(pb.PredictionLog(request_id="r"), 4)],
        offsets={TopicPartition("predictions.log", 0): 5},
    )
    buffer.add(batch)
    assert not buffer.due()
    now[0] = 100
    assert buffer.due()  # by age
    failure = DecodeFailure(
        "predictions.log", 0, 5, b"k", b"x", {}, 0, "PredictionLog", "decode_error", "bad"
    )
    buffer.add(
        ConsumedBatch(
            failures=[failure, failure], offsets={TopicPartition("predictions.log", 0): 6}
        )
    )
    assert len(buffer) == 3 and buffer.due()  # by size
    pending = buffer.take()
    assert pending.offsets == {TopicPartition("predictions.log", 0): 6}
    assert len(pending.rows["predictions"]) == 1 and len(pending.rows["sink_rejected"]) == 2
    assert len(buffer) == 0 and not buffer.due()


_TYPES = {
    "predictions": {
        "request_id": "String", "time": "DateTime64(3, 'UTC')", "model": "LowCardinality(String)",
        "version": "LowCardinality(String)", "variant": "LowCardinality(String)",
        "experiment": "LowCardinality(String)", "shadow": "Bool", "entity_key": "String",
        "bucket": "Int32", "feature_names": "Array(LowCardinality(String))",
        "feature_values": "Array(Float64)", "category_names": "Array(LowCardinality(String))",
        "category_values": "Array(String)", "score": "Float64", "latency_ms": "Float64",
        "error": "String",
    },
    "sink_rejected": {
        "source_topic": "LowCardinality(String)", "source_partition": "Int32",
        "source_offset": "Int64", "reason": "String", "original_key": "String",
        "original_value": "String", "rejected_at": "DateTime64(3, 'UTC')",
    },
}  # fmt: skip


class _RefusingClient:
    """Stands in for the store: refuses any block holding a request id starting 'bad'."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> object:
        rows: list[tuple[str, str]] = []
        if "system.columns" in sql and parameters:
            rows = list(_TYPES[parameters["t"]].items())

        class _Result:
            result_rows = rows

        return _Result()

    def insert_arrow(self, table: str, arrow_table: Any, **_: object) -> None:
        rows = arrow_table.to_pylist()
        if table == "predictions" and any(r["request_id"].startswith("bad") for r in rows):
            raise ValueError("Code: 27. Cannot parse input")
        self.tables.setdefault(table, []).extend(rows)


def test_rows_the_store_refuses_are_dead_lettered_and_the_rest_inserted() -> None:
    buffer = SinkBuffer(max_rows=100, max_age_ms=100)
    ids = ["r0", "bad1", "r2", "r3", "bad4", "r5", "r6"]
    buffer.add(
        ConsumedBatch(
            envelopes=[_env(pb.PredictionLog(request_id=i), n) for n, i in enumerate(ids)]
        )
    )
    far = _env(pb.PredictionLog(request_id="far", time_ms=10**16), 7)
    buffer.add(ConsumedBatch(envelopes=[far]))
    client = _RefusingClient()
    result = write_pending(client, buffer.take())  # type: ignore[arg-type]
    got = sorted(r["request_id"] for r in client.tables["predictions"])
    assert got == ["r0", "r2", "r3", "r5", "r6"]
    reasons = [r["reason"] for r in client.tables["sink_rejected"]]
    assert len(reasons) == 3
    assert sum("insert refused" in r and "Cannot parse" in r for r in reasons) == 2
    assert sum("unstorable" in r and "1900-2299" in r for r in reasons) == 1
    assert result.inserted["predictions"] == 5 and result.rejected["predictions"] == 2


def test_list_columns_convert_the_same_whether_their_rows_repeat_or_not() -> None:
    columns, types = ("names",), {"names": "Array(LowCardinality(String))"}
    for lists in (
        [["a", "b"], ["a", "b"], [], ["a", "b"], ["c"], ["a", "b"]],  # mostly repeated
        [["a"], ["b"], ["c", "d"]],  # all distinct
        [],
    ):
        table = to_arrow([(v,) for v in lists], columns, types)
        assert table.column("names").to_pylist() == lists
        # the store's own schema: array items are non-null
        assert table.schema.field("names").type == pa.list_(
            pa.field("item", pa.string(), nullable=False)
        )


def test_float_list_columns_convert_exactly_and_nullable_items_stay_nullable() -> None:
    columns = ("values", "maybe")
    types = {"values": "Array(Float64)", "maybe": "Array(Nullable(Float64))"}
    rows = [([1.5, -2.0], [None, 1.0]), ([], []), ([3.25], [2.0])]
    table = to_arrow(rows, columns, types)
    assert table.column("values").to_pylist() == [[1.5, -2.0], [], [3.25]]
    assert table.column("maybe").to_pylist() == [[None, 1.0], [], [2.0]]  # the fallback
    assert not table.schema.field("values").type.value_field.nullable
    assert table.schema.field("maybe").type.value_field.nullable


def test_prediction_rows_convert_to_the_messages_own_values() -> None:
    """The predictions rows keep epoch ms and numpy feature values; Arrow gets them back
    exactly (times to the millisecond, floats bit for bit, names by row)."""
    spec = SINK_TABLES[pb.PredictionLog]
    messages = [
        pb.PredictionLog(request_id="a", time_ms=1_796_083_200_123, numeric={"x": 0.1, "y": -0.0}),
        pb.PredictionLog(request_id="b", numeric={"x": 1e308, "y": 5e-324}),  # Kafka's time
        pb.PredictionLog(request_id="c", numeric={"z": float("inf")}, categorical={"r": "n"}),
        pb.PredictionLog(request_id="d"),
    ]
    rows = [spec.to_row(_env(m, i)) for i, m in enumerate(messages)]
    got = to_arrow(rows, spec.columns, _TYPES["predictions"]).to_pylist()
    assert [r["time"].timestamp() for r in got] == [1_796_083_200.123, 1.0, 1.0, 1.0]
    for row, m in zip(got, messages, strict=True):
        values = dict(zip(row["feature_names"], row["feature_values"], strict=True))
        assert {k: struct.pack("<d", v) for k, v in values.items()} == {
            k: struct.pack("<d", v) for k, v in m.numeric.items()
        }
        assert dict(zip(row["category_names"], row["category_values"], strict=True)) == dict(
            m.categorical
        )
    # rows sharing a name list share one tuple, which the conversion takes by identity
    again = spec.to_row(_env(pb.PredictionLog(numeric={"x": 2.0, "y": 1.0}), 9))
    assert (
        again[spec.columns.index("feature_names")] is rows[0][spec.columns.index("feature_names")]
    )
