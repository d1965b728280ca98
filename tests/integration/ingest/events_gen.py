"""Synthetic `credit` events for the ingest tests and benchmark, and the data helpers the
integration tests share: publish, read topics and sealed versions back (processes,
settings and waits: `tests.integration.harness`).

Every generated record carries the reason code it must be rejected with (None: it must
be accepted), so tests compare what the service did against what the input was.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from dataclasses import dataclass

import pyarrow as pa
from google.protobuf.message import Message

from driftloop.v1.events_pb2 import DataEvent
from services.common.artifacts import ArtifactStore
from services.common.datasets.manifest import VersionManifest
from services.common.kafka import create_consumer, create_producer, ensure_topics
from services.common.kafka_serde import base_headers
from services.common.settings import Settings
from services.ingest.seal.version import VersionWriter

__all__ = [
    "BAD_KINDS",
    "Item",
    "Published",
    "create_topics",
    "credit_event",
    "make_stream",
    "publish",
    "read_topic",
    "sealed_rows",
]

REGIONS = ["north", "south", "east", "west", "central"]
EMPLOYMENT = ["salaried", "self_employed", "contractor", "unemployed", "retired", "student"]
PURPOSES = [f"purpose_{i:02d}" for i in range(64)]  # exactly the cap: no room for new ones


@dataclass(frozen=True)
class Item:
    key: str
    value: bytes
    event_id: str
    expected: str | None  # reason code it must be rejected with; None: accepted
    duplicate_of: int | None = None  # index of the earlier record it copies


def credit_event(
    rng: random.Random, event_id: str, now_ms: int, income_scale: float = 1.0
) -> DataEvent:
    numeric = {
        "age": float(rng.randint(18, 90)),
        "loan_amount": round(rng.uniform(1_000, 50_000), 2),
        "loan_term_months": float(rng.choice([12, 24, 36, 60])),
        "debt_to_income": rng.uniform(0.0, 2.0),
        "credit_utilization": rng.uniform(0.0, 1.2),
        "num_open_accounts": float(rng.randint(0, 20)),
    }
    if rng.random() > 0.1:
        numeric["annual_income"] = min(rng.lognormvariate(10.5, 0.4) * income_scale, 9e6)
    if rng.random() > 0.6:
        numeric["months_since_last_delinquency"] = float(rng.randint(0, 120))
    categorical = {"region": rng.choice(REGIONS), "loan_purpose": rng.choice(PURPOSES)}
    if rng.random() > 0.05:
        categorical["employment_type"] = rng.choice(EMPLOYMENT)
    event = DataEvent(
        event_id=event_id,
        dataset="credit",
        entity_key=f"app-{rng.randrange(5_000):05d}",
        event_time_ms=now_ms - rng.randrange(3_600_000),
        numeric=numeric,
        categorical=categorical,
        source="tests",
    )
    if rng.random() < 0.3:
        event.label = float(rng.random() < 0.2)
    return event


def _spoil(kind: str, e: DataEvent, rng: random.Random, now_ms: int, i: int) -> bytes:
    """Break `e` in exactly one way (so exactly one reason code applies)."""
    variant = rng.randrange(3)
    if kind == "decode_error":
        return [b"\x0a\x05ab", b"\xff\xff\xff\xff\xff", b"\x12\x02\xc3\x28"][variant]
    if kind == "unknown_dataset":
        e.dataset = "no_such_dataset"
    elif kind == "missing_field":
        if variant == 0:
            del e.numeric["age"]
        elif variant == 1:
            e.entity_key = ""
        else:
            e.event_time_ms = 0
    elif kind == "unknown_field":
        e.numeric["shoe_size"] = 42.0
    elif kind == "wrong_type":
        if variant == 0:
            e.numeric["age"] = 30.5
        else:
            del e.numeric["age"]
            e.categorical["age"] = "thirty"
    elif kind == "out_of_range":
        if variant == 0:
            e.numeric["loan_amount"] = 5.0
        else:
            e.label = 2.0
    elif kind == "not_finite":
        e.numeric["debt_to_income"] = [math.nan, math.inf, -math.inf][variant]
    elif kind == "unknown_category":
        e.categorical["region"] = "atlantis"
    elif kind == "cardinality_exceeded":
        e.categorical["loan_purpose"] = f"rare_{i}"
    elif kind == "event_time_future":
        e.event_time_ms = now_ms + 3_600_000
    elif kind == "event_time_too_old":
        e.event_time_ms = now_ms - 40 * 86_400_000
    else:
        raise ValueError(kind)
    return e.SerializeToString()


BAD_KINDS = [
    "decode_error",
    "unknown_dataset",
    "missing_field",
    "unknown_field",
    "wrong_type",
    "out_of_range",
    "not_finite",
    "unknown_category",
    "cardinality_exceeded",
    "event_time_future",
    "event_time_too_old",
    "duplicate_event_id",
]


def make_stream(
    n: int,
    *,
    bad_fraction: float = 0.05,
    kinds: list[str] | None = None,
    seed: int = 1,
    prefix: str = "evt",
    now_ms: int | None = None,
    income_scale: float = 1.0,
) -> list[Item]:
    """`n` records, about `bad_fraction` of them bad, cycling through `kinds`.

    Duplicates are byte-exact copies of an earlier good record (a producer retry): half
    of them far back (another batch), half the previous good record (the same batch).
    New loan purposes only appear in the second half, when all 64 are known.
    """
    rng = random.Random(seed)
    now_ms = now_ms or int(time.time() * 1000)
    kinds = kinds or BAD_KINDS
    items: list[Item] = []
    good: list[int] = []
    cycle = 0
    for i in range(n):
        kind = None
        if rng.random() < bad_fraction:
            kind = kinds[cycle % len(kinds)]
            cycle += 1
            if (kind == "cardinality_exceeded" and i < n // 2) or (
                kind == "duplicate_event_id" and len(good) < 10
            ):
                kind = kinds[cycle % len(kinds)]  # not yet: the next kind instead
                cycle += 1
        if kind == "duplicate_event_id":
            src = good[rng.randrange(len(good) // 2)] if cycle % 2 else good[-1]
            o = items[src]
            items.append(Item(o.key, o.value, o.event_id, kind, duplicate_of=src))
            continue
        event = credit_event(rng, f"{prefix}-{i:07d}", now_ms, income_scale)
        if kind is None:
            good.append(len(items))
            items.append(Item(event.entity_key, event.SerializeToString(), event.event_id, None))
        else:
            value = _spoil(kind, event, rng, now_ms, i)
            items.append(Item(event.entity_key, value, event.event_id, kind))
    return items


@dataclass(frozen=True)
class Published:
    item: Item
    partition: int
    offset: int


async def publish(settings: Settings, topic: str, items: list[Item]) -> list[Published]:
    """Send each item as its own record (driftloop's headers; values as they are)."""
    headers = list(base_headers(DataEvent))
    async with create_producer(settings) as producer:
        futures = [await producer.send_raw(topic, it.value, it.key, headers) for it in items]
        metas = await asyncio.gather(*futures)
    return [Published(it, m.partition, m.offset) for it, m in zip(items, metas, strict=True)]


async def read_topic(
    settings: Settings, topic: str, message_cls: type[Message], *, idle_s: float = 3.0
) -> list[tuple[int, int, Message]]:
    """Everything on `topic` now: (partition, offset, message), until idle for `idle_s`."""
    out: list[tuple[int, int, Message]] = []
    consumer = create_consumer(settings, topic, group_id=None, message_types={topic: message_cls})
    async with consumer:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_s:
            batch = await consumer.getmany(timeout_ms=300)
            assert not batch.failures, batch.failures[:3]
            if batch.envelopes:
                idle_since = time.monotonic()
            out += [(e.partition, e.offset, e.message) for e in batch.envelopes]
    return out


def sealed_rows(artifact_root: str) -> tuple[list[VersionManifest], pa.Table]:
    """Every sealed version under `artifact_root` and all their rows, concatenated."""
    storage = VersionWriter(ArtifactStore(artifact_root))
    manifests = storage.manifests()
    tables = [storage.read_table(m) for m in manifests]
    return manifests, pa.concat_tables(tables) if tables else pa.table({"event_id": []})


def disjoint_source_ranges(manifests: list[VersionManifest]) -> dict[int, list[tuple[int, int]]]:
    """Per partition the sealed (first, last) offset ranges, sorted; asserts that no two
    of them overlap (no record in two versions)."""
    covered: dict[int, list[tuple[int, int]]] = {}
    for manifest in manifests:
        for r in manifest.source_offsets:
            covered.setdefault(r.partition, []).append((r.first_offset, r.last_offset))
    for ranges in covered.values():
        ranges.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), ranges
    return covered


async def create_topics(settings: Settings) -> None:
    t = settings.topics
    await ensure_topics(settings, [t.data_events], partitions=3)
    await ensure_topics(settings, [t.data_rejected, t.datasets_versions], partitions=1)
