"""Checking a batch before the one in front of it is finished gives what checking them
one after the other gives: the same pending rows, the same dead letters, the same known
categories, also when claims fail (ids another record holds) and a category or an id
seen early has to be taken back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from opentelemetry import metrics

from driftloop.v1.events_pb2 import DataEvent, RejectedEvent
from services.common.datasets.schema import DatasetSchema
from services.ingest.backlog import Backlog
from services.ingest.dedup import Claims, Strings
from services.ingest.intake import Intake, PipelineStats
from services.ingest.offsets import SealedWatermarks
from services.ingest.pending import SourceBatch
from tests.unit.ingest.conftest import NOW_MS, make_event

T = "data.events"


class _Dedup:
    """Redis claims in a dict: an id is a duplicate when another owner holds it."""

    def __init__(self, held: dict[str, str]) -> None:
        self.held = dict(held)

    async def claim(
        self, dataset: str, ids: Strings, owners: Strings, pending: Claims, *, distinct: bool
    ) -> np.ndarray:
        await asyncio.sleep(0)
        values = ids.to_pylist() if isinstance(ids, pa.Array) else list(ids)
        who = owners.to_pylist() if isinstance(owners, pa.Array) else list(owners)
        out = []
        for event_id, owner in zip(values, who, strict=True):
            holder = self.held.setdefault(event_id, owner)
            out.append(holder != owner)
        return np.array(out, dtype=bool)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[RejectedEvent] = []

    async def send_many(self, topic: str, items: Sequence[tuple[Any, RejectedEvent]]) -> list:
        self.sent += [message for _, message in items]
        return []


def _stream(seed: int) -> list[list[bytes]]:
    """Batches of `loans` events: repeats within and across batches, ids another record
    already holds, and new merchants around the cap of 3 (some only on such ids)."""
    rng = random.Random(seed)
    batches, n = [], 0
    for _ in range(8):
        batch = []
        for _ in range(rng.randint(5, 30)):
            roll = rng.random()
            if roll < 0.15 and n:
                event = make_event(rng.randrange(n))  # a repeat of an earlier id
            elif roll < 0.25:
                event = make_event(1000 + rng.randrange(6))  # held by another record
            else:
                event = make_event(n)
                n += 1
            event.categorical["merchant"] = rng.choice(["m1", "m2", "m3", "m4", "m5", "m6"])
            batch.append(event.SerializeToString())
        batches.append(batch)
    return batches


def _source(payloads: list[bytes], first_offset: int) -> SourceBatch:
    records = [
        ConsumerRecord(T, 0, first_offset + i, 0, 0, b"k", p, None, 1, 1, [])
        for i, p in enumerate(payloads)
    ]
    return SourceBatch({TopicPartition(T, 0): records})


async def _run(loans: DatasetSchema, batches: list[list[bytes]], *, ahead: bool) -> tuple:
    held = {f"e{1000 + i}": "elsewhere/0/1" for i in range(6)}
    producer = _Producer()
    intake = Intake(
        producer=producer,  # type: ignore[arg-type]
        dedup=_Dedup(held),  # type: ignore[arg-type]
        schemas={"loans": loans},
        rejected_topic="rejected",
        service_name="test",
        meter=metrics.get_meter("test"),
        stats=PipelineStats(),
    )
    backlog = Backlog(known={"loans": {"merchant": {"m1"}}})
    offset, rechecks = 0, 0
    for payloads in batches:
        if not ahead:  # finish the batch before checking the next one
            await intake.settle(backlog)
        rechecks += await intake.take(
            _source(payloads, offset),
            backlog,
            watermarks=SealedWatermarks(),
            ceiling={},
            now=NOW_MS,
            restore=dict,
        )
        offset += len(payloads)
    await intake.settle(backlog)
    assert intake.in_flight is None

    table = pa.concat_tables(backlog.take("loans").tables)
    letters = sorted(
        (m.source_offset, m.event_id, tuple((r.code, r.field, r.message) for r in m.reasons))
        for m in producer.sent
    )
    known = {"loans": backlog.known("loans")}
    unsealed = {"loans": set(backlog.unsealed_ids("loans"))}
    return table.to_pylist(), letters, known, unsealed, rechecks


async def test_checking_ahead_changes_nothing(loans: DatasetSchema) -> None:
    rechecked = 0
    for seed in range(8):
        batches = _stream(seed)
        one_by_one = await _run(loans, batches, ahead=False)
        ahead = await _run(loans, batches, ahead=True)
        assert ahead[:4] == one_by_one[:4], seed
        rows, letters, known, unsealed, rechecks = ahead
        rechecked += rechecks
        assert len(rows) + len(letters) == sum(len(b) for b in batches)
        assert unsealed["loans"] == {row["event_id"] for row in rows}
        assert len(known["loans"]["merchant"]) <= 3
        assert not {row["event_id"] for row in rows} & {f"e{1000 + i}" for i in range(6)}
    assert rechecked > 0  # claims failed, so ids and categories were taken back


async def test_a_failed_claim_gives_its_category_slot_back(loans: DatasetSchema) -> None:
    """e1000's claim fails (another record holds it), so its new merchant mX was never
    accepted: the next batch must see one free slot for mZ, not mX as known."""

    def event(i: int, merchant: str) -> bytes:
        e = make_event(i)
        e.categorical["merchant"] = merchant
        return e.SerializeToString()

    batches = [
        [event(0, "m1"), event(1000, "mX"), event(1, "mY")],
        [event(2, "mZ"), event(3, "mZ"), event(4, "mX"), event(1000, "m1"), event(1000, "m1")],
    ]
    one_by_one = await _run(loans, batches, ahead=False)
    ahead = await _run(loans, batches, ahead=True)
    assert ahead[:4] == one_by_one[:4] and ahead[4] == 1
    rows, letters, known, *_ = ahead
    assert sorted(r["event_id"] for r in rows) == ["e0", "e1", "e2", "e3"]
    assert known["loans"]["merchant"] == {"m1", "mY", "mZ"}
    reasons = {offset: codes for offset, _, codes in letters}
    assert reasons[1][0][0] == reasons[6][0][0] == "duplicate_event_id"  # held elsewhere
    assert reasons[5][0][0] == "cardinality_exceeded"  # mX: no slot left after mZ
    assert reasons[7][0][2] == "repeats an earlier record in this batch"


def test_an_undecodable_record_is_dead_lettered_by_position(loans: DatasetSchema) -> None:
    batches = [[make_event(0).SerializeToString(), b"\\xff\\xff", DataEvent().SerializeToString()]]
    rows, letters, *_ = asyncio.run(_run(loans, batches, ahead=True))
    assert [r["event_id"] for r in rows] == ["e0"]
    assert [(offset, codes[0][0]) for offset, _, codes in letters] == [
        (1, "decode_error"),
        (2, "missing_field"),
    ]
