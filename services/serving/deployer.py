"""Keep Serve's applications equal to the registry's aliases: the reconcile loop's core.

What should run is derived from the registry alone (for each served model, each served
alias that is set → `<model>.<variant>` at the alias's version), so the service is
stateless: a restart, a missed `models.events` record or a manual `serve` change is
corrected by the next reconcile. `plan` is pure; `ServeDeployer` applies a plan to Serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from services.common.logging import get_logger
from services.common.registry import ModelRegistry
from services.common.settings import Settings
from services.serving.config import ServingSettings
from services.serving.deployment import (
    DEPLOYMENT_NAME,
    app_name,
    build_variant_app,
    code_version,
    parse_app_name,
)
from services.serving.state import DeployedVariant

__all__ = ["Change", "ServeDeployer", "desired_variants", "plan"]

_log = get_logger(__name__)


@dataclass(frozen=True)
class Change:
    kind: Literal["deploy", "swap", "remove"]
    app: str
    target: DeployedVariant | None  # None for "remove"
    previous: DeployedVariant | None = None


def desired_variants(
    aliases: Mapping[str, Mapping[str, int]], variants: Iterable[str]
) -> dict[str, DeployedVariant]:
    """`aliases`: model -> (alias -> version). Every served alias that is set is a variant."""
    wanted = list(variants)
    return {
        app_name(model, variant): DeployedVariant(model=model, variant=variant, version=version)
        for model, model_aliases in aliases.items()
        for variant, version in model_aliases.items()
        if variant in wanted
    }


def plan(
    desired: Mapping[str, DeployedVariant],
    deployed: Mapping[str, DeployedVariant | None],
    models: Iterable[str] | None = None,
) -> list[Change]:
    """The changes that turn `deployed` into `desired`; with `models`, only those models'
    applications are considered (an event about one model touches nothing else). A
    deployed entry of None is an application found running whose version is unknown."""
    scope = set(models) if models is not None else None

    def in_scope(app: str) -> bool:
        parsed = parse_app_name(app)
        return scope is None or (parsed is not None and parsed[0] in scope)

    changes: list[Change] = []
    for app in sorted(desired):
        target = desired[app]
        if not in_scope(app):
            continue
        if app not in deployed:
            changes.append(Change("deploy", app, target))
        elif deployed[app] != target:
            changes.append(Change("swap", app, target, deployed[app]))
    for app in sorted(deployed):
        if app not in desired and in_scope(app):
            changes.append(Change("remove", app, None, deployed[app]))
    return changes


class ServeDeployer:
    """Owns what this service has deployed; applies plans through `serve.run`/`delete`."""

    def __init__(
        self,
        settings: Settings,
        serving: ServingSettings,
        registry: ModelRegistry,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """`loop`: the service's event loop, on which replicas are asked whether they took
        an update (`reconcile` itself runs in a worker thread); None skips that check."""
        self._settings, self._serving, self._registry = settings, serving, registry
        self._loop = loop
        self._deployed: dict[str, DeployedVariant | None] = {}
        self._code_version = code_version()
        self.failures: dict[str, str] = {}  # app -> last error

    @property
    def deployed(self) -> dict[str, DeployedVariant]:
        return {app: v for app, v in self._deployed.items() if v is not None}

    def adopt_running(self) -> None:
        """Take over serving applications already on the cluster (a restart): they are
        reconciled like any other, an unwanted one is removed."""
        from ray import serve

        for name in serve.status().applications:
            if parse_app_name(name) is not None:
                self._deployed.setdefault(name, None)

    def desired(self, models: Iterable[str] | None = None) -> dict[str, DeployedVariant]:
        names = (
            list(models)
            if models is not None
            else (self._serving.models or self._registry.models())
        )
        aliases = {}
        for model in names:
            if not self._registry.versions(model):
                continue
            aliases[model] = self._registry.aliases(model)
        return desired_variants(aliases, self._serving.variants)

    def reconcile(self, models: Iterable[str] | None = None) -> list[Change]:
        """Bring the applications of `models` (None: all) in line with the registry."""
        scope = None if models is None else [m for m in models if self._serves(m)]
        if scope is not None and not scope:
            return []
        changes = plan(self.desired(scope), self._deployed, scope)
        for change in changes:
            self._apply(change)
        return changes

    def _serves(self, model: str) -> bool:
        return not self._serving.models or model in self._serving.models

    def _rejected_by_replicas(self, app: str, version: int) -> str | None:
        """Why a replica refused `version` after an update (it keeps serving its current
        one), or None when none did. Handles live on the service's event loop (Serve's
        router runs on the caller's loop), so the question is asked there."""
        if self._loop is None:
            return None
        from ray import serve

        variant = (parse_app_name(app) or (app, ""))[1]
        asks = 2 * max(1, self._serving.replicas_for(variant))

        async def ask() -> str | None:
            handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app).options(method_name="stats")
            for _ in range(asks):
                rejected = (await handle.remote()).get("rejected") or {}
                if rejected.get("version") == version:
                    return str(rejected.get("error"))
            return None

        return asyncio.run_coroutine_threadsafe(ask(), self._loop).result(timeout=60)

    def _apply(self, change: Change) -> None:
        from ray import serve

        started = time.perf_counter()
        try:
            if change.kind == "remove":
                serve.delete(change.app)
                self._deployed.pop(change.app, None)
            else:
                target = change.target
                assert target is not None
                app = build_variant_app(
                    self._settings,
                    self._serving,
                    target.model,
                    target.variant,
                    target.version,
                    pinned_code_version=self._code_version,
                )
                serve.run(app, name=change.app, route_prefix=None)
                rejected = self._rejected_by_replicas(change.app, target.version)
                if rejected:
                    # The replicas kept the version they had: record that, retry later.
                    self._deployed[change.app] = change.previous
                    raise RuntimeError(f"replicas kept their version: {rejected}")
                self._deployed[change.app] = target
            self.failures.pop(change.app, None)
        except Exception as exc:  # one bad version must not stop the others
            self.failures[change.app] = f"{type(exc).__name__}: {exc}"
            _log.error(
                "serving.change_failed",
                app=change.app,
                change=change.kind,
                version=change.target.version if change.target else None,
                error=self.failures[change.app],
            )
            return
        _log.info(
            "serving.changed",
            app=change.app,
            change=change.kind,
            version=change.target.version if change.target else None,
            previous=change.previous.version if change.previous else None,
            seconds=round(time.perf_counter() - started, 3),
        )
