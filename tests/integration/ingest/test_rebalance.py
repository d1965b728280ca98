"""Ingest members joining and leaving one consumer group while events flow: every accepted
record still ends up in exactly one sealed version.

The members are real `python -m services.ingest` processes on a four-partition
`data.events` topic, with dynamic group membership (a stopped member leaves the group at
once) and aiokafka's default round-robin assignor over members ordered by client id
(the service name: `ingest-a`, `ingest-b`, …), so who gets which partition is known. The
checks are the delivery argument of `services.ingest.pipeline`: the rows of all versions
are the accepted input, each once; every bad record is dead-lettered; the versions'
source ranges never overlap; the group's committed offsets reach the end of every
partition. Scenarios: a member joins and leaves (SIGTERM) while events flow; a member is
killed (SIGKILL) right after its seal on revocation, mid-rebalance; an idle member takes
over from one killed between a seal and its commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import DefaultPartitioner

from driftloop.v1.events_pb2 import DataEvent, RejectedEvent
from services.common.kafka import create_producer, ensure_topics
from services.common.kafka_serde import base_headers
from services.common.settings import Settings
from tests.integration.harness import (
    INGEST,
    ServiceProcess,
    committed_vs_end,
    isolated_settings,
    wait_committed_to_end,
    wait_for,
)
from tests.integration.ingest.events_gen import (
    Item,
    Published,
    disjoint_source_ranges,
    make_stream,
    read_topic,
    sealed_rows,
)

PARTITIONS = 4
N_FIRST, N_REST = 2_000, 8_000
KINDS = ["duplicate_event_id", "out_of_range", "decode_error", "missing_field"]
SERVICE_ENV = {
    "DRIFTLOOP_INGEST_SEAL_MAX_ROWS": "700",
    "DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS": "2500",
    "DRIFTLOOP_INGEST_POLL_MAX_RECORDS": "200",
    "DRIFTLOOP_INGEST_GROUP_INSTANCE_ID": "",  # dynamic membership
}


class Member:
    """One ingest process, `ingest-{name}` (its Kafka client id and log `service`)."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path) -> None:
        self.name = f"ingest-{name}"
        member_env = {**env, **SERVICE_ENV, "DRIFTLOOP_SERVICE_NAME": self.name}
        self.process = ServiceProcess(INGEST, member_env, tmp / f"{self.name}.log")

    def events(self, event: str) -> list[dict[str, object]]:
        out = []
        for line in self.process.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event or event in str(record.get("event")):
                out.append(record)
        return out

    def sealed(self) -> bool:
        """Whether it has sealed a version yet."""
        return bool(self.events("version.sealed"))

    async def start(self) -> Member:
        self.process.start()
        up = lambda: bool(self.events("ingest.started"))  # noqa: E731
        await wait_for(up, 60, f"{self.name} to start", self.process)
        return self


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    """Every member a test starts; any still running at the end is killed."""
    started: list[Member] = []
    yield started
    for member in started:
        if member.process.alive():
            member.process.signal(signal.SIGKILL)


async def _assignment(settings: Settings, group_id: str) -> tuple[str, dict[str, set[int]]]:
    """The group's state and each member's partitions (by client id)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    group = response.to_object()["groups"][0]
    members: dict[str, set[int]] = {}
    for m in group["members"]:
        raw = m["member_assignment"]
        decoded = ConsumerProtocolMemberAssignment.decode(raw).assignment if raw else []
        members[m["client_id"]] = {p for _, partitions in decoded for p in partitions}
    return group["state"], members


async def _wait_assigned(
    settings: Settings, group_id: str, expected: dict[str, set[int]], timeout_s: float = 90
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (got := await _assignment(settings, group_id)) != ("Stable", expected):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"group is {got}, expected {expected}")
        await asyncio.sleep(0.2)


async def _committed(settings: Settings, group_id: str) -> dict[int, tuple[int, int]]:
    return await committed_vs_end(settings, group_id, PARTITIONS)


async def _wait_committed_to_end(settings: Settings, group_id: str) -> None:
    await wait_committed_to_end(settings, group_id, timeout_s=120, partitions=PARTITIONS)


async def _wait_uncommitted(
    settings: Settings, group_id: str, flow: Flow, partitions: set[int]
) -> None:
    """Until the flow has published records to `partitions` past the group's committed
    offsets there: rows their owner reads (it polls every 200 ms) and has not sealed."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        committed = await _committed(settings, group_id)
        if any(p.partition in partitions and p.offset >= committed[p.partition][0]
               for p in flow.published):  # fmt: skip
            return
        assert asyncio.get_running_loop().time() < deadline, "no new rows on those partitions"
        await asyncio.sleep(0.1)


