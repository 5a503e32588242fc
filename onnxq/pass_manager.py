"""Running passes in order: normalize after modifying passes, optionally check after each one.

Before anything runs, the whole pipeline (nested managers and named pipelines included) is
validated against the passes' declared context slots: a pass that reads a slot no earlier step
writes, and the caller did not fill, is a :class:`ConfigError` naming both.

A failure inside a pass is re-raised as a :class:`PassError` naming the failing pass and the ones
that ran before it. Deliberate onnxq errors (bad calibration data, a violated precondition) keep
their own type as well, so callers can catch either.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import ir
from .config import EmptyConfig
from .errors import OnnxqError, PassError
from .ir import Model
from .pass_base import Pass, PassContext, PassResult, make_pass

__all__ = ["PassManager", "PipelineResult", "PassRecord", "checks_enabled_by_default", "Sequential"]

log = logging.getLogger(__name__)


def checks_enabled_by_default() -> bool:
    """Checker-after-every-pass is on when ``ONNXQ_CHECK_PASSES=1`` (the test suite sets it)."""
    return os.environ.get("ONNXQ_CHECK_PASSES", "") not in ("", "0")


@dataclass
class PassRecord:
    """One pass's outcome inside a pipeline run."""

    name: str
    modified: bool
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"pass": self.name, "modified": self.modified, "seconds": round(self.seconds, 4), "stats": self.stats}


@dataclass
class PipelineResult(PassResult):
    """A :class:`PassResult` plus the record of every pass that ran."""

    records: list[PassRecord] = field(default_factory=list)


_WRAPPED: dict[type, type] = {}


def _as_pass_error(exc: OnnxqError) -> type:
    """A class that is both ``PassError`` and the original error type (cached)."""
    cls = type(exc)
    if issubclass(cls, PassError):
        return cls
    if cls not in _WRAPPED:
        _WRAPPED[cls] = type(cls.__name__, (PassError, cls), {"__module__": cls.__module__})
    return _WRAPPED[cls]


class PassManager:
    """Run a list of passes.

    Args:
        passes: the passes, in order (a :class:`Pass` or a nested ``PassManager``).
        check: run ``onnx.checker.check_model(full_check=True)`` after every pass. Defaults to on
            when ``ONNXQ_CHECK_PASSES=1`` (always under the test suite).
        normalize: remove dead nodes and restore topological order after each modifying pass.
        steps: repeat the whole list up to ``steps`` times (stopping early once nothing changes),
            for passes that enable each other (e.g. constant folding and Identity removal).
    """

    def __init__(
        self, passes: Sequence[Pass[Any] | PassManager], *, check: bool | None = None, normalize: bool = True, steps: int = 1, name: str = "pipeline"
    ) -> None:
        self.passes = list(passes)
        self.check = checks_enabled_by_default() if check is None else check
        self.normalize = normalize
        self.steps = max(1, steps)
        self.name = name

    def __repr__(self) -> str:
        return f"PassManager({[getattr(p, 'name', '?') for p in self.passes]}, steps={self.steps})"

    def check_needs(self, available: set[str]) -> set[str]:
        """Validate every pass's declared reads against what earlier steps write (see the module doc)."""
        for p in self.passes:
            available = p.check_needs(available)
        return available

    def run(self, model: Model, ctx: PassContext | None = None) -> PipelineResult:
        """Validate the pipeline, run the passes on ``model`` and return the final model with per-pass records.

        Raises:
            ConfigError: a pass reads a context slot that nothing fills (before anything runs).
            PassError: a pass failed; the message names it and the passes before it.
        """
        ctx = ctx if ctx is not None else PassContext()
        self.check_needs(ctx.filled())
        with ir.gc_paused():
            return self._run(model, ctx)

    def _run(self, model: Model, ctx: PassContext) -> PipelineResult:
        records: list[PassRecord] = []
        modified_any = False
        for _ in range(self.steps):
            modified_round = False
            for p in self.passes:
                model, modified, recs = self._run_one(p, model, ctx, records)
                records.extend(recs)
                modified_round |= modified
            modified_any |= modified_round
            if not modified_round:
                break
        return PipelineResult(model=model, modified=modified_any, stats={}, records=records)

    __call__ = run

    def _run_one(self, p: Pass[Any] | PassManager, model: Model, ctx: PassContext, before: list[PassRecord]) -> tuple[Model, bool, list[PassRecord]]:
        if isinstance(p, PassManager):
            res = p._run(model, ctx)
            return res.model, res.modified, res.records
        name = p.name or type(p).__name__
        history = ", ".join(r.name for r in before) or "none"
        start = time.perf_counter()
        outer, ctx.current_pass = ctx.current_pass, name
        try:
            result = p(model, ctx)
            if result.modified and self.normalize and p.changes_structure:
                ir.normalize(result.model)
        except OnnxqError as e:
            raise _as_pass_error(e)(f"pass '{name}' failed (after: {history}): {e}") from e
        except Exception as e:
            raise PassError(f"pass '{name}' failed (after: {history}): {type(e).__name__}: {e}") from e
        finally:
            ctx.current_pass = outer
        seconds = time.perf_counter() - start
        if self.check and result.modified:  # an unmodified model is the input, already validated
            try:
                ir.check(result.model, full=True)
            except OnnxqError as e:
                raise PassError(f"pass '{name}' produced an invalid model (after: {history}): {e}") from e
        log.debug("pass %s: modified=%s in %.3fs %s", name, result.modified, seconds, result.stats)
        return result.model, result.modified, [PassRecord(name, result.modified, seconds, dict(result.stats))]


class Sequential(Pass[EmptyConfig]):
    """A pass made of other passes (a named pipeline such as ``cleanup``)."""

    steps: int = 1
    members: tuple[str, ...] = ()

    def build(self) -> PassManager:
        return PassManager([make_pass(n) for n in self.members], steps=self.steps, check=False, name=self.name)

    def check_needs(self, available: set[str]) -> set[str]:
        return self.build().check_needs(available)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        res = self.build()._run(model, ctx)
        stats: dict[str, Any] = {}
        for r in res.records:
            for k, v in r.stats.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    key = f"{r.name}.{k}"
                    stats[key] = stats.get(key, 0) + v
        return PassResult(res.model, res.modified, stats)
