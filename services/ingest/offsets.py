"""Kafka offsets and sealed watermarks: which offsets are safe to commit, which replayed
records are already in a version.

Delivery rule (DESIGN.md §4, issue 4): an offset is committed only after every record
before it is durable — in a sealed, announced version or acknowledged on the
dead-letter topic. With several datasets on one topic, one partition interleaves
records of batches that seal at different times, so the offset to commit for a
partition is the first offset still pending in *any* batch, not the sealed batch's
last offset + 1 (`committable_offsets`). On replay after a crash, records of a dataset
at or below its sealed watermark are already in a version and are skipped
(`SealedWatermarks`), so no record lands in two versions.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common.datasets.manifest import OffsetRange

__all__ = [
    "OffsetTracker",
    "SealedWatermarks",
    "TopicPartition",
    "committable_offsets",
]

TopicPartition = tuple[str, int]


class OffsetTracker:
    """First and last offset seen per (topic, partition): for one pending batch (its
    manifest's source ranges), or for everything consumed (the commit ceiling)."""

    def __init__(self) -> None:
        self._first: dict[TopicPartition, int] = {}
        self._last: dict[TopicPartition, int] = {}

    def add(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self._first[key] = min(self._first.get(key, offset), offset)
        self._last[key] = max(self._last.get(key, offset), offset)

    def add_many(self, topic: str, partition: int, offsets: Iterable[int]) -> None:
        values = list(offsets)
        if values:
            self.add(topic, partition, min(values))
            self.add(topic, partition, max(values))

    def __bool__(self) -> bool:
        return bool(self._first)

    def first(self, topic: str, partition: int) -> int | None:
        return self._first.get((topic, partition))

    def last(self, topic: str, partition: int) -> int | None:
        return self._last.get((topic, partition))

    @property
    def partitions(self) -> list[TopicPartition]:
        return sorted(self._first)

    def ranges(self) -> list[OffsetRange]:
        return [
            OffsetRange(topic=t, partition=p, first_offset=self._first[t, p], last_offset=last)
            for (t, p), last in sorted(self._last.items())
        ]

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """Kafka commits the *next* offset to read: last + 1 per partition. Right only when
        this tracker covers everything consumed; else use `committable_offsets`."""
        return {key: last + 1 for key, last in sorted(self._last.items())}

    def clear(self) -> None:
        self._first.clear()
        self._last.clear()


def committable_offsets(
    consumed: OffsetTracker, pending: Iterable[OffsetTracker]
) -> dict[TopicPartition, int]:
    """Per consumed partition, the offset safe to commit: one past the last consumed
    record, held back to the first record of any batch still pending on it.

    Call it after the sealed batch's tracker is removed from `pending` (its version is
    durable and announced) and every dead-lettered record is acknowledged.
    """
    result = consumed.commit_offsets()
    for tracker in pending:
        for key in tracker.partitions:
            first = tracker.first(*key)
            if key in result and first is not None:
                result[key] = min(result[key], first)
    return result


class SealedWatermarks:
    """Highest source offset already sealed per (dataset, topic, partition).

    Rebuilt at start from the manifests' `source_offsets` (the artifact store, not Redis,
    so correctness survives losing Redis) and advanced after each seal. A replayed record
    of a dataset at or below the watermark was consumed before that dataset's last seal,
    so it is in a version already, or was dead-lettered then: skip it.
    """

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str, int], int] = {}

    def update(self, dataset: str, ranges: Iterable[OffsetRange]) -> None:
        for r in ranges:
            key = (dataset, r.topic, r.partition)
            self._marks[key] = max(self._marks.get(key, -1), r.last_offset)

    def watermark(self, dataset: str, topic: str, partition: int) -> int | None:
        return self._marks.get((dataset, topic, partition))

    def is_sealed(self, dataset: str, topic: str, partition: int, offset: int) -> bool:
        mark = self._marks.get((dataset, topic, partition))
        return mark is not None and offset <= mark
