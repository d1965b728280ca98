"""Seal policy by size and by time; offsets to commit; replay watermarks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.datasets.manifest import OffsetRange
from services.ingest.offsets import OffsetTracker, SealedWatermarks, committable_offsets
from services.ingest.seal.policy import SealPolicy

T = "data.events"


def test_seal_by_size() -> None:
    policy = SealPolicy(max_rows=1000, max_age_ms=60_000)
    assert not policy.should_seal(999, oldest_pending_ms=0, now_ms=1)
    assert policy.should_seal(1000, oldest_pending_ms=0, now_ms=1)
    assert policy.seal_reason(1500, oldest_pending_ms=0, now_ms=1) == "size"


def test_seal_by_time_measured_from_the_oldest_pending_record() -> None:
    policy = SealPolicy(max_rows=1000, max_age_ms=60_000)
    assert not policy.should_seal(3, oldest_pending_ms=100_000, now_ms=159_999)
    assert policy.seal_reason(3, oldest_pending_ms=100_000, now_ms=160_000) == "age"
    assert policy.ms_until_due(oldest_pending_ms=100_000, now_ms=150_000) == 10_000
    assert policy.ms_until_due(oldest_pending_ms=100_000, now_ms=170_000) == 0


def test_nothing_pending_never_seals() -> None:
    policy = SealPolicy(max_rows=1, max_age_ms=1)
    assert not policy.should_seal(0, oldest_pending_ms=None, now_ms=10**12)
    assert not policy.should_seal(0, oldest_pending_ms=0, now_ms=10**12)
    assert policy.ms_until_due(None, now_ms=5) is None


def test_seal_policy_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        SealPolicy(max_rows=0)
    with pytest.raises(ValueError, match="must be >= 1"):
        SealPolicy(max_age_ms=0)


def test_offset_tracker_ranges_and_commit_offsets() -> None:
    tracker = OffsetTracker()
    assert not tracker and tracker.ranges() == [] and tracker.commit_offsets() == {}
    tracker.add(T, 1, 42)
    tracker.add_many(T, 0, [7, 5, 9])
    tracker.add(T, 0, 6)
    tracker.add_many(T, 2, [])
    assert tracker and tracker.partitions == [(T, 0), (T, 1)]
    assert tracker.ranges() == [
        OffsetRange(topic=T, partition=0, first_offset=5, last_offset=9),
        OffsetRange(topic=T, partition=1, first_offset=42, last_offset=42),
    ]
    assert tracker.commit_offsets() == {(T, 0): 10, (T, 1): 43}  # next offset to read
    tracker.clear()
    assert not tracker


def test_committable_offsets_hold_back_to_other_pending_batches() -> None:
    # Partition 0 interleaves datasets a (offsets 0, 2, 4) and b (1, 3); b is still pending.
    consumed, a, b = OffsetTracker(), OffsetTracker(), OffsetTracker()
    for offset in range(5):
        consumed.add(T, 0, offset)
        (a if offset % 2 == 0 else b).add(T, 0, offset)
    consumed.add(T, 1, 20)  # partition 1 only carried rejected records, all dead-lettered

    # a sealed: committing 5 would lose b's records on a crash, so commit 1.
    assert committable_offsets(consumed, [b]) == {(T, 0): 1, (T, 1): 21}
    # b sealed too: everything consumed is durable.
    assert committable_offsets(consumed, []) == {(T, 0): 5, (T, 1): 21}


def test_sealed_watermarks_skip_replayed_records() -> None:
    marks = SealedWatermarks()
    assert not marks.is_sealed("a", T, 0, 0)
    marks.update("a", [OffsetRange(topic=T, partition=0, first_offset=0, last_offset=4)])
    marks.update("a", [OffsetRange(topic=T, partition=0, first_offset=1, last_offset=2)])
    assert marks.watermark("a", T, 0) == 4  # never moves back
    assert marks.is_sealed("a", T, 0, 4) and not marks.is_sealed("a", T, 0, 5)
    assert not marks.is_sealed("b", T, 0, 3)  # another dataset's records on the partition
    assert not marks.is_sealed("a", T, 1, 3)


def test_offset_range_is_ordered() -> None:
    with pytest.raises(ValidationError, match="first_offset 5 > last_offset 4"):
        OffsetRange(topic=T, partition=0, first_offset=5, last_offset=4)
    proto = OffsetRange(topic=T, partition=3, first_offset=1, last_offset=2).to_proto()
    assert (proto.topic, proto.partition, proto.first_offset, proto.last_offset) == (T, 3, 1, 2)
