"""`driftloop stack up | status | down | logs | fetch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.common.settings import load_settings
from services.stack import kafka_broker, launcher
from services.stack.config import StackConfig

app = typer.Typer(no_args_is_help=True, help="Bring the local default stack up and down.")
console = Console(stderr=True)
out = Console()

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="where the stack keeps state, data and logs "
        "[env DRIFTLOOP_HOME; default ./.driftloop]",
    ),
]


def _home(home: Path | None) -> Path:
    return home.resolve() if home else load_settings().home


@app.command()
def up(
    home: HomeOpt = None,
    partitions: Annotated[int | None, typer.Option(help="partitions per topic")] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Kafka on a SASL_SSL listener only (SCRAM users, generated certificates); "
            "the stack state tells every client how to connect",
        ),
    ] = False,
) -> None:
    """Start Kafka (KRaft), redis-server and the chDB store on 127.0.0.1, wait until ready."""
    settings = launcher.up(_home(home), StackConfig(), console, partitions, secure=secure)
    console.print(f"[bold green]stack is up[/bold green] — state in {settings.home / 'stack.json'}")
    _print_status(launcher.status(settings.home))


@app.command()
def status(home: HomeOpt = None) -> None:
    """Check each part for real (metadata request, PING, query); exit 1 if any is down."""
    results = launcher.status(_home(home))
    _print_status(results)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _print_status(results: list[launcher.PartStatus]) -> None:
    table = Table(title="driftloop local stack")
    for column in ("part", "state", "address", "detail"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.part, "[green]up[/green]" if r.ok else "[red]down[/red]", r.address, r.detail
        )
    out.print(table)


@app.command()
def down(home: HomeOpt = None) -> None:
    """Stop everything `up` started; no process is left behind (data is kept)."""
    launcher.down(_home(home), StackConfig(), console)


@app.command()
def logs(
    part: Annotated[str, typer.Argument(help="kafka | redis | all")] = "all",
    lines: Annotated[int, typer.Option("-n", "--lines")] = 40,
    home: HomeOpt = None,
) -> None:
    """Show the last lines of a part's log."""
    if part not in ("kafka", "redis", "all"):
        raise typer.BadParameter(f"unknown part {part!r}: choose kafka, redis or all")
    out.print(launcher.show_logs(_home(home), part, lines), markup=False, highlight=False)


@app.command()
def fetch() -> None:
    """Resolve the Kafka broker jars from Maven Central into the cache (done by `up` too)."""
    config = StackConfig()
    kafka_broker.check_java()
    libs = kafka_broker.fetch_jars(config)
    console.print(f"Kafka {config.kafka_version} jars: {libs}")
