"""One polled batch through the ingest loop's per-record half, in two steps: `check`
(skip what is already sealed, validate, start claiming the accepted event ids) and
`finish` (wait for the claims, add the claimed rows to their dataset's pending rows,
dead-letter the rest and wait for those acks).

The loop finishes a batch only after polling and decoding the next one, so the Redis
round trip overlaps work that depends on nothing before it; validation of the next
batch still waits for the finish, so it sees exactly the ids and categories it would see
if each batch went through in one go. Every step works on the whole batch as columns
(`wire.decode_flat`, `validate_flat`, one dedup round trip per dataset and chunk); the
only per-record Python left is for rejected records, whose dead letters carry their
original bytes. Sealing and commits are `pipeline`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from opentelemetry import metrics

from driftloop.v1.events_pb2 import RejectedEvent, RejectionReason
from services.common.datasets.schema import DatasetSchema
from services.common.feature_store import OnlineFeatureStore
from services.common.kafka import ProtobufProducer
from services.common.kafka_stuck import StuckPartition
from services.common.logging import get_logger
from services.ingest.backlog import Backlog, Categories, categories_of
from services.ingest.decode.columns import FlatEvents
from services.ingest.decode.wire import decode_flat
from services.ingest.dedup import Claims, EventDedup
from services.ingest.offsets import OffsetTracker, SealedWatermarks
from services.ingest.pending import SourceBatch
from services.ingest.validation import (
    Code,
    Reason,
    Rejection,
    ValidationResult,
    validate_flat,
)

__all__ = ["InFlight", "Intake", "PipelineStats", "rejected_event", "update_online_features"]

_log = get_logger(__name__)


@dataclass
class PipelineStats:
    consumed: int = 0
    accepted: int = 0
    rejected: int = 0
    replay_skipped: int = 0  # at or below a sealed watermark: already in a version
    versions: int = 0
    sealed_rows: int = 0


async def update_online_features(
    store: OnlineFeatureStore, dataset: str, table: pa.Table
) -> int | None:
    """Write the latest accepted features to the online store; the number of keys
    written, or None when Redis failed. A fast path only: a failure is logged, never
    raised, and never holds back sealing or commits (`driftloop datasets
    rebuild-features` restores the store from the sealed versions)."""
    try:
        return await asyncio.to_thread(store.write_latest, dataset, table)
    except Exception as exc:  # any failure here must not stop ingest
        _log.warning(
            "features.write_failed",
            dataset=dataset,
            rows=table.num_rows,
            error=f"{type(exc).__name__}: {exc}",
        )
        return None


@dataclass
class InFlight:
    """A checked batch: validated, its accepted ids counted as seen and its new categories
    as known already, its claims started (`Intake.claim`) but not yet finished."""

    batch: SourceBatch  # its records still to process (replays of sealed ones left out)
    flat: FlatEvents  # the same records, decoded (to validate again, see `Intake.recheck`)
    tracker: OffsetTracker  # every record polled: holds the commit back until finished
    now: int
    result: ValidationResult = field(init=False)
    added_ids: dict[str, list[str]] = field(default_factory=dict)
    added_categories: dict[str, Categories] = field(default_factory=dict)
    claims: dict[str, tuple[pa.Array, asyncio.Task[np.ndarray]]] = field(default_factory=dict)


class Intake:
    """Turns polled batches into pending rows of the `Backlog`: `check` validates a batch,
    `claim` starts claiming its accepted ids in Redis, `finish` waits for the claims, makes
    the claimed rows pending and dead-letters the rest.

    The loop checks batch k+1 before it finishes batch k, so that the Redis round trip of
    k's claims overlaps the polling, decoding and validation of k+1. The result is the
    same as checking k+1 after finishing k: `check` counts a batch's accepted ids as seen
    and its new categories as known at once, which is exactly what finishing it does
    unless one of its claims fails; then `finish` takes those back and reports it, and
    the loop validates k+1 again (`recheck`) before claiming anything of it.
    """

    def __init__(
        self,
        *,
        producer: ProtobufProducer,
        dedup: EventDedup,
        schemas: Mapping[str, DatasetSchema],
        rejected_topic: str,
        service_name: str,
        meter: metrics.Meter,
        stats: PipelineStats,
        features: OnlineFeatureStore | None = None,
    ) -> None:
        self._producer, self._dedup, self._schemas = producer, dedup, schemas
        self._rejected_topic, self._service, self._features = rejected_topic, service_name, features
        self._stats = stats
        self._rejected_total = meter.create_counter(
            "driftloop.ingest.rejected", unit="{record}", description="dead-lettered, per reason"
        )
        self._accepted_total = meter.create_counter("driftloop.ingest.accepted", unit="{record}")
        self._in_flight: InFlight | None = None

    @property
    def in_flight(self) -> InFlight | None:
        """The batch checked in the last step, its claims running (it holds commits back)."""
        return self._in_flight

    async def take(
        self,
        batch: SourceBatch,
        backlog: Backlog,
        *,
        watermarks: SealedWatermarks,
        ceiling: Mapping[tuple[str, int], int],
        now: int,
        restore: Callable[[], Mapping[str, Claims]],
    ) -> bool:
        """One step, in the order that makes checking ahead safe: check `batch` (when it
        has records), finish the batch in flight, validate `batch` again when one of that
        batch's claims failed, then start `batch`'s claims; it stays in flight until the
        next step or `settle`. True when `batch` was validated again."""
        checked = None
        if len(batch):
            flat = decode_flat(batch.values)
            checked = self.check(
                batch, flat, backlog, watermarks=watermarks, ceiling=ceiling, now=now
            )
        rechecked = await self.settle(backlog) and checked is not None
        if checked is not None:
            if rechecked:
                self.recheck(checked, backlog)
            self.claim(checked, restore())
            self._in_flight = checked
        return rechecked

    async def settle(self, backlog: Backlog) -> bool:
        """Finish the batch in flight, if any; True when one of its claims failed."""
        if self._in_flight is None:
            return False
        flight, self._in_flight = self._in_flight, None
        return await self.finish(flight, backlog)

    async def abandon(self, backlog: Backlog) -> None:
        """Drop the batch in flight, if any (its records are consumed again)."""
        if self._in_flight is not None:
            flight, self._in_flight = self._in_flight, None
            await self.drop(flight, backlog)

    def check(
        self,
        batch: SourceBatch,
        flat: FlatEvents,
        backlog: Backlog,
        *,
        watermarks: SealedWatermarks,
        ceiling: Mapping[tuple[str, int], int],
        now: int,
    ) -> InFlight:
        """Skip what is already sealed and validate the rest against `backlog` (ids of
        the rows not yet durable, categories known); this batch's accepted ids and new
        categories count in `backlog` at once."""
        self._stats.consumed += len(batch)
        tracker = OffsetTracker()
        batch.add_to(tracker)
        decoded = np.ones(flat.n, dtype=bool)
        decoded[list(flat.errors)] = False
        keep = batch.not_yet_sealed(flat.dataset, decoded, watermarks, ceiling)
        self._stats.replay_skipped += len(batch) - keep.size
        if keep.size < len(batch):
            batch, flat = batch.take(keep), flat.take(keep)
        flight = InFlight(batch, flat, tracker, now)
        self._validate(flight, backlog)
        return flight

    def recheck(self, flight: InFlight, backlog: Backlog) -> None:
        """Validate `flight` again (its claims not started), against the backlog as the
        batch before it left it after all."""
        backlog.take_back(flight.added_ids, flight.added_categories)
        self._validate(flight, backlog)

    def _validate(self, flight: InFlight, backlog: Backlog) -> None:
        contexts = {name: backlog.context(name) for name in self._schemas}
        flight.result = validate_flat(flight.flat, self._schemas, flight.now, contexts)
        flight.added_ids, flight.added_categories = {}, {}
        for name, rows in flight.result.accepted.items():
            ids, added = backlog.accept(self._schemas[name], rows.table)
            flight.added_ids[name], flight.added_categories[name] = ids, added

    def claim(self, flight: InFlight, restore: Mapping[str, Claims]) -> None:
        """Start claiming the accepted ids (`restore`: per dataset the claims of its
        unsealed rows, re-made if Redis lost them)."""
        for name, rows in flight.result.accepted.items():
            ids = rows.table.column("event_id").combine_chunks()
            owners = flight.batch.owners(rows.indices)
            # Validation let no id through twice in a batch.
            claim = self._dedup.claim(name, ids, owners, restore.get(name, ()), distinct=True)
            flight.claims[name] = (owners, asyncio.ensure_future(claim))

    async def finish(self, flight: InFlight, backlog: Backlog) -> bool:
        """Wait for the claims, add the claimed rows to the backlog's pending rows,
        dead-letter everything else and wait for those acks. True when a claim failed:
        its id and categories were taken back from the backlog."""
        rejections = list(flight.result.rejected)
        now, taken_back = flight.now, False
        for name, rows in flight.result.accepted.items():
            owners, claim = flight.claims[name]
            duplicate = await claim
            keep = np.flatnonzero(~duplicate)
            table = rows.table
            if duplicate.any():
                table, owners = table.take(pa.array(keep)), owners.take(pa.array(keep))
                taken_back = True
                ids = flight.added_ids[name]
                lost = {name: [ids[j] for j in np.flatnonzero(duplicate).tolist()]}
                categories = flight.added_categories[name]
                still = categories_of(self._schemas[name], table)
                dropped = {f: values - still.get(f, set()) for f, values in categories.items()}
                backlog.take_back(lost, {name: dropped})
            if table.num_rows:
                backlog.add(name, table, owners, flight.batch, rows.indices[keep], now)
                if self._features is not None:
                    await update_online_features(self._features, name, table)
                self._stats.accepted += table.num_rows
                self._accepted_total.add(table.num_rows, {"dataset": name})
            reason = Reason(Code.DUPLICATE_EVENT_ID, "event_id", "accepted in an earlier batch")
            ids_column = rows.table.column("event_id")
            rejections += [
                Rejection(int(rows.indices[j]), (reason,), name, ids_column[j].as_py())
                for j in np.flatnonzero(duplicate).tolist()
            ]
        rejections.sort(key=lambda r: r.index)
        await self._dead_letter(flight.batch, rejections, now)
        return taken_back

    @staticmethod
    async def drop(flight: InFlight, backlog: Backlog) -> None:
        """Forget a checked batch (it is consumed again): let its claims end first. Its
        claims name its records' own positions, so a replay re-makes them."""
        backlog.take_back(flight.added_ids, flight.added_categories)
        tasks = [claim for _, claim in flight.claims.values()]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def dead_letter_span(self, stuck: StuckPartition) -> None:
        """An operator skips a record batch nobody can decode (`driftloop kafka seek
        --skip`): one dead letter names the span, its cause and who skipped it, and is
        acknowledged before the consumer moves past the span."""
        last = (stuck.next_offset or stuck.offset + 1) - 1
        reason = RejectionReason(
            code=str(Code.BATCH_UNDECODABLE),
            field="",
            message=(
                f"record batch at offsets {stuck.offset}..{last} of {stuck.name} could not "
                f"be decoded ({stuck.cause}) and was skipped by an operator; its bytes stay "
                "in the Kafka log until the topic's retention removes them"
            ),
        )
        event = RejectedEvent(
            source_topic=stuck.topic,
            source_partition=stuck.partition,
            source_offset=stuck.offset,
            reasons=[reason],
            service=self._service,
            rejected_at_ms=time.time_ns() // 1_000_000,
        )
        await self._producer.send_and_wait(self._rejected_topic, event, key=stuck.name)
        self._rejected_total.add(1, {"reason": str(Code.BATCH_UNDECODABLE)})

    async def _dead_letter(
        self, batch: SourceBatch, rejections: Sequence[Rejection], now: int
    ) -> None:
        """Send every rejection with its original bytes and wait for the acks."""
        if not rejections:
            return
        items = [
            (batch.keys[x.index], rejected_event(batch, x, self._service, now)) for x in rejections
        ]
        await asyncio.gather(*await self._producer.send_many(self._rejected_topic, items))
        counts: dict[str, int] = {}
        for rejection in rejections:
            for code in set(rejection.codes):
                counts[code] = counts.get(code, 0) + 1
        for code, n in counts.items():
            self._rejected_total.add(n, {"reason": code})
        self._stats.rejected += len(rejections)
        _log.info("records.rejected", count=len(rejections), reasons=dict(sorted(counts.items())))


def rejected_event(
    batch: SourceBatch, rejection: Rejection, service: str, now: int
) -> RejectedEvent:
    """The dead letter of record `rejection.index` of `batch`, with its original bytes."""
    topic, partition, offset = batch.source(rejection.index)
    return RejectedEvent(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_key=batch.keys[rejection.index] or b"",
        original_value=batch.values[rejection.index] or b"",
        reasons=[reason.to_proto() for reason in rejection.reasons],
        dataset=rejection.dataset,
        event_id=rejection.event_id,
        service=service,
        rejected_at_ms=now,
    )
