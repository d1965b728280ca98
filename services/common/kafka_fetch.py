"""A fetch that no record batch can crash: `GuardedFetcher.getmany`.

aiokafka decodes a partition's record batches lazily, inside `getmany()`. A batch it
cannot read (a codec whose library is missing, a corrupt batch, a record the client
cannot iterate) raises out of `getmany()` every time, before any per-record code runs;
since the offset is never committed, a service that lets it through dies on the same
batch at every restart, and every partition stops, not just the bad one.

What the fetcher does instead:

* It finds the partition and batch that failed (aiokafka's record iterator names them in
  its frame), rewinds every other partition to where this fetch started (records aiokafka
  had already drained for them are lost with the exception, so they are read again), and
  reads the good records in front of the bad batch on its own partition.
* It pauses just that partition. The others keep flowing. It logs one
  `kafka.partition_stuck` line (topic, partition, offset, cause, what to do), counts
  `driftloop.kafka.stuck_batches`, and records the partition in the `StuckLedger`
  (Redis), where `/readyz`, `driftloop kafka stuck` and `driftloop stack status` show it.
* Nothing is skipped silently: the stuck partition's committed offset stays before the
  batch (the service only commits what it was given). It is tried again every
  `retry_s` (a transient fault heals by itself), at once when an operator answers
  `retry` (`driftloop kafka seek … --retry`, after fixing the cause; a restart retries
  too), or moved past the batch on `skip`, after `on_skip` has dead-lettered the span.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import metrics

from services.common.kafka_stuck import MemoryStuckLedger, StuckLedger, StuckPartition
from services.common.logging import get_logger

__all__ = ["FailedBatch", "GuardedFetcher", "disable_codecs", "failed_batch"]

_log = get_logger(__name__)
Records = dict[TopicPartition, list[Any]]
_ATTEND_EVERY_S = 1.0  # how often a fetcher with a stuck partition looks for an answer
_PREFIX_TIMEOUT_MS = 5_000


class FailedBatch:
    """Where a fetch failed: the partition and the batch's first (and next) offset."""

    def __init__(self, tp: TopicPartition, offset: int, next_offset: int | None) -> None:
        self.tp, self.offset, self.next_offset = tp, offset, next_offset


def failed_batch(exc: BaseException) -> FailedBatch | None:
    """The batch whose decoding raised `exc`, from aiokafka's record iterator
    (`PartitionRecords._unpack_records`: locals `tp`, `next_batch`), or None when the
    error did not come from decoding records."""
    tb: TracebackType | None = exc.__traceback__
    found = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_unpack_records" and "tp" in frame.f_locals:
            found = frame.f_locals
        tb = tb.tb_next
    if found is None:
        return None
    tp = found["tp"]
    batch = found.get("next_batch")
    owner = found.get("self")
    if batch is not None:
        return FailedBatch(tp, int(batch.base_offset), int(batch.next_offset))
    offset = getattr(owner, "next_fetch_offset", None)
    return FailedBatch(tp, int(offset), None) if offset is not None else None


def disable_codecs(names: str) -> None:
    """Make aiokafka believe the codecs in `names` ("lz4,zstd") have no library, as on a
    machine without cramjam (fault injection: DRIFTLOOP_KAFKA_DISABLED_CODECS)."""
    from aiokafka import codec

    for name in filter(None, (n.strip() for n in names.split(","))):
        setattr(codec, f"has_{name}", lambda: False)


