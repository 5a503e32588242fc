"""``fuse-activations``: recognize decomposed activations and replace them by the ONNX op.

Exporters (Paddle2ONNX among them) write HardSwish as element-wise arithmetic:

- ``HardSwish(x) = x · Clip(x + 3, 0, 6) / 6``  (also ``· (1/6)``), and ``x · HardSigmoid(x)``
  with ``alpha = 1/6, beta = 0.5``;
- ``HardSigmoid(x) = Clip(x + 3, 0, 6) / 6``.

One op instead of four is faster in float, and for quantization it is one boundary instead of a
chain of requantized intermediates. HardSwish needs opset 14 (HardSigmoid 6); on older models the
pattern is left alone.
"""

from __future__ import annotations

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass


def _scalar(t: Tensor) -> float | None:
    v = ir.constant_array(t)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def _other(node: Node, t: Tensor) -> Tensor | None:
    rest = [x for x in node.inputs if x is not t]
    return rest[0] if len(rest) == 1 else None


def _only_user(graph: Graph, t: Tensor, op: str) -> Node | None:
    user = ir.only_consumer(graph, t)
    return user if user is not None and user.op == op else None


def _clip_bounds(clip: Node) -> tuple[float | None, float | None]:
    if "min" in clip.attrs or "max" in clip.attrs:
        return clip.attrs.get("min"), clip.attrs.get("max")
    lo = _scalar(clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1].name else None
    hi = _scalar(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2].name else None
    return lo, hi


def _divides_by_six(node: Node, t: Tensor) -> bool:
    c = _scalar(node.inputs[1]) if node.inputs[0] is t and len(node.inputs) == 2 else None
    if node.op == "Div":
        return c is not None and bool(np.isclose(c, 6.0))
    if node.op == "Mul":
        other = _other(node, t)
        c = _scalar(other) if other is not None else None
        return c is not None and bool(np.isclose(c, 1 / 6, rtol=1e-5))
    return False


def _match_hardsigmoid_chain(graph: Graph, add: Node) -> tuple[Tensor, Node, list[Node]] | None:
    """``Add(x, 3) → Clip(0, 6)``: returns (x, clip node, nodes)."""
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    for x in add.inputs:
        three = _other(add, x)
        if three is None or ir.is_constant(x) or _scalar(three) is None or not np.isclose(_scalar(three), 3.0):  # type: ignore[arg-type]
            continue
        clip = _only_user(graph, add.outputs[0], "Clip")
        if clip is None:
            continue
        lo, hi = _clip_bounds(clip)
        if lo is None or hi is None or not (np.isclose(lo, 0.0) and np.isclose(hi, 6.0)):
            continue
        return x, clip, [add, clip]
    return None


def _rewrite(graph: Graph, nodes: list[Node], op: str, x: Tensor, out: Tensor, namer: ir.NameGenerator, attrs: dict | None = None) -> Node:
    new = ir.make_node(op, [x], [], name=namer.new(f"{nodes[0].name or op}/{op.lower()}"), attrs=attrs or {})
    producer = ir.producer(out)
    assert producer is not None
    producer.outputs.clear()
    new.outputs.append(out)
    graph.nodes.append(new)
    return new


@register_pass("fuse-activations")
class FuseActivations(Pass[EmptyConfig]):
    """Replace decomposed HardSwish / HardSigmoid arithmetic by the ONNX ops."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        namer = ir.names(model)
        counts = {"HardSwish": 0, "HardSigmoid": 0}
        for graph in ir.iter_graphs(model.graph):
            doomed: list[Node] = []
            taken: set[int] = set()
            for node in list(graph.nodes):
                if id(node) in taken:
                    continue
                fused = self._hardswish_from_hardsigmoid(graph, node, model.opset)
                if fused is None:
                    fused = self._from_clip_chain(graph, node, model.opset)
                if fused is None:
                    continue
                op, x, chain, out, attrs = fused
                if any(id(n) in taken for n in chain):
                    continue
                taken.update(id(n) for n in chain)
                _rewrite(graph, chain, op, x, out, namer, attrs)
                doomed.extend(chain)
                counts[op] += 1
            ir.remove_nodes(graph, doomed)
        total = sum(counts.values())
        return PassResult(model, total > 0, {"fused": total, **{f"fused.{k}": v for k, v in counts.items() if v}})

    @staticmethod
    def _from_clip_chain(graph: Graph, add: Node, opset: int) -> tuple[str, Tensor, list[Node], Tensor, dict] | None:
        match = _match_hardsigmoid_chain(graph, add)
        if match is None:
            return None
        x, clip, chain = match
        c = clip.outputs[0]
        user = ir.only_consumer(graph, c)
        if user is None:
            return None
        # HardSwish: Mul(x, clip) then /6
        if user.op == "Mul" and x in user.inputs and opset >= 14:
            div = ir.only_consumer(graph, user.outputs[0])
            if div is not None and _divides_by_six(div, user.outputs[0]):
                return "HardSwish", x, [*chain, user, div], div.outputs[0], {}
        # HardSigmoid: clip / 6
        if _divides_by_six(user, c):
            return "HardSigmoid", x, [*chain, user], user.outputs[0], {"alpha": 1 / 6, "beta": 0.5}
        return None

    @staticmethod
    def _hardswish_from_hardsigmoid(graph: Graph, mul: Node, opset: int) -> tuple[str, Tensor, list[Node], Tensor, dict] | None:
        if mul.op != "Mul" or opset < 14 or len(mul.inputs) != 2:
            return None
        out = mul.outputs[0]
        for hs_out, x in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
            hs = ir.producer(hs_out)
            if hs is None or hs.op != "HardSigmoid" or hs.inputs[0] is not x or ir.only_consumer(graph, hs_out) is not mul:
                continue
            if np.isclose(hs.attrs.get("alpha", 0.2), 1 / 6, rtol=1e-4) and np.isclose(hs.attrs.get("beta", 0.5), 0.5):
                return "HardSwish", x, [hs, mul], out, {}
        return None
