"""Where a run writes: checked against everything it reads before anything runs, then written all or nothing.

Every command declares what it reads (:class:`Input`: the model and its external-data files, the
data, ranges, recipe, replay report, labels) and what it writes (:class:`Output`: ``-o``,
``--report``). :class:`RunOutputs` then refuses, in one line naming both paths and before any work:

- an output that is an input: paths are compared resolved (symlinks followed) and by inode (hard
  links), and an output may not lie inside an input folder (a folder of calibration images);
- replacing an existing model output whose external-data file is an input's (saving removes the
  previous output's data file);
- two outputs that are the same file;
- an output that is a folder or not a regular file (an atomic rename would replace ``/dev/null``),
  or whose folder is missing or not writable.

A model's own data file needs no check: :func:`onnxq.ir.save` names it after its content
(``<name>.<sha256[:16]>.data``), so it can only ever replace a file with the same bytes.

Outputs are written into a private staging folder beside each target and moved into place once
all of them are complete (a model with its data file by :func:`onnxq.ir.move_model`, as a pair); a
run that fails at any point deletes its staging folders, so it leaves neither a partial output nor
a temporary file behind, and never an old output replaced by half of a new run.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from .. import ir
from ..api._loading import external_data_files
from ..errors import OutputError

__all__ = ["Input", "Output", "RunOutputs"]

_SYNTHETIC = re.compile(r"\s*synthetic(:.*)?\s*")
T = TypeVar("T")


@dataclass(frozen=True)
class Input:
    """Something a run reads: ``role`` names it in messages (``input model``, ``--data``, ...).

    ``model``: also the model's external-data files. ``data``: a ``--data`` spec, which may be
    ``synthetic[:N]`` (no file) or a folder (no output may be written inside it).
    """

    role: str
    path: str | os.PathLike[str] | None
    model: bool = False
    data: bool = False


@dataclass(frozen=True)
class Output:
    """Something a run writes; a ``model`` output may bring a data file along (see the module docstring)."""

    role: str
    path: str | os.PathLike[str] | None
    model: bool = False


@dataclass(frozen=True)
class _Read:
    what: str  # e.g. "--data 'calib/'" or "the external-data file 'w.bin' of input model 'm.onnx'"
    path: Path
    resolved: Path
    folder: bool


class RunOutputs:
    """The outputs of one run: checked against its inputs, staged, committed together.

    Use as a context manager; :meth:`write` writes one output into its staging folder and the
    successful end of the ``with`` block moves every staged file into place::

        with RunOutputs([Output("-o", out, model=True)], [Input("input model", src, model=True)]) as outs:
            outs.write("-o", lambda path: ir.save(model, path))
        echo(f"wrote {outs.target('-o')}")

    Raises:
        OutputError: an output collides with an input or another output, is a folder or a special
            file, its folder is missing or not writable, or writing it fails (disk full, ...).
    """

    def __init__(self, outputs: Sequence[Output], inputs: Sequence[Input]) -> None:
        self._outputs = [o for o in outputs if o.path is not None]
        self._targets = {o.role: Path(o.path) for o in self._outputs if o.path is not None}
        self._models = {o.role for o in self._outputs if o.model}
        self._staging: dict[str, Path] = {}
        reads = _reads(inputs)
        for out in self._outputs:
            target = self._targets[out.role]
            raw = str(out.path)
            if raw.endswith(("/", os.sep)):  # Path() would drop the slash and write a file
                raise OutputError(f"{out.role} '{raw}' names a folder; give a file path")
            try:
                _check_target(out.role, target)
            except OSError as e:  # a name too long, a loop of symlinks, ...
                raise OutputError(f"{out.role} '{target}': {e.strerror or e}") from e
        _check_distinct(self._outputs)
        for out in self._outputs:
            target = self._targets[out.role]
            _check_not_read(f"{out.role} '{target}'", target, reads + _external_reads(inputs, target))
            for file in _removed_by_saving_over(target) if out.model else []:
                label = f"{out.role} '{target}' exists and its external-data file '{file}', which saving over it removes,"
                _check_not_read(label, file, reads + _external_reads(inputs, file))

    def target(self, role: str) -> Path:
        """Where ``role`` ends up (the path given on the command line)."""
        return self._targets[role]

    def write(self, role: str, writer: Callable[[Path], T]) -> T:
        """Call ``writer`` with the staging path of ``role``'s output; OS errors name the output."""
        if role not in self._staging:
            raise KeyError(f"no staging folder for '{role}': use RunOutputs as a context manager")
        target = self._targets[role]
        try:
            return writer(self._staging[role] / target.name)
        except OSError as e:
            raise OutputError(f"cannot write {role} '{target}': {e.strerror or e}") from e

    def __enter__(self) -> RunOutputs:
        try:
            for role, target in self._targets.items():
                try:
                    self._staging[role] = Path(tempfile.mkdtemp(dir=target.parent, prefix=".onnxq-staging-"))
                except OSError as e:
                    raise OutputError(f"cannot write {role} '{target}': folder '{target.parent}' is not writable ({e.strerror or e})") from e
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None:
                self._commit()
        finally:
            self._cleanup()

    def _commit(self) -> None:
        """Move every staged output into place: a model with its data file as a pair (see
        :func:`onnxq.ir.move_model`), any other output by one rename."""
        for role, staging in self._staging.items():
            target = self._targets[role]
            staged = staging / target.name
            if not staged.is_file():
                continue  # not written (e.g. no --report data): nothing to commit
            try:
                if role in self._models:
                    ir.move_model(staged, target)
                else:
                    os.replace(staged, target)
            except OSError as e:
                raise OutputError(f"cannot write {role} '{target}': {e.strerror or e}") from e

    def _cleanup(self) -> None:
        for staging in self._staging.values():
            shutil.rmtree(staging, ignore_errors=True)
        self._staging.clear()