class GuardedFetcher:
    """`getmany()` of one consumer, with unreadable batches quarantined per partition."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        group: str,
        service: str,
        ledger: StuckLedger | None = None,
        retry_s: float = 60.0,
        on_skip: Callable[[StuckPartition], Awaitable[None]] | None = None,
        meter: metrics.Meter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer, self._group, self._service = consumer, group, service
        self._ledger: StuckLedger = ledger or MemoryStuckLedger()
        self._retry_s, self._on_skip, self._clock = retry_s, on_skip, clock
        meter = meter or metrics.get_meter("driftloop.kafka")
        self._stuck_total = meter.create_counter(
            "driftloop.kafka.stuck_batches",
            unit="{batch}",
            description="record batches a consumer could not read (partition paused)",
        )
        self._stuck: dict[TopicPartition, StuckPartition] = {}
        self._retry_at: dict[TopicPartition, float] = {}
        self._retrying: set[TopicPartition] = set()
        self._attended_at = float("-inf")
        # Stuck partitions recorded by an earlier owner (or run) of this group's
        # partitions: cleared from the ledger once this consumer reads past them.
        self._assignment: set[TopicPartition] = set()
        self._inherited: dict[TopicPartition, StuckPartition] = {}

    @property
    def stuck(self) -> list[StuckPartition]:
        return sorted(self._stuck.values(), key=lambda s: (s.topic, s.partition))

    def on_skip(self, callback: Callable[[StuckPartition], Awaitable[None]]) -> None:
        self._on_skip = callback

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> Records:
        """Like `AIOKafkaConsumer.getmany()`, except that an unreadable batch pauses its
        partition (and returns the records in front of it) instead of raising."""
        if self._stuck:
            await self._attend()
        positions = await self._positions()
        try:
            records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as exc:  # UnsupportedCodecError, CorruptRecordException, any other
            where = failed_batch(exc)  # raised while decoding a batch; else not ours
            if where is None:
                raise
            return await self._quarantine(where, exc, positions)
        if self._retrying:
            await self._check_healed()
        if self._consumer.assignment() != self._assignment:
            await self._inherit()
        if self._inherited:
            await self._check_inherited()
        return records

    async def _inherit(self) -> None:
        self._assignment = set(self._consumer.assignment())
        if not self._group:
            return
        recorded = await asyncio.to_thread(self._ledger.recorded, self._group)
        self._inherited = {
            tp: s
            for s in recorded
            if (tp := TopicPartition(s.topic, s.partition)) in self._assignment
            and tp not in self._stuck
        }

    async def _check_inherited(self) -> None:
        for tp, stuck in list(self._inherited.items()):
            if tp in self._stuck or tp not in self._consumer.assignment():
                del self._inherited[tp]
            elif await self._consumer.position(tp) > stuck.offset:
                del self._inherited[tp]
                _log.info("kafka.partition_resumed", partition=stuck.name, offset=stuck.offset)
                await asyncio.to_thread(
                    self._ledger.clear, stuck.group, stuck.topic, stuck.partition
                )

    async def _positions(self) -> dict[TopicPartition, int]:
        paused = self._consumer.paused()
        out = {}
        for tp in self._consumer.assignment():
            if tp not in paused:
                out[tp] = await self._consumer.position(tp)
        return out

    async def _quarantine(
        self, where: FailedBatch, exc: BaseException, positions: dict[TopicPartition, int]
    ) -> Records:
        tp = where.tp
        for other, position in positions.items():
            if other != tp:
                self._consumer.seek(other, position)  # its drained records were lost
        start = positions.get(tp, where.offset)
        self._consumer.seek(tp, start)
        # The records in front of the bad batch are good: hand them over first.
        prefix: list[Any] = []
        if start < where.offset:
            prefix = await self._read_prefix(tp, start, where.offset)
        position = prefix[-1].offset + 1 if prefix else start
        self._consumer.pause(tp)
        self._consumer.seek(tp, position)
        cause = f"{type(exc).__name__}: {exc}"
        known = self._stuck.get(tp)
        stuck = StuckPartition(
            group=self._group,
            topic=tp.topic,
            partition=tp.partition,
            offset=where.offset,
            next_offset=where.next_offset,
            position=position,
            cause=cause,
            since_ms=known.since_ms if known else int(time.time() * 1000),
            service=self._service,
        )
        self._stuck[tp] = stuck
        self._retrying.discard(tp)
        self._retry_at[tp] = self._clock() + self._retry_s
        if known is None or known.offset != stuck.offset:
            self._stuck_total.add(1, {"topic": tp.topic, "partition": tp.partition})
            _log.error(
                "kafka.partition_stuck",
                topic=tp.topic,
                partition=tp.partition,
                offset=where.offset,
                next_offset=where.next_offset,
                group=self._group,
                cause=cause,
                action=stuck.describe(),
            )
        else:
            _log.info("kafka.partition_still_stuck", partition=stuck.name, offset=stuck.offset)
        await asyncio.to_thread(self._ledger.record, stuck)
        return {tp: prefix} if prefix else {}

    async def _read_prefix(self, tp: TopicPartition, start: int, end: int) -> list[Any]:
        """Records of `tp` in [start, end): a fetch limited to them stops before the bad
        batch (aiokafka decodes lazily). Gaps (transaction markers) may make the limit
        reach into the bad batch; then what was read so far is kept."""
        out: list[Any] = []
        others = [p for p in self._consumer.assignment() if p != tp]
        self._consumer.pause(*others)
        try:
            while (out[-1].offset + 1 if out else start) < end:
                self._consumer.seek(tp, out[-1].offset + 1 if out else start)
                limit = end - (out[-1].offset + 1 if out else start)
                try:
                    got = await self._consumer.getmany(
                        tp, timeout_ms=_PREFIX_TIMEOUT_MS, max_records=limit
                    )
                except Exception:
                    break
                records = [r for r in got.get(tp, []) if r.offset < end]
                if not records:
                    break
                out.extend(records)
        finally:
            already = {p for p in self._stuck if p != tp}
            self._consumer.resume(*[p for p in others if p not in already])
        return out

    async def _attend(self) -> None:
        """Answer operators and retry on schedule (at most once a second)."""
        now = self._clock()
        if now - self._attended_at < _ATTEND_EVERY_S:
            return
        self._attended_at = now
        assigned = self._consumer.assignment()
        for tp, stuck in list(self._stuck.items()):
            if tp not in assigned:  # revoked: its next owner meets the batch again
                self._forget(tp)
                continue
            if tp in self._retrying:
                continue
            answer = await asyncio.to_thread(
                self._ledger.resolution, stuck.group, stuck.topic, stuck.partition
            )
            if answer is not None and answer.offset == stuck.offset and answer.action == "skip":
                await self._skip(tp, stuck)
            elif (answer is not None and answer.offset == stuck.offset) or now >= self._retry_at[
                tp
            ]:
                _log.info("kafka.partition_retry", partition=stuck.name, offset=stuck.offset)
                self._consumer.seek(tp, stuck.position)
                self._consumer.resume(tp)
                self._retrying.add(tp)

    async def _skip(self, tp: TopicPartition, stuck: StuckPartition) -> None:
        if stuck.next_offset is None:
            _log.error(
                "kafka.skip_refused",
                partition=stuck.name,
                offset=stuck.offset,
                reason="the end of the bad batch is not known; retry instead",
            )
            return
        if self._on_skip is not None:
            await self._on_skip(stuck)
        _log.warning(
            "kafka.partition_skipped",
            partition=stuck.name,
            first_offset=stuck.offset,
            last_offset=stuck.next_offset - 1,
            group=stuck.group,
        )
        self._consumer.seek(tp, stuck.next_offset)
        self._consumer.resume(tp)
        self._forget(tp)
        # The answer stays: a consumer that restarts before its offsets pass the span
        # meets the batch again and skips it again (its dead letter then comes twice).
        await asyncio.to_thread(
            partial(self._ledger.clear, keep_resolution=True),
            stuck.group,
            stuck.topic,
            stuck.partition,
        )

    async def _check_healed(self) -> None:
        for tp in list(self._retrying):
            stuck = self._stuck[tp]
            if tp not in self._consumer.assignment():
                self._forget(tp)
                continue
            if await self._consumer.position(tp) > stuck.offset:
                _log.info(
                    "kafka.partition_resumed",
                    partition=stuck.name,
                    offset=stuck.offset,
                    stuck_for_s=round(time.time() - stuck.since_ms / 1000, 1),
                )
                self._forget(tp)
                await asyncio.to_thread(
                    self._ledger.clear, stuck.group, stuck.topic, stuck.partition
                )

    def _forget(self, tp: TopicPartition) -> None:
        self._stuck.pop(tp, None)
        self._retry_at.pop(tp, None)
        self._retrying.discard(tp)
