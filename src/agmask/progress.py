"""Progress bars on stderr (rich). Library code takes an optional `Reporter`; the CLI supplies one."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Advance = Callable[[int], None]


class Reporter:
    """Thin wrapper over rich: `log(msg)` for one-line status, `task(desc, total)` for a bar."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._console = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True)

    def log(self, message: str) -> None:
        if self._console:
            self._console.print(f"[dim]·[/dim] {message}", highlight=False)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if not self._console or total <= 0:
            yield lambda n=1: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=self._console, transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task_id, n)


SILENT = Reporter(enabled=False)
