"""The consumer side of the ingest loop: polling one batch ahead, rewinding after a
rebalance, and the rebalance listener.

The next `getmany` starts as soon as a batch has arrived, while that batch is still
being worked on: aiokafka's fetcher (a task of the same event loop) asks the broker for
more at once, and its record parsing fills the loop's waits on Redis instead of
following them. The records of a poll are only *received* early; they are processed,
and count as consumed, in order, after the batch before them. A poll remembers the
assignment epoch it was started in, so the loop can drop it if a rebalance came between.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.ingest.pending import Record

__all__ = ["Fetched", "Poller", "RebalanceListener"]

Fetched: TypeAlias = dict[TopicPartition, list[Record]]


class Poller:
    """`fetch` is the consumer's guarded `getmany` (`services.common.kafka_fetch`): a
    batch that cannot be decoded pauses its partition instead of raising here."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        max_records: int,
        timeout_ms: Callable[[], int],
        fetch: Callable[..., Awaitable[Fetched]] | None = None,
    ) -> None:
        self._consumer, self._max_records, self._timeout_ms = consumer, max_records, timeout_ms
        self._fetch = fetch or consumer.getmany
        self._ahead: tuple[int, asyncio.Task[Fetched]] | None = None

    def start(self, epoch: int) -> None:
        """Start the next poll now, unless one is already running."""
        if self._ahead is None:
            poll = self._fetch(timeout_ms=self._timeout_ms(), max_records=self._max_records)
            self._ahead = (epoch, asyncio.ensure_future(poll))

    async def next(self, epoch: int) -> tuple[int, Fetched]:
        """The next poll's records and the epoch it was started in."""
        self.start(epoch)
        assert self._ahead is not None
        (started, task), self._ahead = self._ahead, None
        return started, await task

    async def stop(self) -> None:
        """Drop the poll started ahead, if any (before the consumer stops)."""
        if self._ahead is not None:
            _, task = self._ahead
            self._ahead = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def rewind(self) -> None:
        """Every assigned partition back to its committed offset: records fetched across
        a rebalance may be from either side of it, so none of them is trusted."""
        for tp in self._consumer.assignment():
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)


class RebalanceListener(ConsumerRebalanceListener):
    def __init__(
        self, revoked: Callable[[], Awaitable[None]], assigned: Callable[[], Awaitable[None]]
    ) -> None:
        self._revoked, self._assigned = revoked, assigned

    async def on_partitions_revoked(self, revoked: object) -> None:
        await self._revoked()

    async def on_partitions_assigned(self, assigned: object) -> None:
        await self._assigned()
