"""The model registry: versions, aliases and verified loading, all durable in the store.

Layout under the artifact root, per model `<name>`:

    models/<name>/versions/<v:06d>/claim.json      version number taken (put_if_absent)
    models/<name>/versions/<v:06d>/model.<ext>     the artifact
    models/<name>/versions/<v:06d>/manifest.json   the commit point
    models/<name>/aliases/<seq:012d>.json          alias log (see aliases.py)

A version exists once its manifest does. The number is claimed first, so two concurrent
registrations never share one; the artifact is written before the manifest, so a crash
mid-registration leaves at most an unused number behind, never a visible half-version.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from services.common.artifacts import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
)
from services.common.registry.aliases import (
    AliasChange,
    AliasKind,
    AliasLog,
    AliasState,
    OptionalCache,
    rollback_target,
    validate_alias,
)
from services.common.registry.formats import (
    FILE_EXTENSIONS,
    check_format,
    library_versions,
    load_artifact,
    save_torch,
    save_xgboost,
)
from services.common.registry.manifest import (
    FORMAT_FRAMEWORK,
    ArtifactRef,
    ModelManifest,
    RegistrationInfo,
    validate_name,
)

if TYPE_CHECKING:
    from services.common.settings import Settings

__all__ = ["LoadedModel", "ModelNotFoundError", "ModelRegistry"]


class ModelNotFoundError(LookupError):
    """No such model, version or alias; the message says what exists instead."""


@dataclass(frozen=True)
class LoadedModel:
    manifest: ModelManifest
    model: Any  # xgboost.Booster, or dict[str, torch.Tensor] for torch formats


class ModelRegistry:
    def __init__(self, store: ArtifactStore, redis: redis.Redis | None = None) -> None:
        self.store = store
        self._cache = OptionalCache(redis) if redis is not None else None

    @classmethod
    def from_settings(cls, settings: Settings, use_redis: bool = True) -> ModelRegistry:
        from services.common.redis_client import sync_redis

        return cls(
            ArtifactStore.from_settings(settings), sync_redis(settings) if use_redis else None
        )

    # -- registering ---------------------------------------------------------------------

    def register(
        self, name: str, artifact: bytes, fmt: str, info: RegistrationInfo
    ) -> ModelManifest:
        """Store `artifact` (bytes already in format `fmt`) as the next version of `name`."""
        validate_name(name)
        artifact_format = check_format(fmt)
        framework = FORMAT_FRAMEWORK[artifact_format]
        version = self._claim_version(name)
        folder = self._version_dir(name, version)
        stored = self.store.put_bytes(f"{folder}/model.{FILE_EXTENSIONS[fmt]}", artifact)
        manifest = ModelManifest(
            **info.model_dump(exclude={"library_versions"}),
            # Detected versions first, so a caller's explicit entries win.
            library_versions={**library_versions(framework), **info.library_versions},
            name=name,
            version=version,
            framework=framework,
            artifact=ArtifactRef(
                path=stored.path, format=artifact_format, sha256=stored.sha256, size=stored.size
            ),
            created_at_ms=int(time.time() * 1000),
        )
        if not self.store.put_if_absent(f"{folder}/manifest.json", manifest.to_json().encode()):
            raise RuntimeError(
                f"{name} version {version} already has a manifest; refusing to "
                "overwrite it (was the claim file deleted?)"
            )
        return manifest

    def register_xgboost(
        self, name: str, booster: Any, info: RegistrationInfo, fmt: str = "xgboost-ubj"
    ) -> ModelManifest:
        return self.register(name, save_xgboost(booster, fmt), fmt, info)

    def register_torch(
        self, name: str, state_dict: Any, info: RegistrationInfo, fmt: str = "torch-state-dict"
    ) -> ModelManifest:
        return self.register(name, save_torch(state_dict, fmt), fmt, info)

    # -- reading -------------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted(
            {p.split("/")[1] for p in self.store.list("models") if p.endswith("/manifest.json")}
        )

    def versions(self, name: str) -> list[int]:
        """Committed versions of `name` (those with a manifest), ascending."""
        return sorted(
            int(p.split("/")[-2]) for p in self._version_files(name) if p.endswith("/manifest.json")
        )

    def resolve(self, name: str, version_or_alias: int | str) -> int:
        """A version number from a number, a numeric string, an alias or "latest"."""
        ref = version_or_alias
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            version = int(ref)
            if not self.store.exists(self._manifest_path(name, version)):
                raise ModelNotFoundError(
                    f"model {name!r} has no version {version}; "
                    f"versions: {self._known_versions(name)}"
                )
            return version
        if ref == "latest":
            versions = self._known_versions(name)
            return versions[-1]
        resolved = self.get_alias(name, ref)
        if resolved is None:
            raise ModelNotFoundError(
                f"model {name!r} has no alias {ref!r}; aliases: {self.aliases(name) or 'none'}"
            )
        return resolved

    def manifest(self, name: str, version_or_alias: int | str = "latest") -> ModelManifest:
        version = self.resolve(name, version_or_alias)
        path = self._manifest_path(name, version)
        manifest = ModelManifest.from_json(self.store.get_bytes(path), source=self.store.uri(path))
        if (manifest.name, manifest.version) != (name, version):
            raise ArtifactIntegrityError(
                f"manifest {self.store.uri(path)} describes {manifest.name!r} version "
                f"{manifest.version}, not {name!r} version {version}"
            )
        return manifest

    def load(self, name: str, version_or_alias: int | str = "latest") -> LoadedModel:
        """The manifest and the parsed model, its sha256 verified before any parsing."""
        manifest = self.manifest(name, version_or_alias)
        ref = manifest.artifact
        try:
            data = self.store.get_bytes(ref.path, expected_sha256=ref.sha256)
        except ArtifactIntegrityError as exc:
            raise ArtifactIntegrityError(
                f"refusing to load model {name!r} version {manifest.version} (its manifest "
                f"records {ref.size} bytes with sha256 {ref.sha256}): {exc}"
            ) from None
        except ArtifactNotFoundError as exc:
            raise ArtifactIntegrityError(
                f"model {name!r} version {manifest.version}: its artifact is missing ({exc})"
            ) from None
        return LoadedModel(manifest, load_artifact(data, ref.format))

    def artifact_problem(self, name: str, version_or_alias: int | str = "latest") -> str | None:
        """Why this version's artifact could not be loaded (missing, or its bytes do not
        match the sha256 in its manifest), naming the path; None when it is intact."""
        manifest = self.manifest(name, version_or_alias)
        ref = manifest.artifact
        where = self.store.uri(ref.path)
        try:
            self.store.get_bytes(ref.path, expected_sha256=ref.sha256)  # reads and hashes
        except ArtifactNotFoundError:
            return f"the artifact of {name!r} v{manifest.version} is missing: {where}"
        except ArtifactIntegrityError as exc:
            return f"model {name!r} v{manifest.version}: {exc}"
        return None

    # -- aliases -------------------------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        actor: str,
        reason: str,
        fence: int | None = None,
        kind: AliasKind = "set",
        forced: bool = False,
        check: Callable[[AliasState], None] | None = None,
    ) -> AliasChange:
        """Point `alias` at `version`; with `fence`, refused if a newer lease has written.
        `check` may refuse the change given the exact state it would be appended after."""
        validate_alias(alias)
        # Versions are immutable once committed, so checking before the append is race-free.
        self.resolve(name, int(version))
        return self._log(name).append(
            alias, int(version), actor, reason, check=check, fence=fence, kind=kind, forced=forced
        )

    def max_fence(self, name: str) -> int:
        """The highest fencing token the alias log of `name` has accepted (0: none)."""
        return self._log(name).state().max_fence

    def remove_alias(
        self, name: str, alias: str, actor: str, reason: str, fence: int | None = None
    ) -> AliasChange:
        validate_alias(alias)

        def must_be_set(state: AliasState) -> None:
            if alias not in state.aliases:
                raise ModelNotFoundError(
                    f"model {name!r} has no alias {alias!r} to remove; "
                    f"aliases: {state.aliases or 'none'}"
                )

        return self._log(name).append(
            alias, None, actor, reason, check=must_be_set, fence=fence, kind="remove"
        )

    def get_alias(self, name: str, alias: str) -> int | None:
        return self.aliases(name).get(validate_alias(alias))

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._log(name).state().aliases)

    def alias_history(self, name: str) -> list[AliasChange]:
        return self._log(name).history()

    def rollback_target(self, name: str, alias: str = "champion") -> int | None:
        """The version a rollback of `alias` returns to (see `aliases.rollback_target`)."""
        return rollback_target(self.alias_history(name), validate_alias(alias))

    # -- internals -----------------------------------------------------------------------

    def _log(self, name: str) -> AliasLog:
        return AliasLog(self.store, validate_name(name), self._cache)

    @staticmethod
    def _version_dir(name: str, version: int) -> str:
        return f"models/{name}/versions/{version:06d}"

    def _manifest_path(self, name: str, version: int) -> str:
        return f"{self._version_dir(validate_name(name), version)}/manifest.json"

    def _version_files(self, name: str) -> list[str]:
        return self.store.list(f"models/{validate_name(name)}/versions")

    def _known_versions(self, name: str) -> list[int]:
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(
                f"no model named {name!r} in {self.store.root_uri}; "
                f"models: {self.models() or 'none'}"
            )
        return versions

    def _claim_version(self, name: str) -> int:
        claimed = [
            int(p.split("/")[-2]) for p in self._version_files(name) if p.endswith("/claim.json")
        ]
        version = max(claimed, default=0) + 1
        claim = {
            "name": name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "claimed_at_ms": int(time.time() * 1000),
        }
        while not self.store.put_if_absent(
            f"{self._version_dir(name, version)}/claim.json",
            json.dumps(claim | {"version": version}).encode(),
        ):
            version += 1  # another registration took it; the next one is ours to try
        return version
