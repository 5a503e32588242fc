"""``calibrate``: collect activation ranges for static quantization (the calibration engine as a pass).

Reads samples from ``ctx.calibration_data`` and leaves a RangeSet in ``ctx.ranges`` (and what the
run did in ``ctx.calibration_stats``). When ranges are already there (``onnxq convert --ranges FILE``) they
are checked against the model instead: every main-graph tensor the quantizers could need must have a
range, or the error names the missing tensors (a ranges file made for another model). Subgraph
tensors may lack one, as after calibrating with data: a branch the samples never took.

Only tensors a quantizer could touch are observed (inputs and outputs of ops with a quantizer),
which keeps histogram methods cheap on large models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxq import ir
from onnxq.calibration.collector import DEFAULT_MAX_MEMORY_MB, collect_ranges
from onnxq.calibration.observers import OBSERVERS
from onnxq.errors import CalibrationError, ConfigError, PreconditionError
from onnxq.ir import Model
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass

from ._quantizers import describe_node

__all__ = ["Calibrate", "CalibrateConfig", "candidate_tensors"]


@dataclass(frozen=True)
class CalibrateConfig(PassConfig):
    """Options of ``calibrate``: observer ``method`` and its ``options``, memory budget, sample cap."""

    method: str = "percentile"
    options: dict[str, Any] = field(default_factory=dict)
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
    samples: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in OBSERVERS:
            raise ConfigError(f"calibrate: unknown method '{self.method}'; valid: {', '.join(sorted(OBSERVERS))}")
        if self.samples < 0 or self.max_memory_mb <= 0:
            raise ConfigError("calibrate: samples must be >= 0 and max_memory_mb > 0")

    def __hash__(self) -> int:
        return hash((self.method, tuple(sorted(self.options.items())), self.max_memory_mb, self.samples, self.threads))


def candidate_tensors(model: Model) -> list[str]:
    """Float activations read or written by nodes that have a quantizer, in graph order."""
    names: list[str] = []
    seen: set[str] = set()
    for node in ir.iter_nodes(model.graph):
        if isinstance(describe_node(node), str) and node.op != "MatMul":
            continue
        for t in list(node.inputs) + list(node.outputs):
            if t.name and t.name not in seen and not ir.is_constant(t) and _is_float(t):
                seen.add(t.name)
                names.append(t.name)
    return names


def _main_graph_tensors(model: Model) -> set[str]:
    """Names of the tensors the main graph's nodes read or write (subgraph-only tensors excluded)."""
    names = {t.name for t in model.graph.inputs}
    for node in model.graph.nodes:
        names.update(t.name for t in list(node.inputs) + list(node.outputs))
    return names


def _is_float(t: ir.Tensor) -> bool:
    import numpy as np

    try:
        return t.dtype is not None and np.dtype(t.dtype).kind == "f"
    except TypeError:
        return False


@register_pass("calibrate")
class Calibrate(Pass[CalibrateConfig]):
    """Run the model on calibration data (ctx) and record activation ranges (or check given ranges)."""

    changes_structure = False
    reads = (("calibration_data", "ranges"),)
    writes = ("ranges", "calibration_stats")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        ir.infer_shapes(model)
        names = candidate_tensors(model)
        given = ctx.ranges
        if given is not None:
            # Tensors of If branches / Loop bodies that the calibration samples never ran have no
            # range in the file, exactly as a calibration with data leaves them (their nodes stay
            # float, "no calibration range"). Only a missing main-graph tensor means another model
            # (fuzz regression test_ranges_from_calibrate_skip_branches_the_data_never_takes).
            main = _main_graph_tensors(model)
            missing = [n for n in names if n not in given and n in main]
            if missing and len(missing) == len(names):
                raise CalibrationError(
                    f"the ranges file has none of this model's tensors (e.g. {', '.join(missing[:3])}); was it made for another model?"
                )
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise CalibrationError(
                    f"the ranges file lacks {len(missing)} tensor(s) this model needs ({shown}); was it made for another model, or without the same cleanup?"
                )
            return PassResult(model, False, {"tensors": len(names), "reused": True})
        data = ctx.calibration_data
        if data is None:
            raise PreconditionError("calibrate needs calibration data (ctx.calibration_data) or precomputed ranges (ctx.ranges)")
        ranges, stats = collect_ranges(
            model,
            data,
            tensors=names,
            method=self.config.method,
            options=self.config.options,
            max_memory_mb=self.config.max_memory_mb,
            max_samples=self.config.samples or None,
            threads=self.config.threads,
            progress=ctx.progress,
        )
        ctx.ranges = ranges
        ctx.calibration_stats = stats
        return PassResult(model, False, stats.as_dict())
