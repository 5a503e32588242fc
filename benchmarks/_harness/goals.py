"""Goals: a stated target checked against the measurements, PASS / FAIL / SKIP with the figure.

A goal that could not be decided (its model was not run, or the comparison it needs has no
second side) is neither PASS nor FAIL: ``ok is None`` prints as ``SKIP``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Goal", "check", "print_goals", "print_losses"]


@dataclass(frozen=True)
class Goal:
    """One goal line: what was aimed at, whether it was met (None: undecided) and the measured detail."""

    goal: str
    ok: bool | None
    detail: str

    @property
    def verdict(self) -> str:
        return "SKIP" if self.ok is None else "PASS" if self.ok else "FAIL"

    def line(self) -> str:
        return f"{self.verdict:4}  {self.goal}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"goal": self.goal, "pass": self.ok, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Goal:
        return cls(d["goal"], d["pass"], d["detail"])


def check(goal: str, value: float | None, test: Callable[[float], bool], shown: str, *,
          not_run: str | None = None, failed: str = "not measured") -> Goal:
    """``test(value)`` as a goal; ``shown.format(value)`` is the detail.

    ``not_run`` (a reason) makes the goal undecided; a missing ``value`` fails it with ``failed``.
    """
    if not_run is not None:
        return Goal(goal, None, not_run)
    if value is None:
        return Goal(goal, False, failed)
    return Goal(goal, bool(test(value)), shown.format(value))


def print_goals(goals: Iterable[Goal], heading: str = "=== goals", *, empty: str | None = None) -> None:
    """``heading`` after a blank line, then one line per goal (``empty`` is printed when there is none)."""
    goals = list(goals)
    print(f"\n{heading}")
    for g in goals:
        print(g.line())
    if not goals and empty:
        print(empty)


def print_losses(goals: Sequence[Goal], marker: str, title: str) -> None:
    """The failed goals whose name contains ``marker`` again, under their own heading."""
    losses = [g for g in goals if g.ok is False and marker in g.goal]
    if losses:
        print(f"\n=== {title}")
        for g in losses:
            print(f"  {g.goal}: {g.detail}")
