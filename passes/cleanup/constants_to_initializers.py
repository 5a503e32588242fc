"""``constants-to-initializers``: turn ``Constant`` nodes into initializers.

Paddle2ONNX exports (e.g. the PP-OCR models) keep every weight in a ``Constant`` node. Weight-aware
passes (BatchNorm folding, quantization, pruning) look for initializers; without this pass they see
those weights as activations. ``y = Constant(value=W)`` becomes the initializer ``y = W``.
"""

from __future__ import annotations

import numpy as np

from onnxq import ir
from onnxq.ir import Model, Node
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass

#: Constant attribute name → how to turn its python value into an array.
_VALUE_ATTRS = {
    "value": lambda v: ir.const_value(v),
    "value_float": lambda v: np.array(v, dtype=np.float32),
    "value_floats": lambda v: np.array(v, dtype=np.float32),
    "value_int": lambda v: np.array(v, dtype=np.int64),
    "value_ints": lambda v: np.array(v, dtype=np.int64),
}


def constant_node_value(node: Node) -> np.ndarray | None:
    """The value a ``Constant`` node produces, or None for forms we leave alone (sparse, strings)."""
    for key, convert in _VALUE_ATTRS.items():
        if key in node.attrs:
            value = node.attrs[key]
            if key == "value" and not ir.is_constant(value):
                return None
            return np.asarray(convert(value))
    return None


@register_pass("constants-to-initializers")
class ConstantsToInitializers(Pass[EmptyConfig]):
    """Turn Constant nodes into initializers so weights held in them are seen as weights."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        converted = 0
        for graph in ir.iter_graphs(model.graph):
            doomed = []
            for node in graph.nodes:
                if node.op != "Constant" or (node.domain or "") not in ("", "ai.onnx") or len(node.outputs) != 1:
                    continue
                out = node.outputs[0]
                if ir.is_graph_output(graph, out):
                    continue  # a graph output must stay a computed value
                value = constant_node_value(node)
                if value is None:
                    continue
                ir.freeze(out, value)
                doomed.append(node)
            converted += ir.remove_nodes(graph, doomed)
        return PassResult(model, converted > 0, {"converted": converted})
