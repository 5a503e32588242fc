"""``fuse-activations``: recognize decomposed activations and replace them by the ONNX op.

Exporters (Paddle2ONNX among them) write HardSwish as element-wise arithmetic:

- ``HardSwish(x) = x · Clip(x + 3, 0, 6) / 6``  (also ``· (1/6)``), and ``x · HardSigmoid(x)``
  with ``alpha = 1/6, beta = 0.5``;
- ``HardSigmoid(x) = Clip(x + 3, 0, 6) / 6``.

One op instead of four is faster in float, and for quantization it is one boundary instead of a
chain of requantized intermediates. HardSwish needs opset 14 (HardSigmoid 6); on older models the
pattern is left alone (and the reason recorded).

Three rules, each a chain ending in the node whose output the fused op takes over:
``Add → Clip → Mul → Div`` (HardSwish), ``Add → Clip → Div`` (HardSigmoid), and
``HardSigmoid → Mul`` (HardSwish).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Node, Tensor
from onnxq.pass_base import EmptyConfig, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

__all__ = ["FuseActivations"]

_HARDSWISH_OPSET = 14


def _scalar(t: Tensor) -> float | None:
    v = ir.constant_array(t)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def _other(node: Node, t: Tensor) -> Tensor | None:
    rest = [x for x in node.inputs if x is not t]
    return rest[0] if len(rest) == 1 else None


def _clip_bounds(clip: Node) -> tuple[float | None, float | None]:
    if "min" in clip.attrs or "max" in clip.attrs:
        return clip.attrs.get("min"), clip.attrs.get("max")
    lo = _scalar(clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1].name else None
    hi = _scalar(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2].name else None
    return lo, hi


def _divides_by_six(node: Node, t: Tensor) -> bool:
    if node.op == "Div":
        c = _scalar(node.inputs[1]) if node.inputs[0] is t and len(node.inputs) == 2 else None
        return c is not None and bool(np.isclose(c, 6.0))
    if node.op == "Mul":
        other = _other(node, t)
        c = _scalar(other) if other is not None else None
        return c is not None and bool(np.isclose(c, 1 / 6, rtol=1e-5))
    return False


def _hardsigmoid_chain(graph: Graph, add: Node) -> tuple[Tensor, Node] | None:
    """``Add(x, 3) → Clip(0, 6)``: returns (x, the Clip)."""
    if len(add.inputs) != 2:
        return None
    for x in add.inputs:
        three = _other(add, x)
        value = _scalar(three) if three is not None else None
        if value is None or ir.is_constant(x) or not np.isclose(value, 3.0):
            continue
        clip = ir.only_consumer(graph, add.outputs[0])
        if clip is None or clip.op != "Clip":
            continue
        lo, hi = _clip_bounds(clip)
        if lo is None or hi is None or not (np.isclose(lo, 0.0) and np.isclose(hi, 6.0)):
            continue
        return x, clip
    return None


class _Fuse(Rule):
    """A chain computing ``op(x)``: the rewrite is one ``op`` node taking over the last node's output."""

    fused: ClassVar[str] = ""
    attrs: ClassVar[dict[str, float]] = {}

    def found(self, rw: Rewriter, anchor: Node, x: Tensor, chain: list[Node]) -> Match | str:
        """The match for ``chain`` (in data-flow order: its last node's output is the result), or why
        its op cannot be used here."""
        if self.fused == "HardSwish" and rw.opset < _HARDSWISH_OPSET:
            return f"HardSwish needs opset {_HARDSWISH_OPSET} (the model has {rw.opset})"
        return Match([anchor, *(n for n in chain if n is not anchor)], {"x": x, "chain": chain}, label=self.fused)

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        op, chain = self.fused, match.values["chain"]
        new = rw.add(ir.make_node(op, [match.values["x"]], [], name=rw.name(f"{chain[0].name or op}/{op.lower()}"), attrs=dict(self.attrs)))
        rw.take_output(chain[-1], new)
        rw.remove(*chain)


class _FromClip(_Fuse):
    """A chain starting ``Add(x, 3) → Clip(0, 6) → user``; subclasses say how it continues from ``user``."""

    ops = ("Add",)

    @abstractmethod
    def rest(self, rw: Rewriter, x: Tensor, clip: Node, user: Node) -> list[Node] | None:
        """The chain's nodes from ``user`` on (the Clip's only reader), or None when it is not this op."""

    def match(self, rw: Rewriter, add: Node) -> Match | str | None:
        found = _hardsigmoid_chain(rw.graph, add)
        if found is None:
            return None
        x, clip = found
        user = ir.only_consumer(rw.graph, clip.outputs[0])
        rest = self.rest(rw, x, clip, user) if user is not None else None
        return None if rest is None else self.found(rw, add, x, [add, clip, *rest])


class _HardSwishFromClip(_FromClip):
    """``x · Clip(x + 3, 0, 6) / 6`` → ``HardSwish(x)``."""

    name = fused = "HardSwish"

    def rest(self, rw: Rewriter, x: Tensor, clip: Node, user: Node) -> list[Node] | None:
        if user.op != "Mul" or x not in user.inputs:
            return None
        div = ir.only_consumer(rw.graph, user.outputs[0])
        return [user, div] if div is not None and _divides_by_six(div, user.outputs[0]) else None


class _HardSigmoidFromClip(_FromClip):
    """``Clip(x + 3, 0, 6) / 6`` → ``HardSigmoid(x)`` with ``alpha = 1/6, beta = 0.5``."""

    name = fused = "HardSigmoid"
    attrs = {"alpha": 1 / 6, "beta": 0.5}

    def rest(self, rw: Rewriter, x: Tensor, clip: Node, user: Node) -> list[Node] | None:
        return [user] if _divides_by_six(user, clip.outputs[0]) else None


class _HardSwishFromHardSigmoid(_Fuse):
    """``x · HardSigmoid(x)`` with ``alpha = 1/6, beta = 0.5`` → ``HardSwish(x)``."""

    name = fused = "HardSwish"
    ops = ("Mul",)

    def match(self, rw: Rewriter, mul: Node) -> Match | str | None:
        if len(mul.inputs) != 2:
            return None
        for hs_out, x in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
            hs = ir.producer(hs_out)
            if hs is None or hs.op != "HardSigmoid" or hs.inputs[0] is not x or ir.only_consumer(rw.graph, hs_out) is not mul:
                continue
            if np.isclose(hs.attrs.get("alpha", 0.2), 1 / 6, rtol=1e-4) and np.isclose(hs.attrs.get("beta", 0.5), 0.5):
                return self.found(rw, mul, x, [hs, mul])
        return None


@register_pass("fuse-activations")
class FuseActivations(RewritePass[EmptyConfig]):
    """Replace decomposed HardSwish / HardSigmoid arithmetic by the ONNX ops."""

    counter = "fused"

    def rules(self) -> Sequence[Rule]:
        return [_HardSwishFromClip(), _HardSigmoidFromClip(), _HardSwishFromHardSigmoid()]
