"""`driftloop models list | show VERSION | history [ALIAS] | promote VERSION | rollback`.

Reads the registry in the artifact store. `promote` and `rollback` move the `champion`
alias through the registry's guarded moves (services/common/registry/promotion.py: the
target's artifact checksum and gate are verified, a no-op is refused), recording who, why
and which kind of move in the alias log, then publish a `ModelEvent` on `models.events`.
The alias log is the source of truth: it is written first, and if Kafka is down the
command says the alias moved but the event was not published (exit 1).

Failures are raised and reported in one line by the root command (services/cli/app.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.settings import load_settings

if TYPE_CHECKING:
    from driftloop.v1 import events_pb2 as pb
    from services.common.registry import ModelRegistry
    from services.common.registry.promotion import AliasMove

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True,
    help="Registered models: list, show, history, promote, rollback.",
    rich_markup_mode=None,
)
out = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="model name (default: the only registered one)",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print JSON instead of tables", show_default=False)
]
ReasonOpt = Annotated[
    str, typer.Option("--reason", metavar="TEXT", help="why (kept in the alias history)")
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="move the alias even though the target failed its gate (recorded as forced)",
        show_default=False,
    ),
]


def _registry() -> ModelRegistry:
    from services.common.registry import ModelRegistry

    return ModelRegistry.from_settings(load_settings(), use_redis=False)


def _pick(registry: ModelRegistry, model: str | None) -> str:
    from services.common.registry import ModelNotFoundError

    if model:
        if model not in registry.models():
            raise ModelNotFoundError(
                f"no model named {model!r} in {registry.store.root_uri} "
                f"(registered: {', '.join(registry.models()) or 'none'})"
            )
        return model
    names = registry.models()
    if len(names) != 1:
        raise ModelNotFoundError(
            f"say which model with --model (registered: {', '.join(names) or 'none'})"
        )
    return names[0]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _holdout(params: dict[str, Any], datasets: list[str]) -> str:
    """Which holdout a version's metrics come from: the newest rows of its own window."""
    rows = params.get("rows")
    n = rows.get("holdout") if isinstance(rows, dict) else None
    newest = datasets[-1][:12] if datasets else "?"
    return f"{n if n is not None else '?'} rows, newest of ..{newest}"


@app.command("list")
def list_models(model: ModelOpt = None, as_json: JsonOpt = False) -> None:
    """Every version with its aliases, gate result and holdout metrics.

    Each version's metrics are measured on its own holdout (the newest rows of the data
    window it was trained on), so metrics of different versions are not comparable; the
    gate compares a challenger with the champion on one shared holdout.
    """
    registry = _registry()
    rows: list[dict[str, Any]] = []
    for name in [_pick(registry, model)] if model else registry.models():
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
                    "holdout": _holdout(m.params, m.training_datasets),
                    "created": _when(m.created_at_ms),
                    "datasets": len(m.training_datasets),
                }
            )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(
        title="registered models",
        caption="metrics: each version on its own holdout (not comparable across versions; "
        "the gate compares on a shared one)",
    )
    for col in ("model", "version", "aliases", "gate", "framework", "metrics", "holdout"):
        table.add_column(col, overflow="fold")
    table.add_column("created", no_wrap=True)
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
            r["holdout"],
            r["created"],
        )
    out.print(table)


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


