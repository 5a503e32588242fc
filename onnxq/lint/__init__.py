"""A Q/DQ linter: placements and parameters a deployment target would reject, run slowly, or compute
wrongly, each explained with the nodes involved and a fix (``onnxq lint MODEL --target T``).

The rules are a registry of small functions (:data:`RULES`), each documented with the target
documentation it enforces:

| rule | severity | what |
|------|----------|------|
| ``unsupported-op`` | error | ops the target cannot run |
| ``opset-too-new`` | error | opset / IR version newer than the target reads; per-channel below opset 13 |
| ``no-int8-kernel`` | error | Q/DQ types or layouts without an integer kernel (uint8 on TensorRT, int8 MatMul weights on QNN) |
| ``forbidden-zero-point`` | error | nonzero zero points where the target needs 0; uneven per-channel zero points |
| ``bias-overflow`` | error | int32 biases saturated, able to overflow the accumulator, or with a scale other than s_x·s_w |
| ``non-power-of-two-scale`` | error | (fixed-point deployments) scales that are not 2^-k |
| ``qdq-breaks-fusion`` | warning | half-quantized weighted ops; Q/DQ between a weighted op and its fused activation |
| ``qdq-around-unfusable-op`` | warning | an op between DQ and Q that the target runs in float |
| ``dq-shared-consumers`` | warning | a DQ feeding readers with different needs |
| ``shared-scale-disparate-ranges`` | warning | one scale over Concat branches of very different ranges |
| ``redundant-qdq`` | warning | Q/DQ pairs that only add conversions |

The linter reads graphs only (ranges from data run the model on onnxruntime's reference kernels),
so it lives in the framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import ir
from ..errors import ConfigError
from ..targets import get_target
from . import rules_model, rules_params, rules_placement  # noqa: F401  (imported to register the rules)
from ._findings import LINT_SCHEMA_VERSION, Finding, LintReport, Severity
from ._graph import QDQGraph
from ._registry import RULES, LintContext

__all__ = ["lint", "Finding", "LintReport", "Severity", "RULES", "LINT_SCHEMA_VERSION", "observed_ranges"]


def observed_ranges(model: ir.Model, samples: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Per QuantizeLinear node, the largest ``|x|`` of its input over ``samples`` (exact QDQ numerics)."""
    from ..calibration.expose import expose_tensors
    from ..runtime.backends import make_runtime_session

    graph = QDQGraph(model)
    q_nodes = [n for n in graph.nodes if graph.is_q(n) and not ir.is_constant(n.inputs[0])]
    exposed = expose_tensors(model, sorted({n.inputs[0].name for n in q_nodes}))
    session = make_runtime_session(exposed.model, "onnxruntime-reference", where=f"{model.source} (lint ranges)")
    names = [o.name for o in session.get_outputs()]
    absmax: dict[str, float] = {}
    for feeds in samples:
        for name, value in zip(names, session.run(None, dict(feeds))):
            tensor = exposed.output_to_tensor.get(name, name)
            if np.size(value):
                absmax[tensor] = max(absmax.get(tensor, 0.0), float(np.max(np.abs(value))))
    return {n.name: absmax[n.inputs[0].name] for n in q_nodes if n.inputs[0].name in absmax}


def lint(
    model: Any,
    target: str = "generic",
    *,
    data: Iterable[Mapping[str, np.ndarray]] | None = None,
    power_of_two: bool = False,
    rules: Sequence[str] | None = None,
) -> LintReport:
    """Check ``model``'s Q/DQ graph against ``target``'s rules.

    Args:
        model: a path, ModelProto, bytes or :class:`~onnxq.ir.Model` (not modified).
        target: a registered target (:data:`onnxq.targets.TARGETS`).
        data: samples to measure each quantized tensor's range on (``shared-scale-disparate-ranges``);
            without them, ranges are read off the upstream quantization grids.
        power_of_two: the model is meant to have power-of-two scales (enables ``non-power-of-two-scale``).
        rules: run only these rules (default: all).

    Returns:
        The findings (:attr:`LintReport.exit_code` is 1 when any is an error).

    Raises:
        ConfigError: an unknown target or rule.
        InvalidModelError: the model cannot be read.
    """
    profile = get_target(target)
    m = model if isinstance(model, ir.Model) else ir.load(model)
    chosen = list(rules) if rules is not None else list(RULES)
    unknown = sorted(set(chosen) - set(RULES))
    if unknown:
        raise ConfigError(f"unknown lint rule(s) {', '.join(unknown)}; valid: {', '.join(RULES)}")
    ctx = LintContext(QDQGraph(m), profile, power_of_two=power_of_two)
    if data is not None:
        ctx.observed = observed_ranges(m, data)
    report = LintReport(model=m.source, target=profile.name, rules=chosen)
    for rule_id in chosen:
        report.findings.extend(RULES[rule_id](ctx))
    report.notes.extend(ctx.notes)
    return report
