"""`driftloop models list | show VERSION | promote VERSION | rollback`.

Reads the registry in the artifact store. `promote` and `rollback` move the `champion`
alias (recording who and why in the alias history), then publish a `ModelEvent` on
`models.events`. The alias log is the source of truth: it is written first, and if Kafka
is down the command says the alias moved but the event was not published (exit 1).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from driftloop.v1 import events_pb2 as pb
    from services.common.registry import AliasChange, ModelRegistry

__all__ = ["app", "rollback_target"]

app = typer.Typer(no_args_is_help=True, help="Registered models: list, show, promote, rollback.")
out = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="model name [default: the only one]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (kept in the alias history)")]


@contextmanager
def _clear_errors() -> Iterator[None]:
    from services.common.artifacts import ArtifactError
    from services.common.registry import InvalidNameError, ModelNotFoundError

    try:
        yield
    except (ArtifactError, ModelNotFoundError, InvalidNameError, SettingsError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _registry() -> ModelRegistry:
    from services.common.registry import ModelRegistry

    return ModelRegistry.from_settings(load_settings(), use_redis=False)


def _pick(registry: ModelRegistry, model: str | None) -> str:
    from services.common.registry import ModelNotFoundError

    if model:
        return model
    names = registry.models()
    if len(names) != 1:
        raise ModelNotFoundError(
            f"say which model with --model (registered: {', '.join(names) or 'none'})"
        )
    return names[0]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_models(model: ModelOpt = None, as_json: JsonOpt = False) -> None:
    """Every version with its aliases, gate result and holdout metrics."""
    with _clear_errors():
        registry = _registry()
        rows: list[dict[str, Any]] = []
        for name in [model] if model else registry.models():
            aliases = registry.aliases(name)
            for version in registry.versions(name):
                m = registry.manifest(name, version)
                gate = m.gate_report or {}
                rows.append(
                    {
                        "model": name,
                        "version": version,
                        "framework": m.framework,
                        "aliases": sorted(a for a, v in aliases.items() if v == version),
                        "gate": "passed" if gate.get("passed") else ("failed" if gate else "-"),
                        "metrics": m.metrics,
                        "created": _when(m.created_at_ms),
                        "datasets": len(m.training_datasets),
                    }
                )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="registered models")
    for col in ("model", "version", "aliases", "gate", "framework", "metrics", "created"):
        table.add_column(col)
    for r in rows:
        metrics = ", ".join(
            f"{k.removeprefix('holdout_')}={v:.4f}" for k, v in sorted(r["metrics"].items())
        )
        gate_cell = {"passed": "[green]passed[/green]", "failed": "[red]failed[/red]"}.get(
            r["gate"], "-"
        )
        table.add_row(
            r["model"],
            str(r["version"]),
            ", ".join(r["aliases"]),
            gate_cell,
            r["framework"],
            metrics,
            r["created"],
        )
    out.print(table)


@app.command("show")
def show(version: str, model: ModelOpt = None, as_json: JsonOpt = False) -> None:
    """One version's manifest: lineage, parameters, gate report, reference profile."""
    with _clear_errors():
        registry = _registry()
        name = _pick(registry, model)
        manifest = registry.manifest(name, version)
    if as_json:
        out.print_json(manifest.to_json())
        return
    out.print(
        f"[bold]{name}[/bold] v{manifest.version} ({manifest.framework}, "
        f"{manifest.artifact.format}, {manifest.artifact.size} bytes)",
        highlight=False,
    )
    out.print(
        f"created {_when(manifest.created_at_ms)}  code {manifest.code_version}  "
        f"seed {manifest.seed}",
        highlight=False,
    )
    out.print(
        f"trained on {len(manifest.training_datasets)} dataset versions: "
        + ", ".join(v[:12] for v in manifest.training_datasets),
        highlight=False,
    )
    gate = manifest.gate_report or {}
    if gate:
        table = Table(title=f"gate: {'passed' if gate.get('passed') else 'failed'}")
        for col in ("check", "passed", "value", "threshold", "detail"):
            table.add_column(col)
        for check in gate.get("checks", []):  # type: ignore[union-attr]
            c = dict(check)  # type: ignore[arg-type]
            table.add_row(
                str(c["name"]),
                "✓" if c["passed"] else "✗",
                str(c.get("value")),
                str(c.get("threshold")),
                str(c.get("detail")),
            )
        out.print(table)
    profile = manifest.reference_profile
    out.print(
        f"reference profile: {profile.row_count} rows, {len(profile.numeric)} numeric, "
        f"{len(profile.categorical)} categorical, base rate {profile.base_rate}",
        highlight=False,
    )


