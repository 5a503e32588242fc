"""Fuzz suite reporting: ``fuzz: N examples`` (and per test: checked / refused) in the terminal summary."""

from __future__ import annotations

from typing import Any

from tests.fuzz._checks import REFUSALS, STATS


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "fuzz: property-based fuzzing of the pipelines on random graphs")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not STATS:
        return
    total = sum(c["ok"] + c["refused"] for c in STATS.values())
    refused = sum(c["refused"] for c in STATS.values())
    terminalreporter.write_line(f"fuzz: {total} examples ({refused} refused with a typed one-line error)")
    for test, counts in STATS.items():
        notes = "".join(f", {n} {what}" for what, n in counts.items() if what not in ("ok", "refused"))
        terminalreporter.write_line(f"  {test}: {counts['ok']} checked, {counts['refused']} refused{notes}")
        if config.getoption("verbose") > 0:
            for message, n in REFUSALS[test].most_common(5):
                terminalreporter.write_line(f"      {n} x {message}")
