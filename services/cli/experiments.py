"""`driftloop experiments list | show NAME | start | stop NAME`.

Experiments live in the registry's artifact store (`services.common.experiments`); each
change is a new immutable record, then the Redis cache is rebuilt and every router
replica is told over pub/sub. `start` both creates an experiment and changes a running one
(a canary ramp is `start` again with a larger weight).
"""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.common.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from services.common.experiments import ExperimentStore

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="A/B experiments the router applies.")
out = Console()
err = Console(stderr=True)


def _store() -> ExperimentStore:
    from services.common.artifacts import ArtifactStore
    from services.common.experiments import ExperimentStore
    from services.common.redis_client import sync_redis

    settings = load_settings()
    return ExperimentStore(
        ArtifactStore.from_settings(settings), sync_redis(settings, connect_timeout_s=2)
    )


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
    return typer.Exit(1)


def _parse_variant(text: str) -> dict[str, object]:
    """NAME[=WEIGHT][@VERSION]"""
    name, _, version = text.partition("@")
    name, _, weight = name.partition("=")
    return {"name": name, "weight": float(weight or 0), "version": version}


@app.command("list")
def list_experiments(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every experiment with its state and split."""
    try:
        store = _store()
        records = [r for name in store.names() if (r := store.current(name)) is not None]
    except (SettingsError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in records]))
        return
    table = Table(title="experiments")
    for col in ("name", "model", "status", "variants", "holdout", "shadows"):
        table.add_column(col)
    for r in records:
        s = r.spec
        table.add_row(
            s.name,
            s.model,
            r.status,
            ", ".join(f"{v.name} {v.weight:g}%" for v in s.variants[1:])
            + f" (control {s.control.name})",
            f"{s.holdout:g}%",
            ", ".join(v.name for v in s.shadows) or "-",
        )
    out.print(table)


@app.command("show")
def show(name: str) -> None:
    """An experiment's history, newest last, as JSON."""
    try:
        history = _store().history(name)
    except (SettingsError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    if not history:
        raise _fail(ValueError(f"no experiment named {name!r}"))
    out.print_json(json.dumps([r.model_dump(mode="json") for r in history]))


@app.command("start")
def start(
    name: Annotated[str, typer.Argument(help="experiment name")],
    model: Annotated[str, typer.Option("--model", "-m")],
    variant: Annotated[
        list[str],
        typer.Option("--variant", "-v", help="NAME=WEIGHT[@VERSION]; the first is the control"),
    ],
    shadow: Annotated[list[str], typer.Option("--shadow", help="NAME[@VERSION]")] = [],  # noqa: B006
    holdout: Annotated[float, typer.Option(help="percent held out on the control")] = 0.0,
    salt: Annotated[str, typer.Option(help="hash salt [default: the name]")] = "",
    reason: Annotated[str, typer.Option()] = "",
) -> None:
    """Start an experiment, or change a running one (weights, variants, holdout)."""
    from pydantic import ValidationError

    from services.common.experiments import ExperimentError, ExperimentSpec

    try:
        spec = ExperimentSpec.model_validate(
            {
                "name": name,
                "model": model,
                "variants": [_parse_variant(v) for v in variant],
                "shadows": [_parse_variant(v) for v in shadow],
                "holdout": holdout,
                "salt": salt,
            }
        )
        record = _store().start(spec, actor=getpass.getuser(), reason=reason)
    except (ValidationError, ExperimentError, SettingsError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    out.print(f"experiment [bold]{name}[/bold] running (record {record.seq})")


@app.command("stop")
def stop(name: str, reason: Annotated[str, typer.Option()] = "") -> None:
    """Stop an experiment: its model's traffic goes back to the champion."""
    from services.common.experiments import ExperimentError

    try:
        record = _store().stop(name, actor=getpass.getuser(), reason=reason)
    except (ExperimentError, SettingsError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    out.print(f"experiment [bold]{name}[/bold] stopped (record {record.seq})")
