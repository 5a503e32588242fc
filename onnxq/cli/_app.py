"""The ``onnxq`` command group: global options and error handling.

Commands stay thin: they turn options into pass configs / library calls and print results. Any
:class:`OnnxqError` becomes one line on stderr and exit code 2; an unexpected exception becomes one
line and exit code 1. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .._version import __version__
from ..errors import OnnxqError

__all__ = ["cli", "State", "pass_state"]


class State:
    """Global CLI options shared with subcommands."""

    def __init__(self, debug: bool = False, verbose: int = 0) -> None:
        self.debug = debug
        self.verbose = verbose


pass_state = click.make_pass_decorator(State, ensure=True)


class OnnxqGroup(click.Group):
    """A click group that reports library errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OnnxqError as e:
            if _debug(ctx):
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # output piped into `head` and closed early: not an error
            ctx.exit(0)
        except Exception as e:
            if _debug(ctx):
                raise
            message = " ".join(str(e).split()) or type(e).__name__
            click.echo(f"internal error: {type(e).__name__}: {message} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(State)
    return bool(state and state.debug)


def _configure_logging(verbose: int, debug: bool) -> None:
    level = logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logger = logging.getLogger("onnxq")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


@click.group(cls=OnnxqGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="onnxq")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """onnxq: rewrite ONNX graphs to make models small and fast, and prove it on onnxruntime."""
    ctx.obj = State(debug=debug, verbose=verbose)
    _configure_logging(verbose, debug)
