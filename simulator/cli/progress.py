"""The progress bar `batch`, `branch` and `grade` share: a bar row, and the counters on a line of their own below it,
so that both fit 80 columns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console

Update = Callable[[int, int | None, str], None]  # (completed, total or None while unknown, status line)


@contextlib.contextmanager
def progress_bar(console: Console, description: str) -> Iterator[Update]:
    """`update(completed, total, status)` redraws the bar on a terminal; elsewhere it does nothing (logs and CI stay
    clean). The bar row is at most about 60 columns: spinner, description, bar, N/M, time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    if not console.is_terminal:
        yield lambda completed, total, status: None
        return

    class Stacked(Progress):
        status = ""

        def get_renderables(self):
            yield self.make_tasks_table(self.tasks)
            if self.status:
                yield Text(self.status, overflow="fold")

    bar = Stacked(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console)  # fmt: skip
    task = bar.add_task(description, total=None)

    def update(completed: int, total: int | None, status: str) -> None:
        bar.status = status
        bar.update(task, total=total, completed=completed)

    with bar:
        yield update
