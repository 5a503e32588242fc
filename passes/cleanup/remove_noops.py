"""``remove-noops``: drop nodes that pass their input through unchanged.

Each rule names the input a node passes through (``y = x``); its readers then read ``x``:

- ``Identity``: ``y = x``.
- ``Dropout`` in inference mode with its mask unused: ``y = x``.
- ``Cast`` to the dtype ``x`` already has.
- ``Reshape`` to the static shape ``x`` already has.
- ``Transpose`` with the identity permutation.
- ``Squeeze``/``Unsqueeze`` with an empty axes list (rare, but exporters emit it).

A node whose output is a graph output stays when its input is a graph input, a constant or another
graph output (the output must keep its name, so an Identity would be needed anyway); that refusal
is recorded.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from onnxq import ir
from onnxq.ir import Node, Tensor
from onnxq.pass_base import EmptyConfig, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

__all__ = ["RemoveNoops"]


def _removable(rw: Rewriter, node: Node, replacement: Tensor) -> bool:
    """Removing ``node`` must not leave its graph output copied from something non-local.

    A graph output fed by an input, a constant, another output, or (in a subgraph) a value of an
    enclosing scope keeps its copy: ``replace_all_uses`` would put an Identity right back, so the
    pass would report a change on every run.
    """
    out = node.outputs[0]
    if not ir.is_graph_output(rw.graph, out):
        return True
    local = bool(replacement.inputs) and id(replacement.inputs[0]) in rw.local
    return ir.is_variable(replacement) and local and not ir.is_graph_output(rw.graph, replacement)


class _PassThrough(Rule):
    """A node whose output equals one of its inputs: subclasses say which (or None)."""

    @abstractmethod
    def passes(self, node: Node) -> Tensor | None:
        """The input ``node`` outputs unchanged, or None when it changes something."""

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        if not node.inputs or not node.outputs:
            return None
        x = self.passes(node)
        if x is None:
            return None
        if not _removable(rw, node, x):
            return "graph output copied from a graph input, constant, other output or outer-scope value (the node keeps the output's name)"
        return Match([node], {"x": x}, label=node.op)

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        rw.replace_uses(match.anchor.outputs[0], match.values["x"])
        rw.remove(match.anchor)


class _Identity(_PassThrough):
    ops = ("Identity",)

    def passes(self, node: Node) -> Tensor | None:
        return node.inputs[0]


class _Dropout(_PassThrough):
    ops = ("Dropout",)

    def passes(self, node: Node) -> Tensor | None:
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            return None  # the mask is used
        if len(node.inputs) >= 3 and node.inputs[2].name:
            training = ir.constant_array(node.inputs[2])
            if training is None or bool(training):
                return None
        return node.inputs[0]


class _Cast(_PassThrough):
    ops = ("Cast",)

    def passes(self, node: Node) -> Tensor | None:
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


class _Reshape(_PassThrough):
    ops = ("Reshape",)

    def passes(self, node: Node) -> Tensor | None:
        x, target = node.inputs[0], ir.constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
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


class _Transpose(_PassThrough):
    ops = ("Transpose",)

    def passes(self, node: Node) -> Tensor | None:
        perm = node.attrs.get("perm")
        if perm is None:
            return None  # the default perm reverses the axes
        return node.inputs[0] if list(perm) == list(range(len(perm))) else None


class _EmptySqueeze(_PassThrough):
    ops = ("Squeeze", "Unsqueeze")

    def passes(self, node: Node) -> Tensor | None:
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1:
            arr = ir.constant_array(node.inputs[1])
            axes = None if arr is None else arr.tolist()
        return node.inputs[0] if axes is not None and len(axes) == 0 else None


@register_pass("remove-noops")
class RemoveNoops(RewritePass[EmptyConfig]):
    """Remove Identity, inference Dropout, and Cast/Reshape/Transpose nodes that change nothing."""

    counter = "removed"

    def rules(self) -> Sequence[Rule]:
        return [_Identity(), _Dropout(), _Cast(), _Reshape(), _Transpose(), _EmptySqueeze()]
