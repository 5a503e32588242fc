"""Iterative prune-and-evaluate: raise the pruning strength step by step while accuracy holds.

:func:`prune_until` is a library function, not a pass: for each step (increasing sparsity / ratio) it
prunes a fresh copy of the input model with ``make_pass_for(step)``, compares it with the float
reference on the same samples (:func:`onnxq.runtime.evaluate.compare_models`) and stops at the first
step whose metric leaves the tolerance. The best model is the last step that met it.

Metrics (``tolerance`` is the allowed drop unless said otherwise):

- ``cosine``: worst output cosine similarity vs the reference; ok when ``cosine >= 1 - tolerance``;
- ``sqnr``: worst output SQNR in dB; ok when ``sqnr >= tolerance`` (here ``tolerance`` is the minimum dB);
- ``top1``: top-1 agreement with the reference; ok when ``agreement >= 1 - tolerance``;
- ``accuracy``: top-1 accuracy on labelled samples (``(feeds, label)`` pairs); ok when
  ``reference accuracy - candidate accuracy <= tolerance``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxq import ir
from onnxq.errors import ConfigError
from onnxq.inspect import weight_sparsity
from onnxq.ir import Model
from onnxq.pass_base import Pass, PassContext
from onnxq.pass_manager import PassManager
from onnxq.runtime.evaluate import EvalResult, compare_models
from onnxq.runtime.session import make_session

__all__ = ["SearchResult", "prune_until", "METRICS"]

log = logging.getLogger(__name__)

METRICS = ("cosine", "sqnr", "top1", "accuracy")


@dataclass
class SearchResult:
    """Outcome of :func:`prune_until`.

    Attributes:
        best_model: the model of the last step within tolerance (None when no step was).
        best_step: that step (None when no step was within tolerance).
        curve: one entry per evaluated step: ``step``, ``metric``, ``ok``, ``sparsity`` (fraction of
            zero weights in Conv/Gemm/MatMul), ``params`` (float weights left), ``modified``,
            and the pass statistics under ``stats``.
        metric / tolerance: what was measured and the bound.
        seconds: wall time of the search; cut_short: ``budget_s`` stopped it before every step ran.
    """

    best_model: Model | None
    best_step: float | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "cosine"
    tolerance: float = 0.0
    seconds: float = 0.0
    cut_short: bool = False


def _measure(result: EvalResult, metric: str, tolerance: float) -> tuple[float, bool]:
    """(metric value, within tolerance)."""
    if metric == "accuracy":
        out = result.output()
        if out.top1_accuracy_candidate is None or out.top1_accuracy_reference is None:
            raise ConfigError("metric 'accuracy' needs labelled samples ((feeds, label) pairs whose labels match the first output)")
        return out.top1_accuracy_candidate, out.top1_accuracy_reference - out.top1_accuracy_candidate <= tolerance
    value = result.worst({"cosine": "cosine", "sqnr": "sqnr_db", "top1": "top1_agreement"}[metric])
    if value != value:  # NaN: the metric does not apply (top-1 of an output without a class axis)
        raise ConfigError(f"metric '{metric}' is undefined for this model's outputs")
    return value, value >= (tolerance if metric == "sqnr" else 1.0 - tolerance)


def _float_params(model: Model) -> int:
    seen: set[int] = set()
    total = 0
    for node in ir.iter_nodes(model.graph):
        for t in node.inputs:
            if ir.is_constant(t) and id(t) not in seen and ir.const_value(t).dtype.kind == "f":
                seen.add(id(t))
                total += int(ir.const_value(t).size)
    return total


class _Labelled:
    """Re-iterable ``(sample, label)`` pairs of a data source."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __iter__(self) -> Any:
        return iter(self.source.iter_with_labels())


