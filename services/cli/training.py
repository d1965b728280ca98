"""`driftloop train MODEL`: one training run now, with the trainer's own code path.

The same lease as the service (so it never trains a model another trainer is training),
the same data window, Ray, gate and registry; every step is a ModelEvent on
`models.events`. Exit codes: 0 registered and gate passed, 3 registered but the gate
failed, 2 skipped (another trainer holds the model's lease), 1 the run failed.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from services.common.settings import Settings, load_settings

if TYPE_CHECKING:
    from services.trainer.config import TrainerSettings
    from services.trainer.training import RunResult

__all__ = ["train"]

out = Console()
err = Console(stderr=True)


def train(
    model: Annotated[str, typer.Argument(help="model name, as declared in deploy/models/")],
    versions: Annotated[
        list[str] | None,
        typer.Option("--version-id", help="train on exactly these dataset versions"),
    ] = None,
    allow_suspect: Annotated[
        bool,
        typer.Option(
            "--allow-suspect",
            help="with --version-id: train even on versions ingest flagged as a broken feed",
            show_default=False,
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="why (recorded in the ModelEvents)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Train MODEL now: data window → Ray → gate vs the champion → registry → alias."""
    from services.trainer.config import TrainerSettings

    settings = load_settings()
    result = asyncio.run(_run(settings, TrainerSettings(), model, versions, reason, allow_suspect))
    report = result.report
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "status": result.status,
                    "model": result.model,
                    "reason": result.reason,
                    "version": result.version,
                    "alias": result.alias,
                    "gate": report.to_json_dict() if report else None,
                }
            )
        )
    else:
        colour = {"registered": "green", "skipped": "yellow", "failed": "red"}[result.status]
        line = f"[{colour}]{result.status}[/{colour}] {result.model}"
        if result.version is not None:
            line += f" v{result.version}"
        out.print(f"{line}: {result.reason}", highlight=False)
        if report is not None:
            out.print(f"gate {report.summary()}", highlight=False)
            for check in report.checks:
                mark = "[green]✓[/green]" if check.passed else "[red]✗[/red]"
                out.print(f"  {mark} {check.name}: {check.detail}", highlight=False)
        if result.alias:
            out.print(f"alias [bold]{result.alias}[/bold] → v{result.version}")
    if result.status == "failed":
        raise typer.Exit(1)
    if result.status == "skipped":
        raise typer.Exit(2)
    if report is not None and not report.passed:
        raise typer.Exit(3)


async def _run(
    settings: Settings,
    config: TrainerSettings,
    model: str,
    versions: list[str] | None,
    reason: str,
    allow_suspect: bool = False,
) -> RunResult:
    from services.common.datasets.schema import load_schemas
    from services.common.kafka import check_kafka, create_producer
    from services.trainer.app import build_trainer, threadsafe_emitter
    from services.trainer.specs import ModelSpecError, load_model_specs
    from services.trainer.training import TrainRequest, default_actor

    specs = load_model_specs(config.models_dir, load_schemas(config.schemas_dir))
    if model not in specs:  # bad input is reported before any dependency is tried
        raise ModelSpecError(
            f"no model spec {model!r} in {config.models_dir} "
            f"(declared: {', '.join(sorted(specs)) or 'none'})"
        )
    if versions:  # suspect versions are refused (or warned about) before anything starts
        _check_versions(settings, specs[model].dataset, versions, allow_suspect)
    await check_kafka(settings)
    loop = asyncio.get_running_loop()
    async with create_producer(settings) as producer:
        with err.status("starting", spinner="dots") as status:
            trainer = build_trainer(
                settings,
                config,
                threadsafe_emitter(producer, settings.topics.models_events, loop),
                progress=lambda msg: status.update(msg),
            )
            request = TrainRequest(
                model=model,
                reason="manual",
                detail=reason or "driftloop train",
                actor=default_actor(),
                version_ids=tuple(versions) if versions else None,
                allow_suspect=allow_suspect,
            )
            return await asyncio.to_thread(trainer.run, request)


def _check_versions(
    settings: Settings, dataset: str, versions: list[str], allow_suspect: bool
) -> None:
    from services.common.artifacts import ArtifactStore
    from services.common.datasets.store import VersionStore
    from services.trainer.data import explicit_versions

    available = VersionStore(ArtifactStore.from_settings(settings)).manifests(dataset)
    known = {m.version_id for m in available}  # a missing one fails the run (an event)
    named = [v for v in versions if v in known]
    for m in explicit_versions(available, dataset, named, allow_suspect):
        if m.status == "suspect":
            err.print(
                f"[bold yellow]warning:[/bold yellow] training on suspect version "
                f"{m.version_id} of {dataset!r} ({', '.join(m.status_reasons)})",
                highlight=False,
            )
