"""`driftloop train MODEL`: one training run now, with the trainer's own code path.

The same lease as the service (so it never trains a model another trainer is training),
the same data window, Ray, gate and registry; every step is a ModelEvent on
`models.events`. Exit codes: 0 registered and gate passed, 3 registered but the gate
failed, 2 skipped (another trainer holds the model's lease), 1 the run failed.

The terminal shows the phases (data window, trials on Ray, gate, registration) as they
pass; everything else the run and Ray print (the local Ray instance's start-up, workers'
warnings, log lines) goes to `$DRIFTLOOP_HOME/logs/train-MODEL.log`. The local Ray
instance is shut down before the command returns, its agents and workers included.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

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
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="model name, as declared in deploy/models/")
    ],
    versions: Annotated[
        list[str] | None,
        typer.Option(
            "--version-id",
            metavar="ID",
            help="train on exactly this dataset version (repeat for several)",
        ),
    ] = None,
    allow_suspect: Annotated[
        bool,
        typer.Option(
            "--allow-suspect",
            help="with --version-id: train even on versions ingest flagged as a broken feed",
            show_default=False,
        ),
    ] = False,
    reason: Annotated[
        str, typer.Option(metavar="TEXT", help="why (recorded in the ModelEvents)")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Train MODEL now: data window → Ray → gate vs the champion → registry → alias."""
    from services.common.ray_runtime import shutdown_ray
    from services.trainer.config import TrainerSettings

    settings = load_settings()
    log_path = settings.home / "logs" / f"train-{model}.log"
    with _output_to(log_path) as terminal:
        phases = _Phases(Console(file=terminal, stderr=True), log_path)
        try:
            result = asyncio.run(
                _run(settings, TrainerSettings(), model, versions, reason, allow_suspect, phases)
            )
        finally:
            phases.done()
            shutdown_ray()
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
    allow_suspect: bool,
    phases: _Phases,
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
        _check_versions(settings, specs[model].dataset, versions, allow_suspect, phases.console)
    await check_kafka(settings)
    loop = asyncio.get_running_loop()
    async with create_producer(settings) as producer:
        phases.start("starting")
        trainer = build_trainer(
            settings,
            config,
            threadsafe_emitter(producer, settings.topics.models_events, loop),
            progress=phases.start,
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
    settings: Settings, dataset: str, versions: list[str], allow_suspect: bool, console: Console
) -> None:
    from services.common.artifacts import ArtifactStore
    from services.common.datasets.store import VersionStore
    from services.trainer.data import explicit_versions

    available = VersionStore(ArtifactStore.from_settings(settings)).manifests(dataset)
    known = {m.version_id for m in available}  # a missing one fails the run (an event)
    named = [v for v in versions if v in known]
    for m in explicit_versions(available, dataset, named, allow_suspect):
        if m.status == "suspect":
            console.print(
                f"[bold yellow]warning:[/bold yellow] training on suspect version "
                f"{m.version_id} of {dataset!r} ({', '.join(m.status_reasons)})",
                highlight=False,
            )


class _Phases:
    """The run's phases on the terminal: each finished one with its duration, the current
    one with a spinner. `start` is the trainer's `progress` callback (a worker thread)."""

    def __init__(self, console: Console, log_path: Path) -> None:
        self.console, self._log_path = console, log_path
        self._status = console.status("", spinner="dots")
        self._current: str | None = None
        self._since = time.monotonic()

    def start(self, phase: str) -> None:
        self._finish()
        if self._current is None:
            self._status.start()
        self._current, self._since = phase, time.monotonic()
        self._status.update(f"{phase}  [dim](details: {self._log_path})[/dim]")

    def _finish(self) -> None:
        if self._current is not None:
            took = time.monotonic() - self._since
            self.console.print(f"[green]✓[/green] {self._current} ({took:.1f} s)", highlight=False)

    def done(self) -> None:
        self._finish()
        self._current = None
        self._status.stop()


@contextmanager
def _output_to(log_path: Path) -> Iterator[IO[str]]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so Ray's processes
    and native code too) to `log_path`; yields a stream to the terminal's stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8")
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"--- driftloop train, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.flush()
        try:
            for fd in (1, 2):
                os.dup2(log.fileno(), fd)
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            terminal.close()
