"""A polled batch's bookkeeping as arrays: offset ranges, dedup owners, replay skipping,
and the pending rows of a dataset."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.common.datasets.manifest import OffsetRange
from services.ingest.dedup import owner_of
from services.ingest.offsets import OffsetTracker, SealedWatermarks
from services.ingest.pending import PendingRows, Record, SourceBatch

T = "data.events"


def _record(partition: int, offset: int) -> Record:
    key, value = f"k{offset}".encode(), f"v{partition}/{offset}".encode()
    return ConsumerRecord(T, partition, offset, 0, 0, key, value, None, 1, 1, [])


def _batch() -> SourceBatch:
    # as getmany returns it: partition after partition, offsets increasing within each
    return SourceBatch(
        {
            TopicPartition(T, 2): [_record(2, o) for o in (40, 41, 42)],
            TopicPartition(T, 0): [_record(0, o) for o in (7, 8)],
            TopicPartition(T, 1): [],
        }
    )


def test_a_batch_keeps_the_records_in_order_with_their_positions() -> None:
    batch = _batch()
    assert len(batch) == 5
    assert [batch.source(i) for i in range(5)] == [
        (T, 2, 40), (T, 2, 41), (T, 2, 42), (T, 0, 7), (T, 0, 8),
    ]  # fmt: skip
    assert batch.values == [b"v2/40", b"v2/41", b"v2/42", b"v0/7", b"v0/8"]
    assert batch.keys == [b"k40", b"k41", b"k42", b"k7", b"k8"]


def test_offset_ranges_per_partition_of_all_or_some_records() -> None:
    batch = _batch()
    everything, some = OffsetTracker(), OffsetTracker()
    batch.add_to(everything)
    batch.add_to(some, np.array([1, 3]))
    assert everything.ranges() == [
        OffsetRange(topic=T, partition=0, first_offset=7, last_offset=8),
        OffsetRange(topic=T, partition=2, first_offset=40, last_offset=42),
    ]
    assert some.ranges() == [
        OffsetRange(topic=T, partition=0, first_offset=7, last_offset=7),
        OffsetRange(topic=T, partition=2, first_offset=41, last_offset=41),
    ]
    batch.add_to(some, np.array([], dtype=np.int64))
    assert len(some.ranges()) == 2


def test_owners_are_source_positions() -> None:
    batch = _batch()
    assert batch.owners(np.array([0, 4])).to_pylist() == [owner_of(T, 2, 40), owner_of(T, 0, 8)]


def test_only_records_at_or_below_their_datasets_watermark_are_skipped() -> None:
    batch = _batch()
    marks = SealedWatermarks()
    marks.update("loans", [OffsetRange(topic=T, partition=2, first_offset=0, last_offset=41)])
    marks.update("other", [OffsetRange(topic=T, partition=0, first_offset=0, last_offset=9)])
    ceiling = {(T, 2): 41, (T, 0): 9}
    datasets = pa.array(["loans", "loans", "loans", "loans", "loans"])
    decoded = np.array([True, False, True, True, True])  # an undecodable one is never skipped
    keep = batch.not_yet_sealed(datasets, decoded, marks, ceiling)
    assert keep.tolist() == [1, 2, 3, 4]
    kept = batch.take(keep)
    assert [kept.source(i)[1:] for i in range(4)] == [(2, 41), (2, 42), (0, 7), (0, 8)]
    assert kept.values == [b"v2/41", b"v2/42", b"v0/7", b"v0/8"] and kept.keys[0] == b"k41"
    assert kept.owners(np.array([1])).to_pylist() == [owner_of(T, 2, 42)]
    assert batch.not_yet_sealed(datasets, decoded, SealedWatermarks(), {}).tolist() == [
        0, 1, 2, 3, 4,
    ]  # fmt: skip


def test_pending_rows_collect_tables_ranges_claims_and_ids() -> None:
    batch = _batch()
    rows = PendingRows(received_ms=5)
    table = pa.table({"event_id": ["e1", "e2"], "x": [1.0, 2.0]})
    owners = batch.owners(np.array([0, 3]))
    rows.add(table, owners, batch, np.array([0, 3]))
    assert rows.rows == 2 and rows.tables == [table] and rows.event_ids() == ["e1", "e2"]
    assert [o.to_pylist() for _, o in rows.claims] == [owners.to_pylist()]
    assert [(r.partition, r.first_offset, r.last_offset) for r in rows.tracker.ranges()] == [
        (0, 7, 7), (2, 40, 40),
    ]  # fmt: skip
