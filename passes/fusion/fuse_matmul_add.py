"""``fuse-matmul-add``: ``Add(MatMul(A, B), C)`` → ``Gemm(A, B, C)`` where Gemm's contract holds.

Gemm computes ``Y = A @ B + C`` for 2-D ``A`` [M, K] and ``B`` [K, N] with ``C`` broadcastable to
[M, N]. The fusion applies only when

- ``A`` is known to be 2-D (from shape inference: a 3-D activation must stay MatMul),
- ``B`` is a 2-D constant and ``C`` a constant of shape [N] or [1, N] (a per-output bias),
- the MatMul output is read only by the Add.

One Gemm is one kernel call in onnxruntime and the unit its quantizers and QGemm expect.
"""

from __future__ import annotations

from onnxq import ir
from onnxq.ir import Graph, Model, Node
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass


def _check(graph: Graph, add: Node) -> tuple[Node, int] | str:
    """Return (matmul, index of the bias input of the Add) or the reason it does not fuse."""
    for i in (0, 1):
        mm = ir.producer(add.inputs[i])
        if mm is None or mm.op != "MatMul" or (mm.domain or ""):
            continue
        bias = ir.constant_array(add.inputs[1 - i])
        w = ir.constant_array(mm.inputs[1])
        a = mm.inputs[0]
        if ir.only_consumer(graph, mm.outputs[0]) is not add:
            return "MatMul output has other readers"
        if w is None or w.ndim != 2:
            return "MatMul weight is not a 2-D constant"
        if not isinstance(a.shape, (list, tuple)) or len(a.shape) != 2:
            return "MatMul input is not known to be 2-D"
        if bias is None or bias.shape not in ((w.shape[1],), (1, w.shape[1])):
            return "Add operand is not a per-output constant bias"
        if bias.dtype != w.dtype:
            return "bias and weight dtypes differ"
        return mm, 1 - i
    return "no MatMul input"


@register_pass("fuse-matmul-add")
class FuseMatMulAdd(Pass[EmptyConfig]):
    """Fuse MatMul + bias Add into Gemm when the input is 2-D and the bias per-output."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        fused = 0
        namer = ir.names(model)
        for graph in ir.iter_graphs(model.graph):
            doomed = []
            for add in list(graph.nodes):
                if add.op != "Add" or (add.domain or ""):
                    continue
                found = _check(graph, add)
                if isinstance(found, str):
                    continue
                mm, bias_index = found
                bias = ir.constant_array(add.inputs[bias_index]).reshape(-1)  # type: ignore[union-attr]
                gemm = ir.make_node(
                    "Gemm",
                    [mm.inputs[0], mm.inputs[1], ir.make_constant(namer.new(add.inputs[bias_index].name + "/gemm_bias"), bias)],
                    [],
                    name=namer.new((mm.name or "matmul") + "/gemm"),
                )
                out = add.outputs[0]
                doomed.extend([mm, add])
                add.outputs.clear()
                gemm.outputs.append(out)
                graph.nodes.append(gemm)
                fused += 1
            ir.remove_nodes(graph, doomed)
        return PassResult(model, fused > 0, {"fused": fused})
