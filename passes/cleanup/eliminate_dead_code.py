"""``eliminate-dead-code``: remove nodes whose outputs nobody reads (graph inputs/outputs kept)."""

from __future__ import annotations

from onnxq import ir
from onnxq.ir import Model
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass


@register_pass("eliminate-dead-code")
class EliminateDeadCode(Pass[EmptyConfig]):
    """Remove nodes whose outputs are never used; unused initializers disappear with them."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        removed = ir.remove_dead_nodes(model.graph)
        return PassResult(model, removed > 0, {"removed": removed})
