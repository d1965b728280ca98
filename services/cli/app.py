"""`driftloop`: the root command. Known failures print one clear line, never a traceback.

Every command raises its failures; `main` turns the known ones into `error: …` on stderr
with exit 2 (bad input) or 1 (a dependency is unavailable), see services/common/failures.py.
`--debug` (or DRIFTLOOP_DEBUG=1) shows the traceback too.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from services.cli import (
    datasets,
    drift,
    experiments,
    kafka,
    models,
    proto,
    report,
    samples,
    stack,
    store,
    training,
)
from services.common.failures import DEBUG_ENV, Types, handled

__all__ = ["app", "main"]

app = typer.Typer(
    name="driftloop",
    no_args_is_help=True,
    add_completion=False,
    help="driftloop: event-driven MLOps that closes the continuous-training loop.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(stack.app, name="stack")
app.add_typer(store.app, name="store")
app.add_typer(kafka.app, name="kafka")
app.add_typer(proto.app, name="proto")
datasets.app.command("publish-sample")(samples.publish_sample)
app.add_typer(datasets.app, name="datasets")
app.add_typer(models.app, name="models")
app.add_typer(drift.app, name="drift")
app.command("report")(report.report)
app.add_typer(experiments.app, name="experiments")
app.command("train")(training.train)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help=f"show the traceback of a failure (or set {DEBUG_ENV}=1)",
            show_default=False,
        ),
    ] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _known() -> tuple[Types, Types]:
    """The services' own failure types (imported only once something failed)."""
    from services.stack.errors import StackError
    from services.trainer.data import TrainingDataError
    from services.trainer.specs import ModelSpecError

    return (ModelSpecError, TrainingDataError), (StackError,)


def main() -> None:
    # aiokafka logs every failed connection attempt itself; the CLI says once, in one
    # line, what failed and why (services.common.kafka_admin.diagnose_unavailable).
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with handled(_known):
        app()  # standalone: usage errors and `typer.Exit` become exit codes inside click
