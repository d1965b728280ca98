"""The ingest loop: consume → validate → dead-letter → dedup → seal → announce → commit.

Delivery argument (DESIGN.md §4, issue 4). A consumed record ends in exactly one place:
a row of one sealed version, or a record on `data.rejected`, or (replayed, at or below
its dataset's sealed watermark) nowhere again, because it is already in a version.

* Offsets are committed only to `committable_offsets(consumed, pending)`: one past the
  last consumed record, held back to the first record of any dataset's unsealed rows. A
  commit happens after the batch's dead letters are acknowledged and after any seal's
  manifest is written and its `DatasetVersion` acknowledged. So a crash loses nothing:
  everything after the committed offset is consumed again.
* Replay cannot duplicate: the manifests are the commit point of a version and list the
  offsets it covers; at start-up and on every assignment the sealed watermarks are
  rebuilt from them, and replayed records of a dataset at or below its watermark are
  skipped before validation. A seal always takes all of a dataset's pending rows, so
  every row of that dataset consumed before the seal is in it or an earlier version.
* Sealing the same rows twice writes nothing: the version id is the content address and
  the manifest is created only if absent. A crash between the manifest and the
  announcement is repaired at start-up by re-announcing each dataset's head version
  (the monitor's sink is idempotent by version id).
* Event-id dedup across batches: `dedup.EventDedup` (Redis fast path, rebuilt from the
  sealed versions when Redis loses it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from opentelemetry import metrics

from driftloop.v1.events_pb2 import DataEvent, RejectedEvent
from services.common.feature_store import OnlineFeatureStore
from services.common.kafka import ProtobufConsumer, ProtobufProducer
from services.common.logging import get_logger
from services.common.settings import TopicNames
from services.ingest.config import IngestSettings
from services.ingest.dedup import EventDedup, owner_of
from services.ingest.schema import DatasetSchema
from services.ingest.sealing import OffsetTracker, SealedWatermarks, SealPolicy, committable_offsets
from services.ingest.storage import (
    VersionStorage,
    head_versions,
    known_categories,
    rebuild_watermarks,
    seal_version,
)
from services.ingest.validation import (
    AcceptedRows,
    Code,
    DatasetContext,
    Reason,
    Rejection,
    decode_events,
    validate_batch,
)
from services.ingest.versioning import VersionManifest

__all__ = ["IngestPipeline", "PipelineStats", "update_online_features", "wall_clock_ms"]

_log = get_logger(__name__)
Record: TypeAlias = ConsumerRecord[bytes, bytes]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


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
class PipelineStats:
    consumed: int = 0
    accepted: int = 0
    rejected: int = 0
    replay_skipped: int = 0  # at or below a sealed watermark: already in a version
    versions: int = 0
    sealed_rows: int = 0


@dataclass
class _Pending:
    """A dataset's accepted rows not yet in a version."""

    received_ms: int  # ingest clock when the oldest of them was received
    tables: list[pa.Table] = field(default_factory=list)
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    claims: dict[str, str] = field(default_factory=dict)  # event id -> owner position
    rows: int = 0


