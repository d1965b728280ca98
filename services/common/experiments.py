"""Experiments: which variants of a model get which share of traffic, declared and stored
durably in the registry's artifact store, cached in Redis for the routers.

An experiment (`ExperimentSpec`) names a model, its live variants with weights in percent
(the first one is the control, the champion: it takes what the others leave and is the
fallback), a salt for the sticky hash, a holdout share (always served the control and
kept out of the comparison) and shadow variants (mirrored, logged, never returned).

Durability: every change (`start`, `stop`) is a new immutable JSON record
`experiments/<name>/<seq:012d>.json` claimed with `put_if_absent`, so two writers never
overwrite each other and the history is kept; the current state of an experiment is its
newest record. Redis holds only a cache of the running set (`load_running`), rebuilt from
the store whenever it is missing (e.g. after FLUSHALL), and a pub/sub channel on which
every change is announced so that router replicas reload at once.
"""

from __future__ import annotations

import json
import time
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.common.artifacts import ArtifactStore
from services.common.registry.manifest import validate_name

__all__ = [
    "CACHE_KEY",
    "CHANNEL",
    "ExperimentError",
    "ExperimentRecord",
    "ExperimentSpec",
    "ExperimentStore",
    "VariantSpec",
]

CHANNEL = "driftloop:experiments:changed"
CACHE_KEY = "driftloop:experiments:running"
_MAX_ATTEMPTS = 20


class ExperimentError(ValueError):
    """An experiment that is invalid, unknown or cannot be changed as asked."""


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the serving variant (deployment) name, e.g. champion")
    weight: float = Field(default=0.0, ge=0.0, le=100.0, description="percent of traffic")
    version: str = Field(default="", description="registry version or alias, for the record")

    @property
    def buckets(self) -> int:
        return round(self.weight * 100)


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    variants: list[VariantSpec] = Field(min_length=1)
    salt: str = ""
    holdout: float = Field(default=0.0, ge=0.0, le=100.0, description="percent held out")
    shadows: list[VariantSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        validate_name(self.name, "experiment name")
        validate_name(self.model)
        names = [v.name for v in (*self.variants, *self.shadows)]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if "\x1f" in self.effective_salt:
            raise ValueError("the salt must not contain the 0x1F separator")
        challengers = sum(v.buckets for v in self.variants[1:])
        if challengers + self.holdout_buckets > 10_000:
            raise ValueError(
                f"challenger weights ({challengers / 100:g}%) plus holdout "
                f"({self.holdout:g}%) exceed 100%"
            )
        return self

    @property
    def control(self) -> VariantSpec:
        return self.variants[0]

    @property
    def effective_salt(self) -> str:
        return self.salt or self.name

    @property
    def holdout_buckets(self) -> int:
        return round(self.holdout * 100)


class ExperimentRecord(BaseModel):
    """One immutable entry of an experiment's history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    status: Literal["running", "stopped"]
    spec: ExperimentSpec
    actor: str = ""
    reason: str = ""
    at_ms: int = 0


class ExperimentStore:
    """Experiments in the artifact store (durable) with an optional Redis cache."""

    def __init__(self, store: ArtifactStore, redis_client: redis.Redis | None = None) -> None:
        self._store = store
        self._redis = redis_client

    def _path(self, name: str, seq: int) -> str:
        return f"experiments/{name}/{seq:012d}.json"

    def names(self) -> list[str]:
        found = {p.split("/")[1] for p in self._store.list("experiments/") if p.count("/") >= 2}
        return sorted(found)

    def history(self, name: str) -> list[ExperimentRecord]:
        validate_name(name, "experiment name")
        paths = sorted(p for p in self._store.list(f"experiments/{name}/") if p.endswith(".json"))
        return [ExperimentRecord.model_validate_json(self._store.get_bytes(p)) for p in paths]

    def current(self, name: str) -> ExperimentRecord | None:
        records = self.history(name)
        return records[-1] if records else None

    def get(self, name: str) -> ExperimentRecord:
        record = self.current(name)
        if record is None:
            raise ExperimentError(f"no experiment named {name!r}")
        return record

    def running(self) -> list[ExperimentSpec]:
        """The running experiments, read from the store (the source of truth)."""
        out = []
        for name in self.names():
            record = self.current(name)
            if record is not None and record.status == "running":
                out.append(record.spec)
        return out

    def start(self, spec: ExperimentSpec, actor: str = "", reason: str = "") -> ExperimentRecord:
        """Record `spec` as running (a new experiment, or a change of a running one: new
        weights, variants, holdout). Only one running experiment per model."""
        for other in self.running():
            if other.model == spec.model and other.name != spec.name:
                raise ExperimentError(
                    f"experiment {other.name!r} already runs on model {spec.model!r}: stop it first"
                )
        return self._append(spec.name, "running", spec, actor, reason)

    def stop(self, name: str, actor: str = "", reason: str = "") -> ExperimentRecord:
        record = self.get(name)
        if record.status == "stopped":
            raise ExperimentError(f"experiment {name!r} is already stopped")
        return self._append(name, "stopped", record.spec, actor, reason)

    def _append(
        self,
        name: str,
        status: Literal["running", "stopped"],
        spec: ExperimentSpec,
        actor: str,
        reason: str,
    ) -> ExperimentRecord:
        for _ in range(_MAX_ATTEMPTS):
            current = self.current(name)
            record = ExperimentRecord(
                seq=(current.seq + 1) if current else 1,
                status=status,
                spec=spec,
                actor=actor,
                reason=reason,
                at_ms=int(time.time() * 1000),
            )
            if self._store.put_if_absent(
                self._path(name, record.seq), record.model_dump_json().encode()
            ):
                self.publish_running()
                return record
        raise ExperimentError(f"could not record the change of {name!r}: another writer won")

    # -- the Redis cache -----------------------------------------------------------------

    def publish_running(self) -> list[ExperimentSpec]:
        """Rebuild the cache from the store and announce the change to every router."""
        running = self.running()
        if self._redis is not None:
            payload = json.dumps([s.model_dump(mode="json") for s in running])
            self._redis.set(CACHE_KEY, payload)
            self._redis.publish(CHANNEL, payload)
        return running

    def load_running(self) -> list[ExperimentSpec]:
        """The running experiments from the cache, rebuilt from the store when absent."""
        if self._redis is None:
            return self.running()
        raw = self._redis.get(CACHE_KEY)
        if raw is None:
            return self.publish_running()
        return parse_running(raw)


def parse_running(raw: bytes | str) -> list[ExperimentSpec]:
    try:
        return [ExperimentSpec.model_validate(item) for item in json.loads(raw)]
    except (ValueError, ValidationError) as exc:
        raise ExperimentError(f"unreadable experiment cache: {exc}") from exc
