"""A live progress display for the launcher: spinners on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

__all__ = ["StepReporter"]


class StepReporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None

    @contextmanager
    def live(self) -> Iterator[StepReporter]:
        if self.console.is_terminal:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            ) as progress:
                self._progress = progress
                try:
                    yield self
                finally:
                    self._progress = None
        else:
            yield self

    @contextmanager
    def step(self, description: str) -> Iterator[list[str]]:
        """Run one step; append to the yielded list to say how it ended (e.g. an address)."""
        outcome: list[str] = []
        started = time.monotonic()
        task = None
        if self._progress is not None:
            task = self._progress.add_task(f"{description} …", total=1)
        else:
            self.console.print(f"[dim]…[/dim] {description}")
        try:
            yield outcome
        except BaseException:
            self._finish(task, f"[red]✗[/red] {description}", started)
            raise
        suffix = f" — {', '.join(outcome)}" if outcome else ""
        self._finish(task, f"[green]✓[/green] {description}{suffix}", started)

    def _finish(self, task: object, text: str, started: float) -> None:
        elapsed = f" [dim]({time.monotonic() - started:.1f} s)[/dim]"
        if self._progress is not None and task is not None:
            self._progress.update(task, description=text, completed=1)  # type: ignore[arg-type]
        else:
            self.console.print(text + elapsed)