class IngestPipeline:
    """The consume/seal loop over injected clients (started by the caller)."""

    def __init__(
        self,
        *,
        consumer: ProtobufConsumer,
        producer: ProtobufProducer,
        storage: VersionStorage,
        dedup: EventDedup,
        schemas: dict[str, DatasetSchema],
        ingest: IngestSettings,
        topics: TopicNames,
        service_name: str = "driftloop-ingest",
        meter: metrics.Meter | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        features: OnlineFeatureStore | None = None,
    ) -> None:
        self._features = features
        self._consumer, self._producer, self._storage = consumer, producer, storage
        self._dedup, self._schemas, self._ingest = dedup, schemas, ingest
        self._topics, self._service, self._clock_ms = topics, service_name, clock_ms
        self._policy = SealPolicy(ingest.seal_max_rows, ingest.seal_max_age_ms)
        meter = meter or metrics.get_meter("driftloop.ingest")
        self._rejected_total = meter.create_counter(
            "driftloop.ingest.rejected", unit="{record}", description="dead-lettered, per reason"
        )
        self._accepted_total = meter.create_counter("driftloop.ingest.accepted", unit="{record}")
        self._versions_total = meter.create_counter("driftloop.ingest.versions", unit="{version}")
        self.stats = PipelineStats()
        self._lock = asyncio.Lock()
        self._epoch = 0  # bumped on every assignment: older fetched records are dropped
        self._stopping = False
        self._reset_stream_state()
        self._watermarks = SealedWatermarks()
        self._ceiling: dict[tuple[str, int], int] = {}  # highest watermark per partition
        self._heads: dict[str, VersionManifest] = {}
        self._known: dict[str, dict[str, set[str]]] = {}

    def _reset_stream_state(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._consumed = OffsetTracker()
        self._committed: dict[tuple[str, int], int] = {}

    # -- durable state -------------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild state from the manifests, then re-announce each dataset's head."""
        await self._reload()
        # The first compute call imports pyarrow's lazy modules (~3 s): not in a batch.
        validate_batch([DataEvent(dataset=name) for name in self._schemas], self._schemas, 0)
        for manifest in self._heads.values():
            await self._announce(manifest)
        _log.info("ingest.recovered", heads=len(self._heads), datasets=sorted(self._heads))

    async def _reload(self) -> None:
        manifests = await asyncio.to_thread(self._storage.manifests)
        self._watermarks = rebuild_watermarks(manifests)
        self._ceiling = {}
        for manifest in manifests:
            self._raise_ceiling(manifest)
        self._heads = head_versions(manifests)
        self._known = known_categories(manifests)

    def _raise_ceiling(self, manifest: VersionManifest) -> None:
        for r in manifest.source_offsets:
            key = (r.topic, r.partition)
            self._ceiling[key] = max(self._ceiling.get(key, -1), r.last_offset)

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        return _Rebalance(self)

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
        self._stopping = True  # stop: nothing more is sealed or committed

    async def step(self) -> None:
        """One poll: process what came, seal what is due, commit what is durable."""
        epoch = self._epoch
        fetched = await self._consumer.raw.getmany(
            timeout_ms=self._poll_timeout_ms(), max_records=self._ingest.poll_max_records
        )
        async with self._lock:
            if epoch != self._epoch:
                await self._rewind()  # fetched across a rebalance: read them again
                return
            records = [r for recs in fetched.values() for r in recs]
            if records:
                await self._process(records)
            for dataset in self._due():
                await self._seal(dataset)
            await self._commit()

    async def seal_all(self) -> None:
        """Seal every dataset's pending rows now and commit (benchmarks, revocation)."""
        async with self._lock:
            for dataset in list(self._pending):
                await self._seal(dataset)
            await self._commit()

    def _poll_timeout_ms(self) -> int:
        now = self._clock_ms()
        waits = [self._policy.ms_until_due(p.received_ms, now) or 0 for p in self._pending.values()]
        return min([self._ingest.poll_timeout_ms, *waits])

    def _due(self) -> list[str]:
        now = self._clock_ms()
        return [
            name
            for name, p in self._pending.items()
            if self._policy.should_seal(p.rows, p.received_ms, now)
        ]

    # -- one batch -----------------------------------------------------------------------

    async def _process(self, records: list[Record]) -> None:
        now = self._clock_ms()
        for r in records:
            self._consumed.add(r.topic, r.partition, r.offset)
        self.stats.consumed += len(records)
        decoded = decode_events([r.value for r in records])
        keep = self._not_yet_sealed(records, decoded)
        records, events = [records[i] for i in keep], [decoded[i] for i in keep]
        result = validate_batch(events, self._schemas, now, self._contexts())
        rejections = list(result.rejected)
        for name, rows in result.accepted.items():
            rejections += await self._dedup_and_add(name, rows, records, now)
        await self._dead_letter(records, rejections, now)

    def _not_yet_sealed(self, records: Sequence[Record], decoded: Sequence[object]) -> list[int]:
        keep: list[int] = []
        for i, (r, event) in enumerate(zip(records, decoded, strict=True)):
            if (
                r.offset <= self._ceiling.get((r.topic, r.partition), -1)
                and isinstance(event, DataEvent)
                and self._watermarks.is_sealed(event.dataset, r.topic, r.partition, r.offset)
            ):
                continue
            keep.append(i)
        self.stats.replay_skipped += len(records) - len(keep)
        return keep

    def _contexts(self) -> dict[str, DatasetContext]:
        return {
            name: DatasetContext(
                seen_event_ids=self._pending[name].claims.keys() if name in self._pending else (),
                known_categories=self._known.get(name, {}),
            )
            for name in self._schemas
        }

    async def _dedup_and_add(
        self, name: str, rows: AcceptedRows, records: Sequence[Record], now: int
    ) -> list[Rejection]:
        """Claim the accepted ids; rows whose id another record holds are rejected."""
        ids: list[str] = rows.table.column("event_id").to_pylist()
        owners = [
            owner_of(records[i].topic, records[i].partition, records[i].offset)
            for i in rows.indices.tolist()
        ]
        pending = self._pending.get(name) or _Pending(received_ms=now)
        duplicate = await self._dedup.claim(name, ids, owners, pending.claims)
        keep = np.flatnonzero(~duplicate)
        table = rows.table.take(pa.array(keep)) if duplicate.any() else rows.table
        if table.num_rows:
            self._pending[name] = pending
            pending.tables.append(table)
            pending.rows += table.num_rows
            for j in keep.tolist():
                r = records[int(rows.indices[j])]
                pending.tracker.add(r.topic, r.partition, r.offset)
                pending.claims[ids[j]] = owners[j]
            self._remember_categories(name, table)
            if self._features is not None:
                await update_online_features(self._features, name, table)
            self.stats.accepted += table.num_rows
            self._accepted_total.add(table.num_rows, {"dataset": name})
        reason = Reason(Code.DUPLICATE_EVENT_ID, "event_id", "accepted in an earlier batch")
        return [
            Rejection(int(rows.indices[j]), (reason,), name, ids[j])
            for j in np.flatnonzero(duplicate).tolist()
        ]

    def _remember_categories(self, name: str, table: pa.Table) -> None:
        known = self._known.setdefault(name, {})
        for feature in self._schemas[name].categorical:
            values = pc.unique(pc.drop_null(table.column(feature))).to_pylist()
            known.setdefault(feature, set()).update(values)

    async def _dead_letter(
        self, records: Sequence[Record], rejections: Sequence[Rejection], now: int
    ) -> None:
        """Send every rejection with its original bytes and wait for the acks."""
        if not rejections:
            return
        items = [
            (records[x.index].key, _rejected_event(records[x.index], x, self._service, now))
            for x in rejections
        ]
        await asyncio.gather(*await self._producer.send_many(self._topics.data_rejected, items))
        counts: dict[str, int] = {}
        for rejection in rejections:
            for code in set(rejection.codes):
                counts[code] = counts.get(code, 0) + 1
        for code, n in counts.items():
            self._rejected_total.add(n, {"reason": code})
        self.stats.rejected += len(rejections)
        _log.info("records.rejected", count=len(rejections), reasons=dict(sorted(counts.items())))

    # -- seal, announce, commit ----------------------------------------------------------

    async def _seal(self, name: str) -> None:
        pending = self._pending[name]
        stored = await asyncio.to_thread(
            seal_version,
            self._storage,
            self._schemas[name],
            pa.concat_tables(pending.tables),
            parent=self._heads.get(name),
            source_offsets=pending.tracker.ranges(),
            thresholds=(self._ingest.psi_threshold, self._ingest.null_rate_jump),
            created_at_ms=self._clock_ms(),
        )
        manifest = stored.manifest
        await self._announce(manifest)
        # Only now is the batch durable and announced: it may stop holding the commit back.
        del self._pending[name]
        self._heads[name] = manifest
        self._watermarks.update(name, [*manifest.source_offsets, *pending.tracker.ranges()])
        self._raise_ceiling(manifest)
        self.stats.versions += 1
        self.stats.sealed_rows += pending.rows
        self._versions_total.add(1, {"dataset": name, "status": manifest.status})
        _log.info(
            "version.sealed",
            dataset=name,
            version_id=manifest.version_id,
            parent=manifest.parent_version_id,
            rows=manifest.row_count,
            status=manifest.status,
            reasons=manifest.status_reasons,
            already_stored=not stored.created,
        )

    async def _announce(self, manifest: VersionManifest) -> None:
        storage_uri, manifest_uri = self._storage.uris(manifest)
        message = manifest.to_proto(storage_uri, manifest_uri)
        await self._producer.send_and_wait(
            self._topics.datasets_versions, message, key=manifest.dataset
        )

    async def _commit(self) -> None:
        offsets = committable_offsets(self._consumed, [p.tracker for p in self._pending.values()])
        assigned = self._consumer.assignment()
        todo = {
            TopicPartition(t, p): offset
            for (t, p), offset in offsets.items()
            if TopicPartition(t, p) in assigned and self._committed.get((t, p)) != offset
        }
        if not todo:
            return
        await self._consumer.commit(todo)
        self._committed.update({(tp.topic, tp.partition): o for tp, o in todo.items()})
        _log.info(
            "offsets.committed",
            offsets={f"{tp.topic}/{tp.partition}": o for tp, o in sorted(todo.items())},
            pending_rows={name: p.rows for name, p in self._pending.items()},
        )

    # -- rebalancing ---------------------------------------------------------------------

    async def on_revoked(self) -> None:
        """Seal what is pending so the next owner need not replay it (not when stopping:
        a stop commits nothing more)."""
        if not self._stopping and self._pending:
            await self.seal_all()

    async def on_assigned(self) -> None:
        """A new assignment starts every partition at its committed offset: drop the
        in-memory stream state and re-read the durable state, which another member may
        have advanced. (The first assignment has nothing to drop: `recover` just ran.)"""
        async with self._lock:
            if self._consumed or self._pending:
                self._epoch += 1
                self._reset_stream_state()
                await self._reload()

    async def _rewind(self) -> None:
        """Every assigned partition back to its committed offset: records fetched across
        a rebalance may be from either side of it, so none of them is trusted."""
        raw = self._consumer.raw
        for tp in raw.assignment():
            committed = await raw.committed(tp)
            if committed is None:
                await raw.seek_to_beginning(tp)
            else:
                raw.seek(tp, committed)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, pipeline: IngestPipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: object) -> None:
        await self._pipeline.on_revoked()

    async def on_partitions_assigned(self, assigned: object) -> None:
        await self._pipeline.on_assigned()


def _rejected_event(r: Record, rejection: Rejection, service: str, now: int) -> RejectedEvent:
    return RejectedEvent(
        source_topic=r.topic,
        source_partition=r.partition,
        source_offset=r.offset,
        original_key=r.key or b"",
        original_value=r.value or b"",
        reasons=[reason.to_proto() for reason in rejection.reasons],
        dataset=rejection.dataset,
        event_id=rejection.event_id,
        service=service,
        rejected_at_ms=now,
    )
