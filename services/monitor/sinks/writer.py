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

import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from clickhouse_connect.driver.client import Client

from driftloop.v1 import events_pb2 as pb
from services.common.kafka import ConsumedBatch
from services.common.logging import get_logger
from services.monitor.sinks.arrow import column_types, to_arrow
from services.monitor.sinks.rows import (
    POSITION_KEY_SQL,
    REJECTED_SPEC_COLUMNS,
    SINK_TABLES,
    Row,
    TableSpec,
    keyed_once,
    rejected_row,
    spec_for_message,
    ts,
    unstorable_row,
)
from services.monitor.store import INSERT_SETTINGS

__all__ = ["SINK_INSERT_SETTINGS", "PendingWrite", "SinkBuffer", "WriteResult", "write_pending"]

_REJECTED = TableSpec(
    "sink_rejected",
    REJECTED_SPEC_COLUMNS,
    key_sql=POSITION_KEY_SQL,
    to_row=lambda env: (),
    key_index=lambda r: f"{r[0]}/{r[1]}/{r[2]}",
)
# A written block holds one row per sink key (`keyed_once`), and every sink table's sorting
# key determines its sink key (tests/integration/monitor/test_sink_key_check.py checks it on
# the migrated store), so no two rows of a block share a sorting key: ReplacingMergeTree's
# merge of the block on insert (`optimize_on_insert`) could not remove a row. Skipping it
# saves ~30 % of an insert (20k predictions: ~77 -> ~55 ms).
SINK_INSERT_SETTINGS: dict[str, object] = {**INSERT_SETTINGS, "optimize_on_insert": 0}
_CHECK_CHUNK = 5_000  # keys per key-check query
_RANGE_FACTOR = 4  # stored rows in the batch's time range fetched whole, per batch row
_log = get_logger(__name__)


@dataclass
class PendingWrite:
    """Rows per table and the offsets they complete (commit these after the write)."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    # the watermarks' input: newest event time per (partition, model) of the predictions
    # (predictions.log) and of the labels (labels.feedback) in this write
    prediction_times: dict[tuple[int, str], int] = field(default_factory=dict)
    label_times: dict[tuple[int, str], int] = field(default_factory=dict)


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
            try:
                row = spec.to_row(env)
            except (ValueError, OverflowError) as exc:  # never crash-loop on one record
                pending.rows[_REJECTED.table].append(unstorable_row(env, str(exc), now))
                continue
            pending.rows[spec.table].append(row)
            message = env.message
            if isinstance(message, pb.PredictionLog):
                times, key = pending.prediction_times, (env.partition, message.model)
                times[key] = max(message.time_ms, times.get(key, message.time_ms))
            elif isinstance(message, pb.LabelEvent):
                at = message.event_time_ms or env.timestamp_ms  # as the labels row has it
                times, key = pending.label_times, (env.partition, message.model)
                times[key] = max(at, times.get(key, at))
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
    rejected: dict[str, int] = field(default_factory=dict)


_SPECS_BY_TABLE: dict[str, TableSpec] = {s.table: s for s in SINK_TABLES.values()}
_SPECS_BY_TABLE[_REJECTED.table] = _REJECTED


def _existing_keys(
    client: Client, spec: TableSpec, rows: Sequence[Row], keys: Sequence[str] | None = None
) -> set[str]:
    """The keys of `rows` the store already holds. With a time column, first one query for
    every key stored within the batch's time range (none for a live stream's new batch, the
    batch itself on a replay), intersected here; only when that range holds more than
    `_RANGE_FACTOR` x the batch, the keys are sent in chunks (`k IN ...`, which the store
    parses per key: ~10 us each). Both answer exactly the same question."""
    if keys is None:
        keys = [spec.key_of(r) for r in rows]
    where = ""
    if spec.time_column is not None:
        times = [r[spec.time_index] for r in rows]
        lo, hi = min(times), max(times)
        where = (
            f"{spec.time_column} >= fromUnixTimestamp64Milli(toInt64({int(lo)}), 'UTC') AND "
            f"{spec.time_column} <= fromUnixTimestamp64Milli(toInt64({int(hi)}), 'UTC')"
        )
        limit = _RANGE_FACTOR * len(keys)
        stored = client.query(
            f"SELECT {spec.key_sql} AS k FROM {spec.table} WHERE {where} LIMIT {limit + 1}"
        ).result_rows
        if len(stored) <= limit:
            return {str(r[0]) for r in stored}.intersection(keys)
        where += " AND "
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
        unique = keyed_once(spec, rows)
        existing = _existing_keys(client, spec, list(unique.values()), list(unique))
        fresh = [r for k, r in unique.items() if k not in existing]
        failed: list[tuple[Row, str]] = []
        if fresh:
            failed = _insert(client, spec, fresh)
        if failed:
            if table == _REJECTED.table:  # nowhere left to put them: stop, loudly
                raise RuntimeError(f"cannot store dead letters: {failed[0][1]}")
            now_ms = int(time.time() * 1000)
            dead = [_dead_letter(spec, row, why, now_ms) for row, why in failed]
            known = _existing_keys(client, _REJECTED, dead)
            dead = [r for r in dead if _REJECTED.key_of(r) not in known]
            if dead:
                _insert_or_raise(client, _REJECTED, dead)
            result.rejected[table] = len(failed)
        result.inserted[table] = len(fresh) - len(failed)
        result.skipped[table] = len(rows) - len(fresh)
    return result


_TYPES: dict[str, dict[str, str]] = {}  # table -> column -> ClickHouse type (per process)


def _insert_or_raise(client: Client, spec: TableSpec, rows: Sequence[Row]) -> None:
    types = _TYPES.get(spec.table)
    if types is None:
        types = _TYPES[spec.table] = column_types(client, spec.table)
    table = to_arrow(rows, spec.columns, types)
    client.insert_arrow(spec.table, table, settings=SINK_INSERT_SETTINGS)


def _insert(client: Client, spec: TableSpec, rows: Sequence[Row]) -> list[tuple[Row, str]]:
    """Insert `rows`; if the block is refused, find the rows that are refused by halving
    (the others are inserted) and return them with the store's reason."""
    try:
        _insert_or_raise(client, spec, rows)
        return []
    except Exception as exc:
        if len(rows) == 1:
            return [(rows[0], str(exc)[:2000])]
        _log.warning("sink.insert_refused", table=spec.table, rows=len(rows), error=str(exc)[:500])
    mid = len(rows) // 2
    return _insert(client, spec, rows[:mid]) + _insert(client, spec, rows[mid:])


def _dead_letter(spec: TableSpec, row: Row, reason: str, now_ms: int) -> Row:
    """A refused row in sink_rejected, keyed by its table and a hash of its own key (the
    row no longer knows its Kafka position), so a replay does not repeat it."""
    key = spec.key_of(row)
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)
    return (
        f"table:{spec.table}", 0, digest, f"insert refused: {reason}", key,
        repr(row)[:100_000], ts(now_ms),
    )  # fmt: skip
