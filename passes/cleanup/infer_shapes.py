"""``infer-shapes``: annotate tensors with dtypes and shapes from onnx's shape inference.

Uses onnx's own (non-symbolic) inference with data propagation, round-tripping through the proto.
Real exports where inference fails are left unchanged (the reason is logged): later passes must
work without shapes, so nothing downstream depends on this pass succeeding.
"""

from __future__ import annotations

from onnxq import ir
from onnxq.ir import Model
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass


def _signature(model: Model) -> list[tuple[str, str, str]]:
    return [
        (t.name, str(t.dtype), str(t.shape))
        for g in ir.iter_graphs(model.graph)
        for n in g.nodes
        for t in n.outputs
    ]


@register_pass("infer-shapes")
class InferShapes(Pass[EmptyConfig]):
    """Annotate intermediate tensors with dtypes and shapes (onnx shape inference)."""

    changes_structure = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        before = _signature(model)
        ok = ir.infer_shapes(model)
        after = _signature(model)
        changed = sum(a != b for a, b in zip(before, after))
        return PassResult(model, changed > 0, {"succeeded": ok, "annotated": changed})
