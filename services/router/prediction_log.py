"""PredictionLog records on `predictions.log`, off the request path.

`submit` never blocks and never fails: it puts the records on a bounded queue, or counts
and logs them as dropped when the queue is full. One sender task drains the queue in
batches. While Kafka takes records they go straight out; when it does not (the enqueue
times out or a delivery fails), they go to the disk spool, and from then on every new
record goes behind them in the spool until a replay has delivered all of it — so the
topic receives the records in the order they were submitted. What the spool cannot hold
is dropped, counted and logged (`prediction_log.dropped`), never silently.

Exactly once per prediction, as far as Kafka lets a producer: the idempotent producer
does not duplicate its retries, a record is spooled only when its own delivery failed,
and the spool advances its committed offset only after Kafka acknowledged a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.common.logging import get_logger
from services.router.spool import Record, Spool

__all__ = ["LogStats", "PredictionLogger", "Record", "SendBatch"]

_log = get_logger(__name__)

# Sends records to the topic; returns the ones Kafka did not take (raising means none
# was taken). A record it returns must not have been written: it goes to the spool.
SendBatch = Callable[[Sequence[Record]], Awaitable[Sequence[Record]]]


@dataclass
class LogStats:
    submitted: int = 0
    sent: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped_queue_full: int = 0
    dropped_spool_full: int = 0


class PredictionLogger:
    def __init__(
        self,
        send: SendBatch,
        spool: Spool,
        *,
        queue_size: int = 50_000,
        batch_size: int = 1_000,
        retry_s: float = 1.0,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self._send = send
        self._spool = spool
        self._queue: asyncio.Queue[Record] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._retry_s = retry_s
        self._on_drop = on_drop
        self.stats = LogStats()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-log")

    def submit(self, records: Sequence[Record]) -> None:
        """Queue records for the topic; never blocks."""
        for i, record in enumerate(records):
            try:
                self._queue.put_nowait(record)
            except asyncio.QueueFull:
                self._dropped("queue_full", len(records) - i)
                break
            self.stats.submitted += 1
        self._idle.clear()

    def _dropped(self, why: str, n: int) -> None:
        if why == "queue_full":
            self.stats.dropped_queue_full += n
        else:
            self.stats.dropped_spool_full += n
        _log.warning(
            "prediction_log.dropped",
            reason=why,
            records=n,
            dropped_total=self.stats.dropped_queue_full + self.stats.dropped_spool_full,
        )
        if self._on_drop is not None:
            self._on_drop(why, n)

    async def _run(self) -> None:
        while True:
            if self._queue.empty() and not self._spool:
                self._idle.set()
            if self._spool:
                try:
                    first = await asyncio.wait_for(self._queue.get(), self._retry_s)
                except TimeoutError:
                    first = None
            else:
                first = await self._queue.get()
            batch = [] if first is None else [first]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._spool:
                self._to_spool(batch)
                await self._replay()
            elif batch:
                failed = await self._try_send(batch)
                if failed:
                    self._to_spool(failed)
                    _log.warning(
                        "prediction_log.spooling", records=len(failed), path=str(self._spool.path)
                    )

    async def _try_send(self, batch: Sequence[Record]) -> Sequence[Record]:
        """Send; returns what was not delivered. No timeout here: the sender bounds its own
        enqueueing, and abandoning a record Kafka may still write would duplicate it."""
        try:
            failed = await self._send(batch)
        except Exception as exc:  # nothing was taken: the spool takes over
            _log.debug("prediction_log.send_failed", error=f"{type(exc).__name__}: {exc}")
            failed = batch
        self.stats.sent += len(batch) - len(failed)
        return failed

    def spool_late(self, records: Sequence[Record]) -> None:
        """Records the sender first could not settle and then saw fail: to the spool."""
        self._to_spool(records)
        self._idle.clear()

    def _to_spool(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        kept = self._spool.append(batch)
        self.stats.spooled += kept
        if kept < len(batch):
            self._dropped("spool_full", len(batch) - kept)

    async def _replay(self) -> None:
        while self._spool:
            records, pos = await asyncio.to_thread(self._spool.read, self._batch_size)
            if not records:
                return
            failed = await self._try_send(records)
            if len(failed) == len(records):
                return  # Kafka still away: retry later from the same place
            # what was delivered is committed; what was not goes behind the rest
            self.stats.sent -= len(records) - len(failed)
            self.stats.replayed += len(records) - len(failed)
            if failed:
                self._spool.append(failed)
            self._spool.commit(pos)
            if not self._spool:
                _log.info("prediction_log.replayed", replayed_total=self.stats.replayed)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything submitted is delivered (or spooled for good at stop)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        await self.drain(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # whatever is still queued goes to the spool: replayed at the next start
        rest = []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        self._to_spool(rest)
        self._spool.close()
