"""The ``onnxq`` command group: global options and error handling.

Commands stay thin: they turn options into pass configs / library calls and print results. Any
:class:`OnnxqError` becomes one line on stderr and exit code 2, and so do the problems of the
machine rather than of onnxq: an ``OSError`` (permission denied, read-only or full disk, a name too
long), a ``MemoryError``, a name that is not valid UTF-8. An :class:`InternalError` (onnxq produced
an invalid model) and any other exception are bugs: one line and exit code 1. ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .._version import __version__
from ..errors import InternalError, OnnxqError
from ._output import echo, printable

__all__ = ["cli", "State"]


class State:
    """Global CLI options shared with subcommands."""

    def __init__(self, debug: bool = False, verbose: int = 0) -> None:
        self.debug = debug
        self.verbose = verbose


class OnnxqGroup(click.Group):
    """A click group that reports library errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # one line, like every other error, with the help hint in it
            command = e.ctx.command_path if e.ctx is not None else ctx.command_path
            _fail(ctx, f"error: {_one_line(e.format_message())} (see '{command} -h')", e.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130)
        except BrokenPipeError:  # output piped into `head` and closed early: not an error
            ctx.exit(0)
        except Exception as e:
            if _debug(ctx):
                raise
            _fail(ctx, *_error_line(e))


def _error_line(e: Exception) -> tuple[str, int]:
    """The line and exit code of an error a command let through (see the module docstring)."""
    if isinstance(e, InternalError):
        return f"internal error: {_one_line(e)}", 1
    if isinstance(e, OnnxqError):
        return f"error: {_one_line(e)}", 2
    if isinstance(e, (OSError, MemoryError, UnicodeError)):
        return f"error: {_environment_message(e)}", 2
    message = _one_line(e) or type(e).__name__
    return f"internal error: {type(e).__name__}: {message} (rerun with --debug for the traceback)", 1


def _one_line(error: object) -> str:
    return " ".join(printable(str(error)).split())


def _fail(ctx: click.Context, line: str, code: int) -> None:
    echo(line, err=True)
    ctx.exit(code)


def _environment_message(e: BaseException) -> str:
    """One line for a problem of the machine or of a name, naming the file when the OS does."""
    if isinstance(e, OSError):
        names = " → ".join(f"'{n}'" for n in (e.filename, e.filename2) if n is not None)
        return f"{names + ': ' if names else ''}{e.strerror or _one_line(e)}"
    if isinstance(e, MemoryError):
        return f"out of memory ({_one_line(e) or 'MemoryError'}); the input needs more memory than this machine has"
    return f"a name or text is not valid UTF-8 ({_one_line(e)})"


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(State)
    return bool(state and state.debug)


class _PrintableFormatter(logging.Formatter):
    """Log lines that print even when they quote a non-UTF-8 file name."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _configure_logging(verbose: int, debug: bool) -> None:
    level = logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logger = logging.getLogger("onnxq")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
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
