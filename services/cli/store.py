"""`driftloop store migrate | schema | ping`: the analytics store (ClickHouse / chDB)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from services.common.clickhouse import apply_migrations, connect, describe_schema
from services.common.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="The analytics store: migrations and checks.")
out = Console()

DsnOpt = Annotated[
    str | None, typer.Option("--dsn", help="chdb://PATH or http(s)://… [default: settings]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON line")]


def _dsn(dsn: str | None) -> str:
    return dsn or load_settings().clickhouse_dsn


@app.command()
def migrate(dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Apply the numbered migrations in deploy/clickhouse/ that are not applied yet."""
    client = connect(_dsn(dsn))
    applied = apply_migrations(client)
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    client.close()
    if as_json:
        print(json.dumps({"applied": names}))
    else:
        out.print(f"applied {len(names)} migration(s): {', '.join(names) or '—'}")


@app.command()
def schema(dsn: DsnOpt = None) -> None:
    """Print the tables and columns as JSON (for comparisons and reviews)."""
    client = connect(_dsn(dsn))
    print(json.dumps(describe_schema(client), indent=2, sort_keys=True))
    client.close()


@app.command()
def ping(dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Run a real query against the store."""
    client = connect(_dsn(dsn))
    version, tables = client.query(
        "SELECT version(), (SELECT count() FROM system.tables WHERE database = currentDatabase())"
    ).result_rows[0]
    migrations = 0
    if tables:
        migrations = client.query("SELECT count() FROM schema_migrations").result_rows[0][0]
    client.close()
    info = {"version": str(version), "tables": int(tables), "migrations": int(migrations)}
    print(json.dumps(info) if as_json else info)
