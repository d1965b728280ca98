"""`driftloop`: the root command. Known failures print one clear line, never a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from services.cli import datasets, experiments, models, proto, samples, stack, store, training
from services.common.clickhouse import AnalyticsStoreError
from services.common.settings import SettingsError
from services.stack.errors import StackError

__all__ = ["app", "main"]

app = typer.Typer(
    name="driftloop",
    no_args_is_help=True,
    add_completion=False,
    help="driftloop: event-driven MLOps that closes the continuous-training loop.",
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(store.app, name="store")
app.add_typer(proto.app, name="proto")
datasets.app.command("publish-sample")(samples.publish_sample)
app.add_typer(datasets.app, name="datasets")
app.add_typer(models.app, name="models")
app.add_typer(experiments.app, name="experiments")
app.command("train")(training.train)

_err = Console(stderr=True)


def main() -> None:
    try:
        app()  # standalone: usage errors and `typer.Exit` become exit codes inside click
    except (StackError, SettingsError, AnalyticsStoreError) as exc:
        _err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(1)
