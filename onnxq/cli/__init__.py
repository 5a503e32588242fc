"""The ``onnxq`` command line (click). Each command only builds pass configs and calls the library."""

from __future__ import annotations

from . import cmd_basic, cmd_calibrate, cmd_convert, cmd_debug, cmd_eval, cmd_lint, cmd_profile, cmd_prune, cmd_sensitivity  # noqa: F401  (registers commands)
from ._app import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="onnxq")
