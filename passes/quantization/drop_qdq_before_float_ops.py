"""``drop-qdq-before-float-ops``: no Q/DQ pair between a convolution and an activation the runtime runs in float.

annotate-quantization gives every quantized Conv/ConvTranspose a quantized output, because
onnxruntime fuses ``DQ → Conv → Q`` into QLinearConv and would otherwise run the convolution in
float. OpenVINO reads the same pair differently: its int8 convolution writes uint8 at the Q, and
when the only readers are activations it runs in float (HardSwish, HardSigmoid, Sigmoid, ...), it
undoes that with a Convert and a full-size fp32 Subtract before them — work the fp32 model never
does (it fuses the activation into the convolution). Measured on PP-OCRv4 det with OpenVINO 2026.4
on a CPU without VNNI (per-layer PERF_COUNT, 1 thread): the Subtracts took 9.6 ms and the Converts
2.0 ms of a 43.6 ms run; without those pairs the model ran 1.30–1.44x faster than OpenVINO's fp32
instead of 0.96–1.21x, IoU 0.940 vs 0.937. NNCF never places these pairs (it quantizes compute
inputs only).

The rule: a QuantizeLinear of a ``producers`` output whose every reader is a DequantizeLinear,
whose DequantizeLinears are read only by ``float_ops``, is removed with them; the readers get the
float output (one rounding fewer, so the result moves toward float). Profiles whose runtime wants
this (:attr:`onnxq.targets.TargetProfile.float_activations`) add the pass after
``close-float-islands``; for onnxruntime it would turn QLinearConv back into a float Conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnxq import ir
from onnxq.config import PassConfig
from onnxq.context import PassContext
from onnxq.ir import Model, Node
from onnxq.pass_base import register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule
from onnxq.targets._ops import OPENVINO_FLOAT_ACTIVATIONS

__all__ = ["DropQdqBeforeFloatOps", "DropQdqBeforeFloatOpsConfig", "drop_pairs"]


@dataclass(frozen=True)
class DropQdqBeforeFloatOpsConfig(PassConfig):
    """Options.

    Attributes:
        float_ops: the readers the runtime runs in float (a pair in front of them is only conversions;
            default: OpenVINO's, the target this pass exists for).
        producers: the ops whose quantized output is dropped (the runtime fuses their input Q/DQ itself).
    """

    float_ops: tuple[str, ...] = OPENVINO_FLOAT_ACTIVATIONS
    producers: tuple[str, ...] = ("Conv", "ConvTranspose")


class _QdqBeforeFloatOps(Rule):
    name = "qdq-before-float-ops"
    ops = ("QuantizeLinear",)

    def __init__(self, cfg: DropQdqBeforeFloatOpsConfig) -> None:
        self.cfg = cfg

    def match(self, rw: Rewriter, q: Node) -> Match | str | None:
        producer = ir.producer(q.inputs[0])
        if producer is None or producer.op not in self.cfg.producers:
            return None
        out = q.outputs[0]
        dqs = ir.consumers(out)
        if not dqs or ir.is_graph_output(rw.graph, out) or any(d.op != "DequantizeLinear" or d.inputs[0] is not out for d in dqs):
            return None
        readers = [r for d in dqs for r in ir.consumers(d.outputs[0])]
        if any(ir.is_graph_output(rw.graph, d.outputs[0]) for d in dqs) or not readers:
            return None
        if any(r.op not in self.cfg.float_ops for r in readers):
            return None  # an int8 reader needs the quantized tensor
        return Match([q, *dqs], {"dqs": dqs}, label=f"{producer.op}->{readers[0].op}")

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        q = match.anchor
        for dq in match.values["dqs"]:
            rw.replace_uses(dq.outputs[0], q.inputs[0])
        rw.remove(q, *match.values["dqs"])


@register_pass("drop-qdq-before-float-ops")
class DropQdqBeforeFloatOps(RewritePass[DropQdqBeforeFloatOpsConfig]):
    """Remove a Conv output's Q/DQ pair when only float activations read it (for runtimes that fuse those in float)."""

    counter = "dropped"

    def rules(self) -> Sequence[Rule]:
        return [_QdqBeforeFloatOps(self.config)]


def drop_pairs(model: Model, float_ops: tuple[str, ...]) -> int:
    """Apply the pass to ``model`` in place outside a pipeline (for tuners timing candidates as shipped); returns the pairs dropped."""
    result = DropQdqBeforeFloatOps(DropQdqBeforeFloatOpsConfig(float_ops=float_ops)).run(model, PassContext())
    ir.remove_dead_nodes(model.graph)
    return int(result.stats.get("dropped", 0))