def _publish(events: list[pb.ModelEvent]) -> None:
    from services.common.kafka import create_producer

    settings = load_settings()

    async def send() -> None:
        async with create_producer(settings) as producer:
            for event in events:
                await producer.send_and_wait(settings.topics.models_events, event, key=event.model)

    try:
        asyncio.run(asyncio.wait_for(send(), timeout=30))
    except Exception as exc:
        err.print(
            f"[bold red]error:[/bold red] the alias moved, but its ModelEvent was not "
            f"published to {settings.topics.models_events}: {exc}",
            highlight=False,
        )
        raise typer.Exit(1) from None


def _move_champion(name: str, version: int, kind: int, reason: str, verb: str) -> None:
    from services.trainer.events import model_event
    from services.trainer.training import default_actor

    registry = _registry()
    actor = default_actor()
    change = registry.set_alias(name, "champion", version, actor=actor, reason=reason)
    events = [
        model_event(
            kind,
            name,
            reason=reason,
            actor=actor,
            version=version,
            alias="champion",
            previous_version=change.previous,
        ),
        model_event(
            7,
            name,
            reason=reason,
            actor=actor,
            version=version,  # ALIAS_CHANGED
            alias="champion",
            previous_version=change.previous,
        ),
    ]
    if verb == "promoted" and registry.get_alias(name, "challenger") == version:
        registry.remove_alias(name, "challenger", actor=actor, reason=f"promoted: {reason}")
    out.print(
        f"{verb} {name} v{version} to champion (was "
        f"{'v' + str(change.previous) if change.previous else 'none'})",
        highlight=False,
    )
    _publish(events)


@app.command("promote")
def promote(version: str, model: ModelOpt = None, reason: ReasonOpt = "manual promotion") -> None:
    """Make VERSION (a number or an alias, e.g. challenger) the champion."""
    from driftloop.v1 import events_pb2 as pb

    with _clear_errors():
        registry = _registry()
        name = _pick(registry, model)
        number = registry.resolve(name, version)
        _move_champion(name, number, pb.MODEL_EVENT_TYPE_PROMOTED, reason, "promoted")


@app.command("rollback")
def rollback(model: ModelOpt = None, reason: ReasonOpt = "manual rollback") -> None:
    """Point champion back at the version it pointed to before its last change."""
    from driftloop.v1 import events_pb2 as pb
    from services.common.registry import ModelNotFoundError

    with _clear_errors():
        registry = _registry()
        name = _pick(registry, model)
        current = registry.get_alias(name, "champion")
        target = rollback_target(registry.alias_history(name))
        if current is None or target is None:
            raise ModelNotFoundError(
                f"model {name!r} has no earlier champion to roll back to "
                f"(champion: {'v' + str(current) if current else 'none'})"
            )
        _move_champion(
            name,
            target,
            pb.MODEL_EVENT_TYPE_ROLLED_BACK,
            f"{ROLLBACK_PREFIX} {reason} (from v{current})",
            "rolled back",
        )


ROLLBACK_PREFIX = "rollback:"


def rollback_target(history: list[AliasChange]) -> int | None:
    """The champion before the current one, skipping champions already rolled back: the
    champion history is a stack, a promotion pushes and a rollback pops."""
    stack: list[int] = []
    for change in history:
        if change.alias != "champion":
            continue
        if change.reason.startswith(ROLLBACK_PREFIX) and stack:
            stack.pop()
        elif change.version is not None:
            stack.append(change.version)
    return stack[-2] if len(stack) >= 2 else None
