"""Aliases as an append-only log of immutable entries in the artifact store.

Entry `seq` lives at `models/<name>/aliases/<seq:012d>.json` and is created with the
store's exclusive `put_if_absent`. A writer folds the log, then claims `last + 1`; if
another writer got there first the claim fails, the writer folds the newcomer in and
tries the next number. So the log never has gaps or duplicates, every entry's
`previous` is exactly the alias's value just before it, and no lock is needed.

Each entry carries a typed `kind` (why the alias moved: a passed gate, a promotion, a
rollback, a removal, or a plain set), so readers never parse the free-text reason; a
promotion past a failed gate is recorded as `forced`.

Redis only caches the fold (aliases and the highest fencing token at some seq, plus that
entry's sha256). The cache is validated against the store and is only a starting point —
the log is always read forward from it — so a stale, wrong or flushed cache costs reads,
never correctness. A cache without the fencing high-water mark is ignored: fencing must
see every entry's token, not only those after the cached point.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.common.artifacts import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactStore,
    sha256_hex,
)
from services.common.registry.manifest import validate_name

__all__ = [
    "ALIAS_KINDS",
    "RESERVED_ALIASES",
    "AliasChange",
    "AliasConflictError",
    "AliasKind",
    "AliasLog",
    "AliasLogError",
    "AliasState",
    "OptionalCache",
    "StaleFenceError",
    "fold_aliases",
    "rollback_target",
    "validate_alias",
]

_log = logging.getLogger(__name__)
# "latest" is resolved by the registry itself, so it can never be set as an alias.
RESERVED_ALIASES = frozenset({"latest"})
_MAX_ATTEMPTS = 10_000

# Why an alias moved. "gate": the trainer set it after a passed gate; "promote" / "rollback":
# an operator (or the rollout) moved it; "remove": it was deleted; "set": anything else.
AliasKind = Literal["set", "gate", "promote", "rollback", "remove"]
ALIAS_KINDS: tuple[str, ...] = ("set", "gate", "promote", "rollback", "remove")
# Logs written before kinds existed marked a rollback only by this reason prefix.
_LEGACY_ROLLBACK_PREFIX = "rollback:"


class AliasLogError(RuntimeError):
    """The alias log is inconsistent (a gap, a duplicate, or an entry that contradicts it)."""


class StaleFenceError(RuntimeError):
    """A fenced write whose token is older than one the log has already accepted: the
    writer's lease expired and a newer holder has written since, so its change is refused."""


class AliasConflictError(RuntimeError):
    """A writer could not claim a log slot after many attempts (pathological contention)."""


class AliasChange(BaseModel):
    """One immutable log entry: `alias` moved from `previous` to `version` (None = removed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    model: str
    alias: str
    version: int | None = Field(default=None, ge=1)
    previous: int | None = Field(default=None, ge=1)
    actor: str = Field(min_length=1)
    reason: str
    at_ms: int = Field(ge=0)
    # Fencing token of the writer's single-flight lease (trainer), if it holds one.
    fence: int | None = Field(default=None, ge=1)
    kind: AliasKind = "set"
    # The target failed its gate and the operator overrode it (`--force`).
    forced: bool = False

    @model_validator(mode="before")
    @classmethod
    def _legacy_kind(cls, data: Any) -> Any:
        """Entries from before typed kinds: a removal or a "rollback:" reason says which."""
        if isinstance(data, dict) and "kind" not in data:
            if data.get("version") is None:
                data = {**data, "kind": "remove"}
            elif str(data.get("reason", "")).startswith(_LEGACY_ROLLBACK_PREFIX):
                data = {**data, "kind": "rollback"}
        return data


class AliasState(BaseModel):
    """The fold of entries 0..seq (seq = -1: the empty log)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = -1
    aliases: dict[str, int] = Field(default_factory=dict)
    # The highest fencing token any entry so far was written with (0: none).
    max_fence: int = Field(default=0, ge=0)


def rollback_target(history: Iterable[AliasChange], alias: str = "champion") -> int | None:
    """The version `alias` pointed to before its current one, skipping versions already
    rolled back: its history is a stack, where a rollback pops and every other move pushes.
    None when there is nothing earlier to go back to."""
    stack: list[int] = []
    for change in history:
        if change.alias != alias:
            continue
        if change.kind == "rollback":
            if stack:
                stack.pop()
        elif change.version is not None:
            stack.append(change.version)
    return stack[-2] if len(stack) >= 2 else None


def validate_alias(alias: str) -> str:
    validate_name(alias, "alias name")
    if alias in RESERVED_ALIASES:
        raise ValueError(f"alias name {alias!r} is reserved")
    return alias


def fold_aliases(entries: Iterable[AliasChange], start: AliasState | None = None) -> AliasState:
    """Apply log entries in order; refuses a gap, a reorder or a contradicting `previous`."""
    state = start or AliasState()
    aliases = dict(state.aliases)
    seq = state.seq
    max_fence = state.max_fence
    for entry in entries:
        if entry.seq != seq + 1:
            raise AliasLogError(
                f"alias log of {entry.model!r}: expected entry {seq + 1}, found {entry.seq}"
            )
        if aliases.get(entry.alias) != entry.previous:
            raise AliasLogError(
                f"alias log of {entry.model!r}: entry {entry.seq} says {entry.alias!r} was "
                f"{entry.previous}, but the log before it says {aliases.get(entry.alias)}"
            )
        if entry.version is None:
            aliases.pop(entry.alias, None)
        else:
            aliases[entry.alias] = entry.version
        seq = entry.seq
        max_fence = max(max_fence, entry.fence or 0)
    return AliasState(seq=seq, aliases=aliases, max_fence=max_fence)


