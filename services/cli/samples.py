"""`driftloop datasets publish-sample credit --events N [--shift X] [--wait]`.

Publishes labelled sample events (services/ingest/samples.py) to `data.events`, as an app
would; with `--wait`, follows the sealed versions until ingest has sealed them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.common.settings import Settings, load_settings

if TYPE_CHECKING:
    from driftloop.v1 import events_pb2 as pb

__all__ = ["publish_sample"]

err = Console(stderr=True)


def publish_sample(
    dataset: Annotated[str, typer.Argument(help="only `credit` has a sample generator")],
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="how many")] = 20_000,
    shift: Annotated[float, typer.Option(help="add this to debt_to_income (drift)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    wait: Annotated[bool, typer.Option(help="wait until ingest has sealed them")] = False,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="for --wait")] = 300.0,
) -> None:
    """Publish labelled sample events to data.events (ingest validates and seals them)."""
    if dataset != "credit":
        raise typer.BadParameter(f"no sample generator for {dataset!r} (only 'credit')")
    from services.ingest.samples import credit_sample

    settings = load_settings()
    before = _sealed_rows(settings, dataset)
    sample = credit_sample(events, seed=seed, shift=shift)
    with _progress() as progress:
        task = progress.add_task(f"publishing to {settings.topics.data_events}", total=events)
        asyncio.run(_publish(settings, sample, lambda k: progress.update(task, completed=k)))
        if not wait:
            return
        sealed = progress.add_task(f"waiting for ingest to seal {dataset}", total=events)
        deadline = time.monotonic() + timeout_s
        while (done := _sealed_rows(settings, dataset) - before) < events:
            progress.update(sealed, completed=done)
            if time.monotonic() > deadline:
                err.print(
                    f"[bold red]error:[/bold red] ingest sealed {done} of {events} rows "
                    f"in {timeout_s:.0f} s: is `python -m services.ingest` running?"
                )
                raise typer.Exit(1)
            time.sleep(1.0)
        progress.update(sealed, completed=events)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )


def _sealed_rows(settings: Settings, dataset: str) -> int:
    from services.common.artifacts import ArtifactStore
    from services.common.datasets.store import VersionStore

    storage = VersionStore(ArtifactStore.from_settings(settings))
    return sum(m.row_count for m in storage.manifests(dataset))


async def _publish(
    settings: Settings, sample: list[pb.DataEvent], report: Callable[[int], object]
) -> None:
    from services.common.kafka import check_kafka, create_producer

    await check_kafka(settings)
    async with create_producer(settings, linger_ms=5) as producer:
        for start in range(0, len(sample), 2_000):
            chunk = sample[start : start + 2_000]
            futures = await producer.send_many(
                settings.topics.data_events, [(e.entity_key, e) for e in chunk]
            )
            await asyncio.gather(*futures)
            report(start + len(chunk))
