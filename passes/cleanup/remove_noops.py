"""``remove-noops``: drop nodes that pass their input through unchanged.

Rules (a registry keyed by op type; each returns the tensor that replaces the node's output, or
None when the node must stay):

- ``Identity``: ``y = x``.
- ``Dropout`` in inference mode with its mask unused: ``y = x``.
- ``Cast`` to the dtype ``x`` already has.
- ``Reshape`` to the static shape ``x`` already has.
- ``Transpose`` with the identity permutation.
- ``Squeeze``/``Unsqueeze`` with an empty axes list (rare, but exporters emit it).

A node whose input is a graph input (or constant) and whose output is a graph output stays: the
output must keep its name and an Identity would be needed anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass

NoopRule = Callable[[Node], "Tensor | None"]
NOOP_RULES: dict[str, NoopRule] = {}


def noop_rule(*ops: str) -> Callable[[NoopRule], NoopRule]:
    """Register a rule for ``ops``."""

    def deco(fn: NoopRule) -> NoopRule:
        for op in ops:
            NOOP_RULES[op] = fn
        return fn

    return deco


@noop_rule("Identity")
def _identity(node: Node) -> Tensor | None:
    return node.inputs[0]


@noop_rule("Dropout")
def _dropout(node: Node) -> Tensor | None:
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        return None  # the mask is used
    if len(node.inputs) >= 3 and node.inputs[2].name:
        training = ir.constant_array(node.inputs[2])
        if training is None or bool(training):
            return None
    return node.inputs[0]


@noop_rule("Cast")
def _cast(node: Node) -> Tensor | None:
    x = node.inputs[0]
    if x.dtype is None:
        return None
    try:
        same = ir.onnx_dtype(x.dtype) == int(node.attrs.get("to", -1))
    except Exception:
        return None
    return x if same else None


def _static(shape: object) -> bool:
    return isinstance(shape, (list, tuple)) and all(isinstance(d, int) and d >= 0 for d in shape)


@noop_rule("Reshape")
def _reshape(node: Node) -> Tensor | None:
    x, target = node.inputs[0], ir.constant_array(node.inputs[1])
    if target is None or not _static(x.shape):
        return None
    allowzero = node.attrs.get("allowzero", 0)
    dims = [int(d) for d in target.reshape(-1)]
    resolved = [x.shape[i] if d == 0 and not allowzero and i < len(x.shape) else d for i, d in enumerate(dims)]
    if -1 in resolved:
        known = int(np.prod([d for d in resolved if d != -1]))
        total = int(np.prod(x.shape))
        if known == 0 or total % known:
            return None
        resolved = [total // known if d == -1 else d for d in resolved]
    return x if list(resolved) == list(x.shape) else None


@noop_rule("Transpose")
def _transpose(node: Node) -> Tensor | None:
    perm = node.attrs.get("perm")
    if perm is None:
        return None  # default perm reverses the axes
    return node.inputs[0] if list(perm) == list(range(len(perm))) else None


@noop_rule("Squeeze", "Unsqueeze")
def _squeeze(node: Node) -> Tensor | None:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        arr = ir.constant_array(node.inputs[1])
        axes = None if arr is None else arr.tolist()
    if axes is not None and len(axes) == 0:
        return node.inputs[0]
    return None


def _removable(graph: Graph, node: Node, replacement: Tensor) -> bool:
    out = node.outputs[0]
    if not ir.is_graph_output(graph, out):
        return True
    return ir.is_variable(replacement) and bool(replacement.inputs) and not ir.is_graph_output(graph, replacement)


@register_pass("remove-noops")
class RemoveNoops(Pass[EmptyConfig]):
    """Remove Identity, inference Dropout, and Cast/Reshape/Transpose nodes that change nothing."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        removed: dict[str, int] = {}
        for graph in ir.iter_graphs(model.graph):
            doomed = []
            for node in graph.nodes:
                rule = NOOP_RULES.get(node.op)
                if rule is None or (node.domain or "") not in ("", "ai.onnx") or not node.inputs or not node.outputs:
                    continue
                replacement = rule(node)
                if replacement is None or not _removable(graph, node, replacement):
                    continue
                ir.replace_all_uses(graph, node.outputs[0], replacement)
                doomed.append(node)
                removed[node.op] = removed.get(node.op, 0) + 1
            ir.remove_nodes(graph, doomed)
        return PassResult(model, bool(removed), {"removed": sum(removed.values()), **{f"removed.{k}": v for k, v in sorted(removed.items())}})