def _checked_arguments(steps: list[float], samples: Iterable[Any], metric: str, tolerance: float) -> Iterable[Any]:
    """Validate the search arguments; return samples that can be iterated once per step."""
    if not steps or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"prune_until: steps must be a non-empty, strictly increasing list, got {steps}")
    if metric not in METRICS:
        raise ConfigError(f"prune_until: metric must be one of {', '.join(METRICS)}, got '{metric}'")
    if not tolerance >= 0:
        raise ConfigError(f"prune_until: tolerance must be >= 0, got {tolerance}")
    if metric == "accuracy" and callable(getattr(samples, "iter_with_labels", None)):
        samples = _Labelled(samples)  # a DataSource: iterate (sample, label) pairs
    if iter(samples) is samples:  # a one-shot iterator: keep the samples for every step
        samples = list(samples)
    if metric == "accuracy":
        first = next(iter(samples), None)
        if not (isinstance(first, tuple) and len(first) == 2):
            raise ConfigError("metric 'accuracy' needs labelled samples: (feeds, label) pairs or a data source with labels")
    return samples


def prune_until(
    model: Model,
    make_pass_for: Callable[[float], Pass],
    steps: Sequence[float],
    samples: Iterable[Any],
    metric: str = "cosine",
    tolerance: float = 0.01,
    reference: Any = None,
    *,
    threads: int = 1,
    ctx_factory: Callable[[float], PassContext] | None = None,
    budget_s: float | None = None,
) -> SearchResult:
    """Prune with increasing strength while the metric stays within ``tolerance``.

    Args:
        model: the model to prune (never modified: every step prunes a fresh copy).
        make_pass_for: builds the pruning pass for a step, e.g.
            ``lambda s: make_pass("prune-magnitude", {"sparsity": s})``.
        steps: strictly increasing strengths (sparsity, ratio, ...).
        samples: evaluation feeds (or ``(feeds, label)`` pairs / a labelled data source for
            ``accuracy``); iterated once per step, so pass a list or a re-iterable data source.
        metric: ``cosine``, ``sqnr``, ``top1`` or ``accuracy`` (see the module docstring).
        tolerance: allowed drop (minimum dB for ``sqnr``).
        reference: the float model to compare with (default: ``model`` itself).
        threads: onnxruntime threads.
        ctx_factory: a fresh :class:`PassContext` per step (e.g. carrying channel statistics).
        budget_s: wall-clock seconds; no further step starts once they are spent (the first step
            always runs), and the result says the search was cut short.

    Returns:
        A :class:`SearchResult` with the best model and the curve.

    Raises:
        ConfigError: empty or non-increasing steps, an unknown metric, a negative tolerance.
    """
    steps = [float(s) for s in steps]
    samples = _checked_arguments(steps, samples, metric, tolerance)
    ref_session = make_session(reference if reference is not None else model, threads=threads, where="reference model")
    result = SearchResult(best_model=None, best_step=None, metric=metric, tolerance=tolerance)
    start = time.perf_counter()
    for i, step in enumerate(steps):
        if budget_s is not None and i > 0 and time.perf_counter() - start >= budget_s:
            result.cut_short = True
            log.info("prune_until: time budget %.1f s spent after %d step(s)", budget_s, i)
            break
        candidate = ir.clone(model)
        ctx = ctx_factory(step) if ctx_factory else PassContext()
        run = PassManager([make_pass_for(step)]).run(candidate, ctx)
        evaluation = compare_models(None, run.model, samples, threads=threads, with_labels=metric == "accuracy", reference_session=ref_session)
        value, ok = _measure(evaluation, metric, tolerance)
        record = run.records[-1] if run.records else None
        result.curve.append(
            {
                "step": step,
                "metric": value,
                "ok": ok,
                "sparsity": weight_sparsity(run.model)["overall"],
                "params": _float_params(run.model),
                "modified": run.modified,
                "stats": record.stats if record else {},
                "skips": list(ctx.skips),
            }
        )
        log.info("prune_until: step %s → %s %.6g (%s)", step, metric, value, "ok" if ok else "out of tolerance")
        if not ok:
            break
        result.best_model, result.best_step = run.model, step
    result.seconds = time.perf_counter() - start
    return result