class Flow:
    """Publishes `items` in order, each as its own record: `send` the next `n` at once,
    `trickle` a few at a time until told to stop (events keep flowing while members come
    and go), `rest` the remainder."""

    def __init__(self, settings: Settings, items: list[Item]) -> None:
        self._producer = create_producer(settings)
        self._topic, self._headers = settings.topics.data_events, list(base_headers(DataEvent))
        self._todo = list(items)
        self.published: list[Published] = []

    async def __aenter__(self) -> Flow:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def send(self, n: int) -> None:
        items, self._todo = self._todo[:n], self._todo[n:]
        send = self._producer.send_raw
        futures = [await send(self._topic, it.value, it.key, self._headers) for it in items]
        metas = await asyncio.gather(*futures)
        self.published += [
            Published(it, m.partition, m.offset) for it, m in zip(items, metas, strict=True)
        ]

    async def trickle(self, until: asyncio.Event, chunk: int = 20) -> None:
        while not until.is_set():
            assert self._todo, "ran out of events to trickle: make the stream longer"
            await self.send(chunk)
            await asyncio.sleep(0.1)

    async def rest(self) -> list[Published]:
        await self.send(len(self._todo))
        return self.published


def _good_rows_sealed(root: str, published: list[Published]) -> bool:
    return sealed_rows(root)[1].num_rows >= sum(p.item.expected is None for p in published)


async def _check_exactly_once(settings: Settings, published: list[Published]) -> None:
    good = {p.item.event_id: p for p in published if p.item.expected is None}
    manifests, table = sealed_rows(settings.artifact_root)
    ids = table.column("event_id").to_pylist()
    twice = sorted({i for i in ids if ids.count(i) > 1}) if len(ids) != len(set(ids)) else []
    assert not twice, f"{len(ids) - len(set(ids))} rows are in two versions, e.g. {twice[:3]}"
    assert set(ids) == set(good), f"missing {len(set(good) - set(ids))} accepted rows"
    amounts = dict(zip(ids, table.column("loan_amount").to_pylist(), strict=True))
    for event_id, p in good.items():
        assert amounts[event_id] == DataEvent.FromString(p.item.value).numeric["loan_amount"]
    # The source ranges never overlap on a partition, and cover every good record.
    covered = disjoint_source_ranges(manifests)
    for p in good.values():
        ranges = covered.get(p.partition, [])
        assert any(a <= p.offset <= b for a, b in ranges), (p.partition, p.offset)
    # Every bad record is on the dead-letter topic.
    bad = {(p.partition, p.offset) for p in published if p.item.expected}
    rejected = await read_topic(settings, settings.topics.data_rejected, RejectedEvent)
    assert {(m.source_partition, m.source_offset) for _, _, m in rejected} == bad


async def _setup(stack: Settings, tmp: Path) -> tuple[Settings, dict[str, str], list[Item]]:
    settings, env = isolated_settings(stack, tmp)
    t = settings.topics
    await ensure_topics(settings, [t.data_events], partitions=PARTITIONS)
    await ensure_topics(settings, [t.data_rejected, t.datasets_versions], partitions=1)
    items = make_stream(N_FIRST + N_REST, kinds=KINDS, prefix=uuid.uuid4().hex[:8])
    return settings, env, items


def _rebalances(member: Member) -> int:
    """Rebalances that reached `member`: it logs each revocation before sealing for it."""
    return len(member.events("partitions.revoked"))


@pytest.mark.slow
async def test_members_join_and_leave_while_events_flow(
    stack: Settings, tmp_path: Path, members: list[Member]
) -> None:
    settings, env, items = await _setup(stack, tmp_path)
    root, group = settings.artifact_root, env["DRIFTLOOP_INGEST_GROUP_ID"]
    a, b = Member("a", env, tmp_path), Member("b", env, tmp_path)
    members += [a, b]
    await a.start()
    async with Flow(settings, items) as flow:
        await flow.send(N_FIRST)
        await wait_for(a.sealed, 60, "a version", a.process)

        # b joins while events flow: a's partitions are revoked (its pending rows are
        # sealed and committed), then the four are split.
        joined = asyncio.Event()
        trickle = asyncio.create_task(flow.trickle(until=joined))
        await b.start()
        await _wait_assigned(settings, group, {a.name: {0, 2}, b.name: {1, 3}})
        await wait_for(b.sealed, 60, "b's version", b.process)
        joined.set()
        await trickle

        # b leaves while events flow (SIGTERM: it seals and commits nothing more, so its
        # pending rows are consumed again by a, from b's committed offsets).
        left = asyncio.Event()
        trickle = asyncio.create_task(flow.trickle(until=left))
        await _wait_uncommitted(settings, group, flow, {1, 3})  # b has rows pending again
        assert b.process.signal(signal.SIGTERM) == 0, b.process.log_tail()
        await _wait_assigned(settings, group, {a.name: {0, 1, 2, 3}})
        left.set()
        await trickle
        published = await flow.rest()

    await wait_for(lambda: _good_rows_sealed(root, published), 120, "all rows", a.process)
    await _wait_committed_to_end(settings, group)
    assert a.process.signal(signal.SIGTERM) == 0, a.process.log_tail()
    await _check_exactly_once(settings, published)


