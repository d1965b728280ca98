"""`driftloop proto gen | check`: the generated contracts in driftloop/v1/."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from services.common.protogen import REPO_ROOT, generate, generated_files, regenerate_in_repo

app = typer.Typer(no_args_is_help=True, help="Protobuf contracts (proto/driftloop/v1).")


@app.command()
def gen() -> None:
    """Regenerate driftloop/v1/*_pb2*.py from proto/ (commit the result)."""
    for path in regenerate_in_repo():
        typer.echo(f"wrote {path.relative_to(REPO_ROOT)}")


@app.command()
def check() -> None:
    """Exit 1 when the committed generated modules are stale."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes() for p in generate(Path(tmp))}
    committed = {p.name: p.read_bytes() for p in generated_files(REPO_ROOT)}
    if fresh != committed:
        stale = sorted(
            set(fresh) ^ set(committed) | {n for n in fresh if fresh[n] != committed.get(n)}
        )
        typer.echo(f"stale generated contracts: {', '.join(stale)}; run `driftloop proto gen`")
        raise typer.Exit(1)
    typer.echo("generated contracts are up to date")
