"""The sinks: every topic the monitor reads, into its ClickHouse table, exactly once.

Delivery argument. Records are consumed with auto-commit off (services/common/kafka.py)
and buffered; the buffer is written when it holds `sink_max_rows` records or its oldest
record is `sink_max_age_ms` old. A write inserts each table's rows synchronously
(`async_insert=0`) and only then commits the consumed offsets. A crash before the commit
replays those records; a crash between the inserts and the commit replays rows that are
already stored. So inserts must be idempotent, and they are made so by a key check: before
inserting, the writer asks the store which of the batch's keys (request id, label id,
version id, event id, dead letters by source topic/partition/offset) it already holds and
inserts only the others. The monitor is the store's single writer and one writer thread
does all inserts, so nothing can insert a key between the check and the insert.

Why not faust agents: faust acknowledges a record before the agent has decoded it, so an
offset can be committed before its row is stored (lost on a crash). Why a key check and
not only ReplacingMergeTree: a replayed row would count twice until a background merge,
so every reader would need FINAL (25 % slower window aggregates, measured in the notes);
the tables stay ReplacingMergeTree as a second line of defence. Why not insert
deduplication tokens: after a crash a replay can be cut into different batches, and a
token only catches an identical block.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from clickhouse_connect.driver.client import Client

from services.common.kafka import ConsumedBatch
from services.monitor.sinks.rows import (
    POSITION_KEY_SQL,
    REJECTED_SPEC_COLUMNS,
    SINK_TABLES,
    Row,
    TableSpec,
    dedupe_in_batch,
    rejected_row,
    spec_for_message,
)
from services.monitor.store import INSERT_SETTINGS

__all__ = ["PendingWrite", "SinkBuffer", "WriteResult", "write_pending"]

_REJECTED = TableSpec(
    "sink_rejected",
    REJECTED_SPEC_COLUMNS,
    key_sql=POSITION_KEY_SQL,
    to_row=lambda env: (),
    key_index=lambda r: f"{r[0]}/{r[1]}/{r[2]}",
)
_CHECK_CHUNK = 5_000  # keys per key-check query


@dataclass
class PendingWrite:
    """Rows per table and the offsets they complete (commit these after the write)."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0


class SinkBuffer:
    """Consumed records waiting to be written; owns its rows and offsets."""

    def __init__(self, max_rows: int, max_age_ms: int, clock_ms: object = None) -> None:
        self._max_rows = max_rows
        self._max_age_ms = max_age_ms
        self._now_ms = clock_ms if callable(clock_ms) else (lambda: int(time.time() * 1000))
        self._pending = PendingWrite()
        self._first_ms: int | None = None

    def __len__(self) -> int:
        return self._pending.records

    def add(self, batch: ConsumedBatch) -> None:
        if not len(batch) and not batch.offsets:
            return
        now = self._now_ms()
        if self._first_ms is None and len(batch):
            self._first_ms = now
        pending = self._pending
        for env in batch.envelopes:
            spec = spec_for_message(env.message)
            if spec is None:  # a topic this monitor does not sink (cannot happen by config)
                continue
            pending.rows[spec.table].append(spec.to_row(env))
        for failure in batch.failures:
            pending.rows[_REJECTED.table].append(rejected_row(failure, now))
        pending.records += len(batch)
        for tp, nxt in batch.offsets.items():
            pending.offsets[tp] = max(nxt, pending.offsets.get(tp, 0))

    def due(self) -> bool:
        if self._pending.records >= self._max_rows:
            return True
        if self._first_ms is None:
            return bool(self._pending.offsets)
        return self._now_ms() - self._first_ms >= self._max_age_ms

    def take(self) -> PendingWrite:
        pending, self._pending, self._first_ms = self._pending, PendingWrite(), None
        return pending


@dataclass
class WriteResult:
    inserted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


_SPECS_BY_TABLE: dict[str, TableSpec] = {s.table: s for s in SINK_TABLES.values()}
_SPECS_BY_TABLE[_REJECTED.table] = _REJECTED


def _existing_keys(client: Client, spec: TableSpec, rows: Sequence[Row]) -> set[str]:
    keys = [spec.key_of(r) for r in rows]
    where = ""
    if spec.time_column is not None:
        times = [r[spec.time_index] for r in rows]
        lo, hi = min(times), max(times)
        where = (
            f"{spec.time_column} >= toDateTime64('{lo:%Y-%m-%d %H:%M:%S.%f}', 3, 'UTC') AND "
            f"{spec.time_column} <= toDateTime64('{hi:%Y-%m-%d %H:%M:%S.%f}', 3, 'UTC') AND "
        )
    found: set[str] = set()
    for start in range(0, len(keys), _CHECK_CHUNK):
        chunk = keys[start : start + _CHECK_CHUNK]
        result = client.query(
            f"SELECT DISTINCT {spec.key_sql} AS k FROM {spec.table} WHERE {where}k IN %(keys)s",
            parameters={"keys": chunk},
        )
        found.update(str(r[0]) for r in result.result_rows)
    return found


def write_pending(client: Client, pending: PendingWrite) -> WriteResult:
    """Insert each table's rows that the store does not hold yet (runs in the writer thread)."""
    result = WriteResult()
    for table, rows in pending.rows.items():
        if not rows:
            continue
        spec = _SPECS_BY_TABLE[table]
        unique = dedupe_in_batch(spec, rows)
        existing = _existing_keys(client, spec, unique)
        fresh = [r for r in unique if spec.key_of(r) not in existing]
        if fresh:
            columns = list(zip(*fresh, strict=True))
            client.insert(
                table,
                columns,
                column_names=list(spec.columns),
                column_oriented=True,
                settings=INSERT_SETTINGS,
            )
        result.inserted[table] = len(fresh)
        result.skipped[table] = len(rows) - len(fresh)
    return result