async def _new_seals(root: str, timeout_s: float = 120) -> AsyncGenerator[dict[int, int]]:
    """Each version sealed from now on, as soon as its manifest is written (before the
    sealing member announces it and commits): its last source offset per partition."""
    versions = Path(root.removeprefix("file://")) / "datasets" / "credit" / "versions"
    seen = {d.name for d in versions.iterdir()}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        for d in os.scandir(versions):
            if d.name in seen:
                continue
            try:
                manifest = json.loads((Path(d.path) / "manifest.json").read_text())
            except (OSError, ValueError):
                continue  # not sealed (yet)
            seen.add(d.name)
            yield {r["partition"]: r["last_offset"] for r in manifest["source_offsets"]}
        await asyncio.sleep(0)  # no pause: the window after a manifest is short
    raise AssertionError(f"no (further) seal within {timeout_s}s")


@pytest.mark.slow
async def test_a_member_killed_during_a_rebalance(
    stack: Settings, tmp_path: Path, members: list[Member]
) -> None:
    settings, env, items = await _setup(stack, tmp_path)
    root, group = settings.artifact_root, env["DRIFTLOOP_INGEST_GROUP_ID"]
    a, b, c = (Member(n, env, tmp_path) for n in "abc")
    members += [a, b, c]
    await a.start()
    await b.start()
    await _wait_assigned(settings, group, {a.name: {0, 2}, b.name: {1, 3}})
    async with Flow(settings, items) as flow:
        await flow.send(N_FIRST)
        for m in (a, b):
            await wait_for(m.sealed, 60, f"{m.name} to seal", m.process)

        # c joins while events flow: a and b revoke (seal what is pending, commit), and b
        # is killed right after its revocation's seal. The group waits out b's session;
        # then a keeps {0, 2} and c gets b's {1, 3}.
        joined = asyncio.Event()
        trickle = asyncio.create_task(flow.trickle(until=joined))
        await _wait_uncommitted(settings, group, flow, {1, 3})  # b has rows pending again
        seen = _rebalances(b)
        c.process.start()
        async with aclosing(_new_seals(root)) as seals:
            async for sealed in seals:  # the first of b's after the rebalance reached it
                if set(sealed) <= {1, 3} and _rebalances(b) > seen:
                    b.process.signal(signal.SIGKILL)
                    break
        committed = await _committed(settings, group)
        print(f"b killed after sealing up to {sealed}; committed then: {committed}")
        await _wait_assigned(settings, group, {a.name: {0, 2}, c.name: {1, 3}})
        joined.set()
        await trickle
        published = await flow.rest()

    await wait_for(lambda: _good_rows_sealed(root, published), 180, "all rows", c.process)
    await _wait_committed_to_end(settings, group)
    for m in (a, c):
        assert m.process.signal(signal.SIGTERM) == 0, m.process.log_tail()
    await _check_exactly_once(settings, published)


def _partition(key: str) -> int:
    """The partition the producer's default partitioner picks for `key`."""
    everything = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), everything, everything))


@pytest.mark.slow
async def test_an_idle_member_takes_over_after_a_kill_between_seal_and_commit(
    stack: Settings, tmp_path: Path, members: list[Member]
) -> None:
    """Every event goes to b's partitions, so a consumes nothing after its assignment.
    b is killed after a seal's manifest is written and before its offsets are committed:
    a takes b's partitions over from the committed offsets and reads that version's
    records again; it must skip them (they are sealed), not seal them a second time."""
    settings, env, items = await _setup(stack, tmp_path)
    root, group = settings.artifact_root, env["DRIFTLOOP_INGEST_GROUP_ID"]
    a, b = Member("a", env, tmp_path), Member("b", env, tmp_path)
    members += [a, b]
    await a.start()
    await b.start()
    await _wait_assigned(settings, group, {a.name: {0, 2}, b.name: {1, 3}})
    for_b = [it for it in items if _partition(it.key) in {1, 3}]
    async with Flow(settings, for_b) as flow:
        await flow.send(N_FIRST // 2)
        await wait_for(b.sealed, 60, "b's version", b.process)
        stop = asyncio.Event()
        trickle = asyncio.create_task(flow.trickle(until=stop))
        assert b.process.proc is not None
        async with aclosing(_new_seals(root)) as seals:
            async for sealed in seals:  # each of b's: pause b; kill it if not committed
                b.process.proc.send_signal(signal.SIGSTOP)
                committed = await _committed(settings, group)
                if any(committed[p][0] <= offset for p, offset in sealed.items()):
                    break
                b.process.proc.send_signal(signal.SIGCONT)  # committed already: next one
        b.process.signal(signal.SIGKILL)
        print(f"b killed after sealing up to {sealed}: {await _committed(settings, group)}")
        assert not a.sealed() and not a.events("offsets.committed")  # idle
        await _wait_assigned(settings, group, {a.name: {0, 1, 2, 3}})
        stop.set()
        await trickle
        published = await flow.rest()

    await wait_for(lambda: _good_rows_sealed(root, published), 120, "all rows", a.process)
    await _wait_committed_to_end(settings, group)
    assert a.process.signal(signal.SIGTERM) == 0, a.process.log_tail()
    stopped = a.events("ingest.stopped")[-1]
    print(f"a: {stopped}")
    await _check_exactly_once(settings, published)
    assert isinstance(stopped["replay_skipped"], int) and stopped["replay_skipped"] > 0