class OptionalCache:
    """Redis used strictly as a cache: a failure is logged and the cache is then skipped
    for `retry_after_s`, so a Redis outage slows nothing down and loses nothing."""

    def __init__(self, client: redis.Redis | None, retry_after_s: float = 30.0) -> None:
        self._client = client
        self._retry_after_s = retry_after_s
        self._down_until = 0.0

    def get(self, key: str) -> bytes | None:
        client = self._usable()
        if client is None:
            return None
        try:
            value = client.get(key)
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: str) -> None:
        client = self._usable()
        if client is None:
            return
        try:
            client.set(key, value)
        except redis.RedisError as exc:
            self._failed(exc)

    def _usable(self) -> redis.Redis | None:
        return self._client if time.monotonic() >= self._down_until else None

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self._retry_after_s
        _log.warning(
            "registry cache (Redis) unavailable, using the store only for %.0f s: %s",
            self._retry_after_s,
            exc,
        )


class AliasLog:
    """The alias log of one model, with an optional cache of its fold."""

    def __init__(self, store: ArtifactStore, model: str, cache: OptionalCache | None = None):
        self._store = store
        self._model = validate_name(model)
        self._cache = cache
        root_id = hashlib.sha256(store.root_uri.encode()).hexdigest()[:16]
        # The store's identity is in the key: two stores may share one Redis.
        self._cache_key = f"driftloop:registry:{root_id}:{model}:aliases"

    def entry_path(self, seq: int) -> str:
        return f"models/{self._model}/aliases/{seq:012d}.json"

    def state(self) -> AliasState:
        state, digest = self._cached()
        start_seq = state.seq
        for raw, entry in self._read_from(state.seq + 1):
            state = fold_aliases([entry], state)
            digest = sha256_hex(raw)
        if state.seq != start_seq and digest is not None:
            self._save_cache(state, digest)
        return state

    def history(self) -> list[AliasChange]:
        entries = [entry for _, entry in self._read_from(0)]
        fold_aliases(entries)  # refuse to report a history that is not a consistent log
        return entries

    def append(
        self,
        alias: str,
        version: int | None,
        actor: str,
        reason: str,
        check: Callable[[AliasState], None] | None = None,
        fence: int | None = None,
        kind: AliasKind = "set",
        forced: bool = False,
    ) -> AliasChange:
        """Claim the next log slot for this change; `check` may refuse it given the state.

        With a `fence` token the change is refused (StaleFenceError) when any entry already
        in the log carries a higher one. The check runs against exactly the state the slot
        is claimed after (the claim is exclusive), so it is a compare-and-set, not a race.
        """
        for _ in range(_MAX_ATTEMPTS):
            state = self.state()
            if fence is not None and state.max_fence > fence:
                raise StaleFenceError(
                    f"alias {alias!r} of {self._model!r}: fencing token {fence} is stale; "
                    f"the log already has token {state.max_fence} (a newer lease holder)"
                )
            if check is not None:
                check(state)
            entry = AliasChange(
                seq=state.seq + 1,
                model=self._model,
                alias=alias,
                version=version,
                previous=state.aliases.get(alias),
                actor=actor,
                reason=reason,
                at_ms=int(time.time() * 1000),
                fence=fence,
                kind=kind,
                forced=forced,
            )
            raw = entry.model_dump_json(exclude={"fence"} if fence is None else None).encode()
            if self._store.put_if_absent(self.entry_path(entry.seq), raw):
                self._save_cache(fold_aliases([entry], state), sha256_hex(raw))
                return entry
        raise AliasConflictError(
            f"could not record the change of alias {alias!r} of {self._model!r} after "
            f"{_MAX_ATTEMPTS} attempts; another writer keeps winning"
        )

    def _read_from(self, seq: int) -> Iterable[tuple[bytes, AliasChange]]:
        while True:
            try:
                raw = self._store.get_bytes(self.entry_path(seq))
            except ArtifactNotFoundError:
                return
            try:
                entry = AliasChange.model_validate_json(raw)
            except ValidationError as exc:
                raise AliasLogError(
                    f"alias log entry {self._store.uri(self.entry_path(seq))} is invalid: {exc}"
                ) from None
            if entry.seq != seq or entry.model != self._model:
                raise AliasLogError(
                    f"alias log entry {self._store.uri(self.entry_path(seq))} claims to be "
                    f"entry {entry.seq} of {entry.model!r}"
                )
            yield raw, entry
            seq += 1

    def _cached(self) -> tuple[AliasState, str | None]:
        blob = self._cache.get(self._cache_key) if self._cache is not None else None
        if not blob:
            return AliasState(), None
        try:
            doc = json.loads(blob)
            state = AliasState(seq=doc["seq"], aliases=doc["aliases"], max_fence=doc["max_fence"])
            digest = str(doc["sha256"])
            # Trust the cache only if the entry it ends at is the one in this store.
            if state.seq >= 0 and self._store.checksum(self.entry_path(state.seq)) == digest:
                return state, digest
        except (ValueError, KeyError, TypeError, ArtifactError):
            pass
        _log.warning("ignoring an alias cache that does not match the log of %r", self._model)
        return AliasState(), None

    def _save_cache(self, state: AliasState, digest: str) -> None:
        if self._cache is None:
            return
        doc = {
            "seq": state.seq,
            "sha256": digest,
            "aliases": state.aliases,
            "max_fence": state.max_fence,
        }
        self._cache.set(self._cache_key, json.dumps(doc, sort_keys=True))
