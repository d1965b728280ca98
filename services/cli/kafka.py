"""`driftloop kafka stuck | seek`: partitions a consumer group cannot read, and resuming them.

A consumer that meets a record batch it cannot decode pauses that partition and records
it in Redis (services.common.kafka_fetch). `stuck` lists them; `seek --retry` asks the
running consumer to read the batch again (after the cause is fixed: a restart of the
service also retries), `seek --skip` asks it to move past the batch, dead-lettering the
span on `data.rejected` with the reason `batch_undecodable`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.common.kafka_stuck import RedisStuckLedger, StuckPartition
from services.common.redis_client import check_redis, sync_redis
from services.common.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="Kafka partitions a consumer cannot read.")
console = Console(stderr=True)
out = Console()


def _ledger() -> RedisStuckLedger:
    settings = load_settings()
    check_redis(settings)
    return RedisStuckLedger(sync_redis(settings))


def stuck_partitions() -> list[StuckPartition]:
    return _ledger().all()


@app.command()
def stuck() -> None:
    """List the partitions consumers have paused because a batch cannot be read; exit 1
    when there is one."""
    found = stuck_partitions()
    if not found:
        out.print("no stuck partitions")
        return
    table = Table(title="stuck partitions")
    for column in ("group", "partition", "offsets", "since", "cause"):
        table.add_column(column)
    for s in found:
        span = f"{s.offset}..{s.next_offset - 1}" if s.next_offset else str(s.offset)
        table.add_row(s.group, s.name, span, str(s.since_ms), s.cause)
    out.print(table)
    console.print(
        "resume: fix the cause and `driftloop kafka seek TOPIC PARTITION --group G --retry`, "
        "or `--skip` to dead-letter the batch (reason batch_undecodable) and go on"
    )
    raise typer.Exit(1)


@app.command()
def seek(
    topic: Annotated[str, typer.Argument(help="the stuck partition's topic")],
    partition: Annotated[int, typer.Argument(help="the stuck partition")],
    group: Annotated[str, typer.Option(help="the consumer group that is stuck")],
    retry: Annotated[bool, typer.Option("--retry", help="read the batch again")] = False,
    skip: Annotated[
        bool, typer.Option("--skip", help="dead-letter the batch and go past it")
    ] = False,
) -> None:
    """Resolve a stuck partition: `--retry` or `--skip` (the running consumer applies it
    within a second)."""
    if retry == skip:
        raise typer.BadParameter("choose exactly one of --retry and --skip")
    try:
        found = _ledger().request(group, topic, partition, "retry" if retry else "skip")
    except LookupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    action = "retry" if retry else "skip (dead-lettered as batch_undecodable)"
    out.print(f"{found.name} (group {group}, offset {found.offset}): {action} requested")
