"""Partitions a consumer group cannot read, recorded where operators (and the CLI) see them.

A `StuckPartition` is written by the consumer that hit an unreadable record batch
(`kafka_fetch.GuardedFetcher`) and removed when that partition reads past the batch again.
An operator answers with a `Resolution` (`driftloop kafka seek`): `retry` (after fixing
the cause, e.g. installing the missing codec and restarting) or `skip` (go past the
batch; the consumer dead-letters the span as `batch_undecodable`). Both live in Redis,
which holds only rebuildable state: losing it loses no data, since a stuck partition's
offset is never committed past the batch, and the consumer records it again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import redis

__all__ = [
    "MemoryStuckLedger",
    "RedisStuckLedger",
    "Resolution",
    "StuckLedger",
    "StuckPartition",
]

_STUCK = "driftloop:kafka:stuck:"  # + group -> hash "topic/partition" -> StuckPartition json
_RESOLVE = "driftloop:kafka:resolve:"  # + group -> hash "topic/partition" -> Resolution json


@dataclass(frozen=True)
class StuckPartition:
    group: str
    topic: str
    partition: int
    offset: int  # first offset of the batch that cannot be read
    next_offset: int | None  # one past that batch (where a skip resumes), when known
    position: int  # where the consumer stands: a retry reads again from here
    cause: str
    since_ms: int
    service: str

    @property
    def name(self) -> str:
        return f"{self.topic}/{self.partition}"

    def describe(self) -> str:
        span = f"{self.offset}..{self.next_offset - 1}" if self.next_offset else f"{self.offset}"
        return (
            f"{self.name} stuck at offset {span} (group {self.group}): {self.cause}; "
            f"fix the cause and run `driftloop kafka seek {self.topic} {self.partition} "
            f"--group {self.group} --retry`, or `--skip` to dead-letter the batch"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> StuckPartition:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Resolution:
    action: Literal["retry", "skip"]
    offset: int  # the stuck offset it answers (a stale answer is ignored)
    requested_ms: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Resolution:
        return cls(**json.loads(raw))


class StuckLedger(Protocol):
    def record(self, stuck: StuckPartition) -> None: ...
    def clear(
        self, group: str, topic: str, partition: int, *, keep_resolution: bool = False
    ) -> None: ...
    def resolution(self, group: str, topic: str, partition: int) -> Resolution | None: ...
    def recorded(self, group: str) -> list[StuckPartition]: ...


def _field(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class MemoryStuckLedger:
    """In-process ledger (consumers without Redis, unit tests)."""

    def __init__(self) -> None:
        self.stuck: dict[tuple[str, str], StuckPartition] = {}
        self.resolutions: dict[tuple[str, str], Resolution] = {}

    def record(self, stuck: StuckPartition) -> None:
        self.stuck[(stuck.group, stuck.name)] = stuck

    def clear(
        self, group: str, topic: str, partition: int, *, keep_resolution: bool = False
    ) -> None:
        self.stuck.pop((group, _field(topic, partition)), None)
        if not keep_resolution:
            self.resolutions.pop((group, _field(topic, partition)), None)

    def resolution(self, group: str, topic: str, partition: int) -> Resolution | None:
        return self.resolutions.get((group, _field(topic, partition)))

    def recorded(self, group: str) -> list[StuckPartition]:
        return [s for (g, _), s in self.stuck.items() if g == group]

    def request(self, group: str, topic: str, partition: int, resolution: Resolution) -> None:
        self.resolutions[(group, _field(topic, partition))] = resolution


class RedisStuckLedger:
    """The ledger in Redis, shared by every replica of a group and the CLI."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def record(self, stuck: StuckPartition) -> None:
        self._redis.hset(_STUCK + stuck.group, stuck.name, stuck.to_json())

    def clear(
        self, group: str, topic: str, partition: int, *, keep_resolution: bool = False
    ) -> None:
        pipe = self._redis.pipeline()
        pipe.hdel(_STUCK + group, _field(topic, partition))
        if not keep_resolution:
            pipe.hdel(_RESOLVE + group, _field(topic, partition))
        pipe.execute()

    def resolution(self, group: str, topic: str, partition: int) -> Resolution | None:
        raw = self._redis.hget(_RESOLVE + group, _field(topic, partition))
        return Resolution.from_json(raw) if raw else None

    def recorded(self, group: str) -> list[StuckPartition]:
        return [
            StuckPartition.from_json(raw) for raw in self._redis.hgetall(_STUCK + group).values()
        ]

    def request(self, group: str, topic: str, partition: int, action: str) -> StuckPartition:
        """Answer a stuck partition (the CLI); raises LookupError when it is not stuck."""
        raw = self._redis.hget(_STUCK + group, _field(topic, partition))
        if not raw:
            raise LookupError(f"{_field(topic, partition)} is not stuck in group {group!r}")
        stuck = StuckPartition.from_json(raw)
        answer = Resolution(action, stuck.offset, int(time.time() * 1000))  # type: ignore[arg-type]
        self._redis.hset(_RESOLVE + group, stuck.name, answer.to_json())
        return stuck

    def all(self) -> list[StuckPartition]:
        found = []
        for key in sorted(self._redis.scan_iter(match=_STUCK + "*")):
            for raw in self._redis.hgetall(key).values():
                found.append(StuckPartition.from_json(raw))
        return sorted(found, key=lambda s: (s.group, s.topic, s.partition))
