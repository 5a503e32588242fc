"""``fuse-matmul-add``: ``Add(MatMul(A, B), C)`` → ``Gemm(A, B, C)`` where Gemm's contract holds.

Gemm computes ``Y = A @ B + C`` for 2-D ``A`` [M, K] and ``B`` [K, N] with ``C`` broadcastable to
[M, N]. The fusion applies only when

- ``A`` is known to be 2-D (from shape inference: a 3-D activation must stay MatMul),
- ``B`` is a 2-D constant and ``C`` a constant of shape [N] or [1, N] (a per-output bias),
- the MatMul output is read only by the Add.

One Gemm is one kernel call in onnxruntime and the unit its quantizers and QGemm expect. The
first two conditions are the pattern (an Add after a 3-D MatMul is not one); a pattern whose
MatMul output has other readers or whose bias dtype differs is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxq import ir
from onnxq.ir import Node
from onnxq.pass_base import EmptyConfig, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

__all__ = ["FuseMatMulAdd"]


class _MatMulAdd(Rule):
    """``Add(MatMul(A, B), C)`` → ``Gemm(A, B, C)`` (see the module docstring)."""

    name = "Gemm"
    ops = ("Add",)

    def match(self, rw: Rewriter, add: Node) -> Match | str | None:
        for i in (0, 1):
            mm = ir.producer(add.inputs[i])
            if mm is None or mm.op != "MatMul" or (mm.domain or ""):
                continue
            bias = ir.constant_array(add.inputs[1 - i])
            w = ir.constant_array(mm.inputs[1])
            a = mm.inputs[0]
            if w is None or w.ndim != 2 or not isinstance(a.shape, (list, tuple)) or len(a.shape) != 2:
                return None
            if bias is None or bias.shape not in ((w.shape[1],), (1, w.shape[1])):
                return None
            found = Match([add, mm], {"bias": bias.reshape(-1), "bias_name": add.inputs[1 - i].name})
            if ir.only_consumer(rw.graph, mm.outputs[0]) is not add:
                return "MatMul output has other readers"
            return "bias and weight dtypes differ" if bias.dtype != w.dtype else found
        return None

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        add, mm = match.nodes
        bias = ir.make_constant(rw.name(match.values["bias_name"] + "/gemm_bias"), match.values["bias"])
        gemm = ir.make_node("Gemm", [mm.inputs[0], mm.inputs[1], bias], [], name=rw.name((mm.name or "matmul") + "/gemm"))
        rw.take_output(add, gemm)
        rw.add(gemm)
        rw.remove(mm, add)


@register_pass("fuse-matmul-add")
class FuseMatMulAdd(RewritePass[EmptyConfig]):
    """Fuse MatMul + bias Add into Gemm when the input is 2-D and the bias per-output."""

    counter = "fused"

    def rules(self) -> Sequence[Rule]:
        return [_MatMulAdd()]
