"""Progress bars for long work: shown on a terminal, silent when piped or disabled."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["track", "progress_enabled"]


def progress_enabled() -> bool:
    """True when progress bars should be drawn: when stderr is a terminal."""
    return sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on a terminal (plain iteration otherwise)."""
    if not (progress_enabled() if enabled is None else enabled):
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


class status:  # noqa: N801  (used as a context manager, like rich's)
    """A transient one-line status (spinner) on a terminal for work without a known length."""

    def __init__(self, message: str, enabled: bool | None = None) -> None:
        self.message = message
        self.enabled = progress_enabled() if enabled is None else enabled
        self._status: Any = None

    def __enter__(self) -> status:
        if self.enabled:
            from rich.console import Console

            self._status = Console(stderr=True).status(self.message)
            self._status.__enter__()
        return self

    def update(self, message: str) -> None:
        """Replace the status text."""
        if self._status is not None:
            self._status.update(message)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
