"""Model-level rules: ops the target cannot run, an opset or IR version it cannot read, and (for
fixed-point deployments) scales that are not powers of two."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError
from ..targets.support import unsupported_ops
from ._findings import Finding
from ._registry import LintContext, finding, rule

__all__: list[str] = []


@rule("unsupported-op")
def unsupported_op(ctx: LintContext) -> Iterator[Finding]:
    """Ops the target cannot run at all (error).

    Sources, per target: onnx-tensorrt ``docs/operators.md`` ("N" rows); onnxruntime's QNN execution
    provider docs ("Supported ONNX operators"; no Loop/If); OpenVINO, asked at lint time (its ONNX
    frontend's conversion rules and the CPU plugin's ``query_model``); custom domains for the rest.
    """
    try:
        found = unsupported_ops(ctx.profile, ctx.graph.model)
    except ConfigError as e:  # OpenVINO not installed: say so, check the rest
        ctx.notes.append(f"unsupported-op not checked: {e}")
        return
    for op, why in found.items():
        nodes = [n.name for n in ctx.graph.nodes if n.op == op.rsplit(".", 1)[-1]]
        yield finding(
            "unsupported-op", "error", nodes[:20], f"{ctx.profile.name} cannot run {op}: {why}",
            f"replace {op} with supported ops, or run that part of the model elsewhere",
        )


@rule("opset-too-new")
def opset_too_new(ctx: LintContext) -> Iterator[Finding]:
    """Opset or IR version newer than the target's parser reads, or per-channel Q/DQ below opset 13 (error).

    Sources: onnx-tensorrt ``docs/operators.md`` ("TensorRT 8.5 supports operators up to Opset 17"; its
    ONNX 1.12 parser reads IR version 8); the ONNX operator spec (QuantizeLinear/DequantizeLinear gained
    ``axis``, i.e. per-channel parameters, in opset 13).
    """
    model, rules = ctx.graph.model, ctx.rules
    if rules.max_opset is not None and model.opset > rules.max_opset:
        yield finding(
            "opset-too-new", "error", [], f"opset {model.opset} is newer than {ctx.profile.name} reads (<= {rules.max_opset})",
            f"convert with --target {ctx.profile.name} (it writes opset {ctx.profile.opset}), or downgrade with onnx's version converter",
        )
    if rules.max_ir is not None and model.ir_version > rules.max_ir:
        yield finding(
            "opset-too-new", "error", [], f"IR version {model.ir_version} is newer than {ctx.profile.name}'s parser reads (<= {rules.max_ir})",
            f"save the model with ir_version {rules.max_ir} (its opset needs no newer IR)",
        )
    if model.opset < 13:
        qdq = [n for n in ctx.graph.nodes if ctx.graph.is_dq(n) or ctx.graph.is_q(n)]
        per_channel = [n.name for n in qdq if (p := ctx.graph.params(n)) is not None and p.axis is not None]
        if per_channel:
            yield finding(
                "opset-too-new", "error", per_channel[:20], f"per-channel Q/DQ needs opset >= 13 (model has {model.opset})",
                "upgrade the opset to 13 or more, or quantize weights per tensor",
            )


def _is_power_of_two(values: np.ndarray) -> np.ndarray:
    mantissa, _ = np.frexp(values.astype(np.float64))
    return (values > 0) & (mantissa == 0.5)


@rule("non-power-of-two-scale")
def non_power_of_two_scale(ctx: LintContext) -> Iterator[Finding]:
    """A scale that is not ``2^-k`` in a model meant for fixed-point hardware (error; only with power-of-two checking on).

    Source: integer-only NPUs and DSPs requantize with shifts; the requantization multiplier
    ``s_x·s_w/s_y`` is a shift only when every scale is a power of two (Jacob et al. 2018, section 2.2,
    on fixed-point multipliers; TFLite Micro / CMSIS-NN use the same normalized form).
    """
    if not ctx.power_of_two:
        return
    bad = []
    for node in ctx.graph.nodes:
        if (ctx.graph.is_q(node) or ctx.graph.is_dq(node)) and (p := ctx.graph.params(node)) is not None and p.dtype != "int32":
            if not bool(_is_power_of_two(p.scale.reshape(-1)).all()):
                bad.append(node.name)
    if bad:
        yield finding(
            "non-power-of-two-scale", "error", bad[:20], f"{len(bad)} Q/DQ node(s) have scales that are not powers of two",
            "convert with --power-of-two-scales",
        )
