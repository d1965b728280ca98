"""The ingest loop: consume → validate → dead-letter → dedup → seal → announce → commit.

Delivery argument (DESIGN.md §4, issue 4). A consumed record ends in exactly one place:
a row of one sealed version, or a record on `data.rejected`, or (replayed, at or below
its dataset's sealed watermark) nowhere again, because it is already in a version.

* Offsets are committed only to `offsets.committable_offsets(consumed, held)`: one past
  the last processed record, held back to the first record of any dataset's unsealed
  rows: those pending (`Backlog.trackers`), those in a seal still in flight
  (`SealJobs.rows`) and those of the checked batch not yet finished. A commit happens
  after the batch's dead letters are acknowledged, and passes a seal's rows only once
  the seal is reaped: its manifest written and its `DatasetVersion` acknowledged. So a
  crash loses nothing: everything after the committed offset is consumed again. (A poll
  started ahead (`poller`) has only been received, not processed: it does not count as
  consumed.)
* Replay cannot duplicate: the manifests are the commit point of a version and list the
  offsets it covers; at start-up and on every assignment the sealed watermarks are
  rebuilt from them (`seal.history.SealedHistory`), and replayed records of a dataset
  at or below its watermark are skipped before validation. A seal always takes all of a
  dataset's pending rows (`Backlog.take`), and starts between batches, so every row of
  that dataset processed before it starts is in it or an earlier version; rows processed
  while it runs have higher offsets than any of its rows on the same partition, so the
  watermark it leaves does not cover them.
* Sealing the same rows twice writes nothing: the version id is the content address and
  the manifest is created only if absent. A crash between the manifest and the
  announcement is repaired at start-up by re-announcing each dataset's head version
  (the monitor's sink is idempotent by version id). At most one seal per dataset is in
  flight (`seal.jobs`), so each version's parent is the one sealed before it.
* Event-id dedup across batches: `dedup.EventDedup` (Redis fast path, rebuilt from the
  sealed versions when Redis loses it), plus the ids of the unsealed rows, pending or
  being sealed, which validation treats as seen without asking Redis (the `Backlog`
  keeps them until `sealed` is called for a reaped seal, and takes back those of a
  claim that failed or of a batch dropped at a rebalance).

Each piece of loop state has one owner: the `Backlog` (rows not yet in a version, their
ids, the accepted categories), `SealJobs` (seals in flight), `SealedHistory` (what the
manifests say), the `Poller` (the poll started ahead), the `Intake` (the batch in
flight) and this class (consumed and committed offsets, the assignment epoch). A step
is: poll; `Intake.take` (check the batch, finish the one before, validate again if one
of its claims failed, claim this one's ids); reap finished seals, start due seals,
commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import ConsumerRebalanceListener, TopicPartition
from opentelemetry import metrics

from driftloop.v1.events_pb2 import DataEvent
from services.common.datasets.schema import DatasetSchema
from services.common.feature_store import OnlineFeatureStore
from services.common.kafka import ProtobufConsumer, ProtobufProducer
from services.common.logging import get_logger
from services.common.settings import TopicNames
from services.ingest.backlog import Backlog
from services.ingest.config import IngestSettings
from services.ingest.dedup import Claims, EventDedup, Strings
from services.ingest.intake import Intake, PipelineStats, update_online_features
from services.ingest.offsets import OffsetTracker, committable_offsets
from services.ingest.pending import SourceBatch
from services.ingest.poller import Poller, RebalanceListener
from services.ingest.seal.history import SealedHistory
from services.ingest.seal.jobs import FinishedSeal, SealJobs
from services.ingest.seal.policy import SealPolicy
from services.ingest.seal.version import VersionWriter
from services.ingest.validation import validate_payloads

__all__ = ["IngestPipeline", "PipelineStats", "update_online_features", "wall_clock_ms"]

_log = get_logger(__name__)
_REAP_POLL_MS = 50  # poll timeout while a seal or a checked batch is in flight


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class IngestPipeline:
    """The consume/seal loop over injected clients (started by the caller)."""

    def __init__(
        self,
        *,
        consumer: ProtobufConsumer,
        producer: ProtobufProducer,
        storage: VersionWriter,
        dedup: EventDedup,
        schemas: dict[str, DatasetSchema],
        ingest: IngestSettings,
        topics: TopicNames,
        service_name: str = "driftloop-ingest",
        meter: metrics.Meter | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        features: OnlineFeatureStore | None = None,
    ) -> None:
        self._consumer, self._producer, self._storage = consumer, producer, storage
        self._schemas, self._ingest = schemas, ingest
        self._topics, self._clock_ms = topics, clock_ms
        self._policy = SealPolicy(ingest.seal_max_rows, ingest.seal_max_age_ms)
        meter = meter or metrics.get_meter("driftloop.ingest")
        self._versions_total = meter.create_counter("driftloop.ingest.versions", unit="{version}")
        self.stats = PipelineStats()
        self._intake = Intake(
            producer=producer,
            dedup=dedup,
            schemas=schemas,
            rejected_topic=topics.data_rejected,
            service_name=service_name,
            meter=meter,
            stats=self.stats,
            features=features,
        )
        self._seals = SealJobs(
            storage=storage,
            producer=producer,
            schemas=schemas,
            versions_topic=topics.datasets_versions,
            clock_ms=clock_ms,
        )
        self._lock = asyncio.Lock()
        self._epoch = 0  # bumped on every assignment: older fetched records are dropped
        self._poller = Poller(
            consumer.raw,
            ingest.poll_max_records,
            self._poll_timeout_ms,
            fetch=consumer.fetcher.getmany,
        )
        consumer.fetcher.on_skip(self._intake.dead_letter_span)
        self._stopping = False
        self._reset_stream_state()
        self._sealed = SealedHistory()
        self._backlog = Backlog()

    def _reset_stream_state(self) -> None:
        self._consumed = OffsetTracker()
        self._committed: dict[tuple[str, int], int] = {}

    # -- durable state -------------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild state from the manifests, then re-announce each dataset's head."""
        await self._reload()
        # The first compute call imports pyarrow's lazy modules (~3 s): not in a batch.
        warm_up = [DataEvent(dataset=name).SerializeToString() for name in self._schemas]
        validate_payloads(warm_up, self._schemas, 0)
        heads = self._sealed.heads
        for manifest in heads.values():
            await self._seals.announce(manifest)
        _log.info("ingest.recovered", heads=len(heads), datasets=sorted(heads))

    async def _reload(self) -> None:
        """The sealed history from the manifests, and an empty backlog that knows its
        categories."""
        self._sealed = SealedHistory.of(await asyncio.to_thread(self._storage.manifests))
        self._backlog = Backlog(known=self._sealed.known)

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        return RebalanceListener(self.on_revoked, self.on_assigned)

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.step()
        finally:
            self._stopping = True  # stop: nothing more is sealed or committed
            await self._poller.stop()
        async with self._lock:  # a clean stop: what was started may end, not be committed
            await self._intake.abandon(self._backlog)
            self._apply(await self._seals.wait())

    async def step(self) -> None:
        """One poll: start the next, check this one, finish the batch before it, start
        claiming this one's event ids, seal what is due, commit what is durable.

        A batch is finished (its claims awaited, its rows pending, its rejects
        dead-lettered) in the step after it was checked, so the Redis round trip of its
        claims overlaps the next poll, its decoding and its validation (`intake.Intake`)."""
        epoch, fetched = await self._poller.next(self._epoch)
        async with self._lock:
            if epoch != self._epoch:
                await self._poller.rewind()  # fetched across a rebalance: read them again
                return
            batch = SourceBatch(fetched)
            del fetched  # the records themselves (see SourceBatch)
            if len(batch):
                if not self._stopping:
                    # Poll on at once: aiokafka's fetcher (a task of this loop) can then
                    # ask for the next records before this batch's CPU work begins.
                    self._poller.start(self._epoch)
                    await asyncio.sleep(0)
                batch.add_to(self._consumed)
            await self._intake.take(
                batch,
                self._backlog,
                watermarks=self._sealed.watermarks,
                ceiling=self._sealed.ceiling,
                now=self._clock_ms(),
                restore=self._restore,
            )
            self._apply(self._seals.reap())
            for dataset in self._backlogged():
                # Its rows reached the seal size while its last seal is still running:
                # wait for that seal, so a version stays within one poll of the size.
                self._apply(await self._seals.wait_for(dataset))
            for dataset in self._due():
                self._start_seal(dataset)
            await self._commit()

    async def seal_all(self) -> None:
        """Seal every dataset's pending rows now and commit (benchmarks, revocation)."""
        async with self._lock:
            await self._intake.settle(self._backlog)
            self._apply(await self._seals.wait())
            for dataset in self._backlog.datasets():
                self._start_seal(dataset)
            self._apply(await self._seals.wait())
            await self._commit()

    async def stop_fetching(self) -> None:
        """Drop the poll started ahead, if any (before the consumer stops)."""
        await self._poller.stop()

    def _restore(self) -> dict[str, Claims]:
        """Per dataset the claims of its unsealed rows (re-made if Redis lost them)."""
        restore: dict[str, list[tuple[Strings, Strings]]] = {}
        for name, claims in self._backlog.claims():
            restore.setdefault(name, []).extend(claims)
        for name, rows in self._seals.rows():
            restore.setdefault(name, []).extend(rows.claims)
        return dict(restore)

    def _start_seal(self, name: str) -> None:
        sealed = self._sealed
        self._seals.start(
            name, self._backlog.take(name), sealed.heads.get(name), sealed.references.get(name)
        )

    def _poll_timeout_ms(self) -> int:
        # a due dataset whose last seal still runs waits for that seal (the reap poll
        # below), not for a timeout of 0: that would spin the loop
        busy = {name for name in self._backlog.datasets() if self._seals.busy(name)}
        waits = self._backlog.ms_until_due(self._policy, self._clock_ms(), skip=busy)
        if self._seals or self._intake.in_flight:  # come back soon to finish them
            waits.append(_REAP_POLL_MS)
        return min([self._ingest.poll_timeout_ms, *waits])

    def _backlogged(self) -> list[str]:
        """Datasets at the seal size whose previous seal is still in flight."""
        limit = self._ingest.seal_max_rows
        rows = self._backlog.rows()
        return [name for name, n in rows.items() if self._seals.busy(name) and n >= limit]

    def _due(self) -> list[str]:
        """Datasets due to be sealed that have no seal in flight."""
        due = self._backlog.due(self._policy, self._clock_ms())
        return [name for name in due if not self._seals.busy(name)]

    # -- sealed versions, commits --------------------------------------------------------

    def _apply(self, sealed: list[FinishedSeal]) -> None:
        """Finished seals: durable and announced, so their rows may stop holding the
        commit back and replays of them are skipped from now on."""
        for name, rows, stored in sealed:
            manifest = stored.manifest
            self._sealed.sealed(manifest, rows.tracker.ranges())
            self._backlog.sealed(name, rows)
            self.stats.versions += 1
            self.stats.sealed_rows += rows.rows
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

    async def _commit(self) -> None:
        held = self._backlog.trackers()
        held += [rows.tracker for _, rows in self._seals.rows()]
        if self._intake.in_flight is not None:
            held.append(self._intake.in_flight.tracker)
        offsets = committable_offsets(self._consumed, held)
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
            pending_rows=self._backlog.rows(),
        )

    # -- rebalancing ---------------------------------------------------------------------

    async def on_revoked(self) -> None:
        """Seal what is pending so the next owner need not replay it (not when stopping:
        a stop commits nothing more)."""
        seal = not self._stopping and bool(self._backlog or self._seals or self._intake.in_flight)
        _log.info(
            "partitions.revoked",
            partitions=_names(self._consumer.assignment()),
            pending_rows=self._backlog.rows(),
            sealing=seal,
        )
        if seal:
            await self.seal_all()

    async def on_assigned(self) -> None:
        """A new assignment starts every partition at its committed offset: drop the
        in-memory stream state and re-read the durable state, which another member may
        have advanced. The re-read happens on every assignment, also for a member that
        consumed nothing since the last one: a member killed between seal and commit
        leaves a sealed version whose offsets are uncommitted, and its successor must
        know those records are already sealed."""
        async with self._lock:
            self._apply(await self._seals.wait())  # durable; the reload below reads it
            await self._intake.abandon(self._backlog)
            self._epoch += 1  # a poll started before this assignment is read again
            self._reset_stream_state()
            await self._reload()
        _log.info(
            "partitions.assigned", partitions=_names(self._consumer.assignment()), epoch=self._epoch
        )


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)
