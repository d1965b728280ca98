"""The ingest loop's own logic, driven step by step with in-memory stand-ins for its ports
(consumer, producer, dedup) and a fake clock: offsets are committed only past durable
data, a poll fetched across a rebalance is read again, and a stop commits nothing more.
The same loop against the real broker, Redis and crashes: tests/integration/ingest."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import Message

from driftloop.v1.events_pb2 import DatasetVersion, RejectedEvent
from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import DatasetSchema
from services.common.settings import TopicNames
from services.ingest.config import IngestSettings
from services.ingest.dedup import Claims, Strings
from services.ingest.pipeline import IngestPipeline
from services.ingest.seal.version import VersionWriter
from tests.unit.ingest.conftest import NOW_MS, make_event

TOPICS = TopicNames()
TP = TopicPartition(TOPICS.data_events, 0)
DEADLINE_S = 60.0


class FakeConsumer:
    """One partition's log; positions, commits and seeks as aiokafka keeps them."""

    def __init__(self) -> None:
        self.log: list[ConsumerRecord[bytes, bytes]] = []
        self.position = 0
        self.commits: list[int] = []
        self.seeks: list[int] = []
        self.assigned = {TP}

    @property
    def raw(self) -> FakeConsumer:
        return self

    @property
    def fetcher(self) -> FakeConsumer:
        """The guarded fetch (services.common.kafka_fetch): here the plain one."""
        return self

    def on_skip(self, callback: object) -> None:
        """No batch is ever undecodable here, so none is skipped."""

    def append(self, payloads: Sequence[bytes]) -> None:
        for payload in payloads:
            offset = len(self.log)
            record = ConsumerRecord(TP.topic, 0, offset, 0, 0, b"k", payload, None, 1, 1, [])
            self.log.append(record)

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        records = self.log[self.position : self.position + max_records]
        self.position += len(records)
        # An empty poll waits its timeout, as aiokafka's does (a seal's thread runs on).
        await asyncio.sleep(0 if records else timeout_ms / 1000)
        return {TP: records} if records else {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.commits[-1] if self.commits else None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seek(tp, 0)

    @property
    def committed_offset(self) -> int | None:
        return self.commits[-1] if self.commits else None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: dict[str, list[Message]] = {}

    async def send_many(self, topic: str, items: Sequence[tuple[Any, Message]]) -> list[Any]:
        self.sent.setdefault(topic, []).extend(message for _, message in items)
        return []

    async def send_and_wait(self, topic: str, message: Message, key: str | None = None) -> None:
        self.sent.setdefault(topic, []).append(message)


class FakeDedup:
    """Claims in a dict: an id is a duplicate when another owner holds it."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    async def claim(
        self, dataset: str, ids: Strings, owners: Strings, pending: Claims, *, distinct: bool
    ) -> np.ndarray:
        values = ids.to_pylist() if isinstance(ids, pa.Array) else list(ids)
        who = owners.to_pylist() if isinstance(owners, pa.Array) else list(owners)
        return np.array(
            [self.held.setdefault(i, o) != o for i, o in zip(values, who, strict=True)], bool
        )


class Clock:
    def __init__(self) -> None:
        self.now_ms = NOW_MS

    def __call__(self) -> int:
        return self.now_ms


class Loop:
    def __init__(self, loans: DatasetSchema, root: Path) -> None:
        self.consumer, self.producer, self.clock = FakeConsumer(), FakeProducer(), Clock()
        self.storage = VersionWriter(ArtifactStore(f"file://{root}"))
        self.pipeline_options: dict[str, Any] = dict(
            consumer=self.consumer,
            producer=self.producer,
            storage=self.storage,
            dedup=FakeDedup(),
            schemas={"loans": loans},
            ingest=IngestSettings(
                seal_max_rows=1_000, seal_max_age_ms=10_000, poll_max_records=4, poll_timeout_ms=10
            ),
            topics=TOPICS,
            clock_ms=self.clock,
        )
        self.pipeline = IngestPipeline(**self.pipeline_options)

    def versions(self) -> list[DatasetVersion]:
        return [m for m in self.producer.sent.get(TOPICS.datasets_versions, [])]  # type: ignore[misc]

    def rejected(self) -> list[RejectedEvent]:
        return [m for m in self.producer.sent.get(TOPICS.data_rejected, [])]  # type: ignore[misc]

    async def step_until(self, condition: Any, what: str) -> None:
        """Step the loop until `condition()` holds (a seal runs in a worker thread, so
        this waits on the loop's observable state, with a generous deadline)."""
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {DEADLINE_S} s: {self.pipeline.stats}")
            await self.pipeline.step()
            await asyncio.sleep(0.001)  # let a finished seal's thread hand over

    def sealed_ids(self) -> list[str]:
        return [
            i
            for m in self.storage.manifests("loans")
            for i in self.storage.read_table(m, ["event_id"]).column("event_id").to_pylist()
        ]


@pytest.fixture
async def loop(loans: DatasetSchema, tmp_path: Path) -> Loop:
    loop = Loop(loans, tmp_path / "artifacts")
    await loop.pipeline.recover()
    return loop


def _events(ids: range) -> list[bytes]:
    return [make_event(i).SerializeToString() for i in ids]


async def test_commit_is_held_back_until_the_rows_are_sealed(loop: Loop) -> None:
    loop.consumer.append([b"\xff\xff", *_events(range(10))])  # offset 0: dead-lettered
    await loop.step_until(lambda: loop.consumer.position == 11, "every record polled")
    for _ in range(3):  # finished, pending, nothing due yet
        await loop.pipeline.step()
    assert loop.pipeline.stats.accepted == 10 and len(loop.rejected()) == 1
    # The dead letter is acknowledged, the accepted rows are not durable: the commit
    # may pass offset 0 but not the first pending row.
    assert loop.consumer.committed_offset == 1
    assert not loop.storage.manifests() and not loop.versions()

    loop.clock.now_ms += 10_000  # the oldest pending row is due by age
    await loop.step_until(lambda: loop.consumer.committed_offset == 11, "the commit past the seal")
    [manifest] = loop.storage.manifests("loans")
    assert manifest.row_count == 10
    assert [(r.first_offset, r.last_offset) for r in manifest.source_offsets] == [(1, 10)]
    assert [v.version_id for v in loop.versions()] == [manifest.version_id]


async def test_records_polled_across_a_rebalance_are_read_again(loop: Loop) -> None:
    loop.consumer.append(_events(range(12)))
    await loop.pipeline.step()  # offsets 0-3 checked; the next poll (4-7) started ahead
    await loop.pipeline.step()  # 4-7 checked, 0-3 finished: pending; 8-11 polled ahead
    assert loop.consumer.position == 12
    await loop.pipeline.on_assigned()  # a new epoch: the stream state is dropped
    await loop.pipeline.step()  # the poll from before the assignment: not processed
    assert loop.consumer.seeks == [0]  # nothing committed yet: back to the beginning
    assert loop.pipeline.stats.accepted == 4  # only what was finished before

    await loop.step_until(lambda: loop.pipeline.stats.accepted == 16, "the records read again")
    assert loop.consumer.committed_offset == 0  # their rows are pending
    loop.clock.now_ms += 10_000
    await loop.step_until(lambda: loop.consumer.committed_offset == 12, "the commit of all")
    assert sorted(loop.sealed_ids()) == sorted(f"e{i}" for i in range(12))  # once each
    assert not loop.rejected()  # ids dropped with the stream state are not duplicates


async def test_a_stop_seals_and_commits_nothing_more(loop: Loop) -> None:
    loop.consumer.append(_events(range(8)))
    await loop.step_until(lambda: loop.pipeline.stats.accepted == 8, "rows pending")
    committed = list(loop.consumer.commits)
    loop.clock.now_ms += 10_000  # due, but the loop is stopping
    stop = asyncio.Event()
    stop.set()
    await loop.pipeline.run(stop)
    assert loop.consumer.commits == committed  # nothing committed past pending rows
    assert not loop.storage.manifests()  # and nothing sealed: a restart reads them again
    assert loop.consumer.committed_offset in (None, 0)


async def test_a_seal_in_flight_at_stop_ends_durable_but_is_not_committed(loop: Loop) -> None:
    loop.consumer.append(_events(range(8)))
    await loop.step_until(lambda: loop.pipeline.stats.accepted == 8, "rows pending")
    loop.clock.now_ms += 10_000
    await loop.pipeline.step()  # the seal starts in a worker thread
    stop = asyncio.Event()
    stop.set()
    before = list(loop.consumer.commits)
    await loop.pipeline.run(stop)
    assert [m.row_count for m in loop.storage.manifests("loans")] == [8]  # it ended
    assert len(loop.versions()) == 1  # and was announced,
    assert loop.consumer.commits == before  # but a stop commits nothing more
    assert loop.consumer.committed_offset in (None, 0)


async def test_rows_due_while_their_last_seal_runs_wait_for_it_without_spinning(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset whose rows are due while its previous seal still runs cannot be sealed
    yet: the loop polls with the reap interval meanwhile, never with a timeout of 0."""
    release = threading.Event()
    write = loop.storage.write

    def slow_write(*args: Any, **kwargs: Any) -> Any:
        release.wait(DEADLINE_S)
        return write(*args, **kwargs)

    monkeypatch.setattr(loop.storage, "write", slow_write)
    timeouts: list[int] = []
    getmany = loop.consumer.getmany

    async def recording(timeout_ms: int, max_records: int) -> Any:
        timeouts.append(timeout_ms)
        return await getmany(timeout_ms, max_records)

    monkeypatch.setattr(loop.consumer, "getmany", recording)
    loop.pipeline = IngestPipeline(**loop.pipeline_options)  # picks up the recording fetch
    await loop.pipeline.recover()
    loop.consumer.append(_events(range(8)))
    await loop.step_until(lambda: loop.pipeline.stats.accepted == 8, "rows pending")
    loop.clock.now_ms += 10_000
    await loop.pipeline.step()  # the first seal starts and blocks in its thread
    loop.consumer.append(_events(range(8, 16)))
    await loop.step_until(lambda: loop.pipeline.stats.accepted == 16, "more rows pending")
    loop.clock.now_ms += 10_000  # these are due too, but their dataset's seal is busy
    timeouts.clear()
    for _ in range(5):
        await loop.pipeline.step()
    assert timeouts and 0 not in timeouts, timeouts
    release.set()
    await loop.step_until(lambda: len(loop.storage.manifests("loans")) == 2, "both seals")
    assert sorted(loop.sealed_ids()) == sorted(f"e{i}" for i in range(16))