@app.command("show")
def show(
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="a version number, an alias, or latest")
    ],
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One version's manifest: lineage, parameters, gate report, reference profile, and
    whether its artifact still matches its recorded sha256."""
    registry = _registry()
    name = _pick(registry, model)
    manifest = registry.manifest(name, version)
    problem = registry.artifact_problem(name, manifest.version)
    if as_json:
        doc = json.loads(manifest.to_json()) | {"artifact_problem": problem}
        out.print_json(json.dumps(doc))
        return
    out.print(
        f"[bold]{name}[/bold] v{manifest.version} ({manifest.framework}, "
        f"{manifest.artifact.format}, {manifest.artifact.size} bytes)",
        highlight=False,
    )
    if problem is None:
        out.print(f"artifact sha256 {manifest.artifact.sha256} [green]verified[/green]")
    else:
        out.print(f"[bold red]artifact check failed:[/bold red] {problem}", highlight=False)
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
    if manifest.params:
        params = Table(title="parameters", show_header=False)
        params.add_column("name", no_wrap=True)
        params.add_column("value", overflow="fold")
        for key, value in sorted(manifest.params.items()):
            if key == "encoder":  # the fitted encoder: large, and not a parameter one sets
                value = f"<feature encoder, {len(_param_text(value))} bytes of JSON>"
            params.add_row(key, _param_text(value))
        out.print(params)
    gate = manifest.gate_report or {}
    if gate:
        table = Table(title=f"gate: {'passed' if gate.get('passed') else 'failed'}")
        for col in ("check", "passed", "value", "threshold", "detail"):
            table.add_column(col, overflow="fold")
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


@app.command("history")
def history(
    alias: Annotated[
        str | None,
        typer.Argument(metavar="ALIAS", help="only this alias (default: every alias)"),
    ] = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The alias log: every move of an alias, oldest first, with its kind, who and why."""
    registry = _registry()
    name = _pick(registry, model)
    changes = [c for c in registry.alias_history(name) if alias is None or c.alias == alias]
    if as_json:
        out.print_json(json.dumps([c.model_dump(mode="json") for c in changes]))
        return
    table = Table(title=f"alias history of {name}" + (f" ({alias})" if alias else ""))
    for col in ("seq", "when", "alias", "kind", "change", "actor", "reason"):
        table.add_column(col, overflow="fold", no_wrap=col in ("when", "change"))
    for c in changes:
        before = f"v{c.previous}" if c.previous else "-"
        after = f"v{c.version}" if c.version else "removed"
        kind = c.kind + (" (forced)" if c.forced else "")
        table.add_row(
            str(c.seq), _when(c.at_ms), c.alias, kind, f"{before} → {after}", c.actor, c.reason
        )
    out.print(table)


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
        raise ConnectionError(
            f"the alias moved, but its ModelEvent was not published to "
            f"{settings.topics.models_events}: {exc}"
        ) from None


def _announce(registry: ModelRegistry, name: str, move: AliasMove, kind: int, verb: str) -> None:
    from driftloop.v1 import events_pb2 as pb
    from services.trainer.events import model_event

    change = move.change
    version = change.version
    assert version is not None  # promote and rollback always point the alias somewhere
    attributes = {"alias_kind": change.kind, **({"forced": "true"} if change.forced else {})}
    events = [
        model_event(
            kind_,
            name,
            reason=change.reason,
            actor=change.actor,
            version=version,
            alias=change.alias,
            previous_version=change.previous,
            attributes=attributes,
        )
        for kind_ in (kind, pb.MODEL_EVENT_TYPE_ALIAS_CHANGED)
    ]
    if verb == "promoted" and registry.get_alias(name, "challenger") == version:
        registry.remove_alias(
            name, "challenger", actor=change.actor, reason=f"promoted: {change.reason}"
        )
    forced = " [yellow](forced past a failed gate)[/yellow]" if change.forced else ""
    out.print(
        f"{verb} {name} v{version} to {change.alias} (was "
        f"{'v' + str(change.previous) if change.previous else 'none'}){forced}",
        highlight=False,
    )
    _publish(events)


@app.command("promote")
def promote(
    version: Annotated[
        str,
        typer.Argument(metavar="VERSION", help="a version number or an alias, e.g. challenger"),
    ],
    model: ModelOpt = None,
    reason: ReasonOpt = "manual promotion",
    force: ForceOpt = False,
) -> None:
    """Make VERSION the champion, once its artifact checksum and gate are verified."""
    from driftloop.v1 import events_pb2 as pb
    from services.common.registry import promotion
    from services.trainer.training import default_actor

    registry = _registry()
    name = _pick(registry, model)
    number = registry.resolve(name, version)
    move = promotion.promote(
        registry, name, number, actor=default_actor(), reason=reason, force=force
    )
    _announce(registry, name, move, pb.MODEL_EVENT_TYPE_PROMOTED, "promoted")


@app.command("rollback")
def rollback(
    model: ModelOpt = None, reason: ReasonOpt = "manual rollback", force: ForceOpt = False
) -> None:
    """Point champion back at the version it had before its last move (repeatable)."""
    from driftloop.v1 import events_pb2 as pb
    from services.common.registry import promotion
    from services.trainer.training import default_actor

    registry = _registry()
    name = _pick(registry, model)
    current = registry.get_alias(name, "champion")
    move = promotion.rollback(
        registry,
        name,
        actor=default_actor(),
        reason=f"{reason} (from v{current})",
        force=force,
    )
    _announce(registry, name, move, pb.MODEL_EVENT_TYPE_ROLLED_BACK, "rolled back")
