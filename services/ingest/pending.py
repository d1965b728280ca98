"""In-memory state of the ingest loop between seals: where a polled batch came from
(`SourceBatch`), and each dataset's accepted rows not yet in a version (`PendingRows`).

Both keep per-record facts as arrays, so the bookkeeping of a batch (offset ranges,
dedup owners, replay skipping) costs a few array operations per batch, not Python work
per record. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.ingest.offsets import OffsetTracker, SealedWatermarks

__all__ = ["PendingRows", "Record", "SourceBatch"]

Record: TypeAlias = ConsumerRecord[bytes, bytes]
_VALUE, _KEY, _OFFSET = attrgetter("value"), attrgetter("key"), attrgetter("offset")


class SourceBatch:
    """One poll's records, partition after partition (offsets increasing within each):
    their values and keys, and their source partition and offset as arrays.

    The `ConsumerRecord`s themselves are not kept: bytes are not tracked by the garbage
    collector, records are, and holding thousands of them across a step promotes them
    to the oldest generation and triggers full collections."""

    def __init__(self, fetched: Mapping[TopicPartition, Sequence[Record]]) -> None:
        self.partitions = [(tp.topic, tp.partition) for tp, recs in fetched.items() if recs]
        records = [r for recs in fetched.values() for r in recs]
        self.values: list[bytes | None] = list(map(_VALUE, records))
        self.keys: list[bytes | None] = list(map(_KEY, records))
        sizes = [len(recs) for recs in fetched.values() if recs]
        self.partition = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        self.offset = np.fromiter(map(_OFFSET, records), np.int64, len(records))

    def __len__(self) -> int:
        return len(self.values)

    def take(self, keep: np.ndarray) -> SourceBatch:
        """The records at `keep` (increasing positions)."""
        out = SourceBatch.__new__(SourceBatch)
        out.partitions = self.partitions
        out.values = [self.values[i] for i in keep.tolist()]
        out.keys = [self.keys[i] for i in keep.tolist()]
        out.partition, out.offset = self.partition[keep], self.offset[keep]
        return out

    def source(self, i: int) -> tuple[str, int, int]:
        """(topic, partition, offset) of record `i`."""
        topic, partition = self.partitions[int(self.partition[i])]
        return topic, partition, int(self.offset[i])

    def add_to(self, tracker: OffsetTracker, positions: np.ndarray | None = None) -> None:
        """Widen `tracker` by the records at `positions` (increasing; None: all)."""
        part = self.partition if positions is None else self.partition[positions]
        offset = self.offset if positions is None else self.offset[positions]
        if not part.size:
            return
        bounds = np.flatnonzero(np.diff(part)) + 1
        firsts = np.concatenate([[0], bounds])
        lasts = np.concatenate([bounds - 1, [part.size - 1]])
        for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
            topic, partition = self.partitions[int(part[first])]
            tracker.add(topic, partition, int(offset[first]))
            tracker.add(topic, partition, int(offset[last]))

    def owners(self, positions: np.ndarray) -> pa.Array:
        """`topic/partition/offset` of the records at `positions` (see `dedup.owner_of`)."""
        prefixes = pa.array([f"{t}/{p}/" for t, p in self.partitions], pa.string())
        prefix = prefixes.take(pa.array(self.partition[positions]))
        offsets = pc.cast(pa.array(self.offset[positions]), pa.string())
        return pc.binary_join_element_wise(prefix, offsets, "")

    def not_yet_sealed(
        self,
        datasets: pa.Array,
        decoded: np.ndarray,
        watermarks: SealedWatermarks,
        ceiling: Mapping[tuple[str, int], int],
    ) -> np.ndarray:
        """Positions of the records to process: all but those of a dataset at or below its
        sealed watermark (replayed, already in a version). Only records at or below the
        highest watermark of their partition are looked at one by one."""
        limit = np.array([ceiling.get(tp, -1) for tp in self.partitions], dtype=np.int64)
        maybe = np.flatnonzero(self.offset <= limit[self.partition]) if self.values else ()
        sealed = [
            i
            for i in np.asarray(maybe, dtype=np.int64).tolist()
            if decoded[i]
            and watermarks.is_sealed(
                datasets[i].as_py(), *self.partitions[int(self.partition[i])], int(self.offset[i])
            )
        ]
        keep = np.ones(len(self.values), dtype=bool)
        keep[sealed] = False
        return np.flatnonzero(keep)


@dataclass
class PendingRows:
    """A dataset's accepted rows not yet in a version."""

    received_ms: int  # ingest clock when the oldest of them was received
    tables: list[pa.Table] = field(default_factory=list)
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    claims: list[tuple[pa.Array, pa.Array]] = field(default_factory=list)  # (ids, owners)
    rows: int = 0

    def add(
        self, table: pa.Table, owners: pa.Array, batch: SourceBatch, positions: np.ndarray
    ) -> None:
        """Take `table` (rows of the batch's records at `positions`, claimed by `owners`)."""
        self.tables.append(table)
        self.rows += table.num_rows
        batch.add_to(self.tracker, positions)
        self.claims.append((table.column("event_id").combine_chunks(), owners))

    def event_ids(self) -> list[str]:
        return [i for ids, _ in self.claims for i in ids.to_pylist()]