def _resolve(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _reads(inputs: Iterable[Input]) -> list[_Read]:
    """The existing files and folders the inputs name (``synthetic`` data and missing paths skipped:
    reading them fails before anything is written)."""
    reads = []
    for item in inputs:
        if item.path is None or (item.data and isinstance(item.path, str) and _SYNTHETIC.fullmatch(item.path)):
            continue
        path = Path(item.path)
        try:
            if path.exists():
                reads.append(_Read(f"{item.role} '{path}'", path, _resolve(path), path.is_dir()))
        except (OSError, ValueError):  # unreadable or NUL in a name: reading it reports that
            continue
    return reads


def _external_reads(inputs: Iterable[Input], written: Path) -> list[_Read]:
    """The external-data files of the input models, looked up only when ``written`` already exists
    inside a model's folder (a file that does not exist yet cannot be one of them)."""
    if not written.exists():
        return []
    resolved = _resolve(written)
    reads = []
    for item in inputs:
        if not item.model or item.path is None:
            continue
        model = Path(item.path)
        if not resolved.is_relative_to(_resolve(model.parent)):
            continue
        for tensor, file in external_data_files(model):
            what = f"the external-data file '{file}' of {item.role} '{model}' (initializer '{tensor}')"
            reads.append(_Read(what, file, _resolve(file), False))
    return reads


def _removed_by_saving_over(target: Path) -> list[Path]:
    """The data files of an existing model output that saving a new one removes: those it references
    that are named after it, ``<name>[.<sha256[:16]>].data`` (see :func:`onnxq.ir.save`)."""
    if not target.is_file():
        return []
    ours = re.compile(re.escape(target.name) + r"(\.[0-9a-f]{16})?\.data")
    return [file for _, file in external_data_files(target) if file.parent == target.parent and ours.fullmatch(file.name)]


def _check_target(role: str, target: Path) -> None:
    folder = target.parent
    if target.name in ("", ".", ".."):
        raise OutputError(f"{role} '{target}' is not a file name")
    if not folder.exists():
        raise OutputError(f"{role} '{target}': folder '{folder}' does not exist")
    if not folder.is_dir():
        raise OutputError(f"{role} '{target}': '{folder}' is not a folder")
    if target.is_dir():
        raise OutputError(f"{role} '{target}' is a folder, expected a file path")
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        raise OutputError(f"{role} '{target}' exists and is not a regular file; onnxq writes files by renaming them into place")


def _check_distinct(outputs: Sequence[Output]) -> None:
    seen: dict[Path, str] = {}
    for out in outputs:
        path = Path(out.path) if out.path is not None else Path()
        label = f"{out.role} '{path}'"
        key = _resolve(path)
        if key in seen:
            raise OutputError(f"{label} and {seen[key]} are the same file; give them different paths")
        seen[key] = label


def _check_not_read(label: str, path: Path, reads: Iterable[_Read]) -> None:
    resolved = _resolve(path)
    for read in reads:
        inside = read.folder and resolved.is_relative_to(read.resolved)
        same = resolved == read.resolved or _same_file(path, read.path)
        if inside or same:
            what = "is inside" if inside and not same else "is"
            raise OutputError(f"{label} {what} {read.what}; onnxq never overwrites its inputs: choose another path")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False

