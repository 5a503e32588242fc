"""Graph analyses that decide which nodes stay float before any Q/DQ is placed.

- :func:`normalization_chains`: decomposed LayerNorm / RMSNorm (ReduceMean, Sub, Pow, ReduceMean,
  Add eps, Sqrt, Div[, Mul gamma, Add beta]). Quantizing the statistics destroys accuracy.
- :func:`saturating_tensors`: tensors whose calibrated range is huge or non-finite (attention masks
  of -3.4e38, padding sentinels). A uint8 scale spanning 1e38 maps every real value to one level.
- :func:`disparate_concats`: Concat/shared-scale groups whose inputs have very different ranges
  (box coordinates 0..320 next to probabilities 0..1): one shared scale would crush the small branch.
- :func:`connected_glue`: glue ops (Add, pooling, reshapes, activations) are worth quantizing only
  on a path between int8 compute ops; elsewhere they would only add conversions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from onnxq import ir
from onnxq.calibration.ranges import TensorRange
from onnxq.ir import Graph, Node, Tensor

__all__ = ["normalization_chains", "saturating_tensors", "disparate_concats", "connected_glue", "HUGE_RANGE"]

#: |x| above this marks a tensor as saturating (no 8/16-bit grid can hold it usefully).
HUGE_RANGE = 1e6


def _consumers(t: Tensor, op: str | None = None) -> list[Node]:
    return [n for n in t.outputs if op is None or n.op == op]


def _is_const(t: Tensor) -> bool:
    return ir.is_constant(t)


def _other(node: Node, t: Tensor) -> Tensor | None:
    others = [x for x in node.inputs if x is not t]
    return others[0] if len(others) == 1 else None


def _squares(node: Node, x: Tensor) -> bool:
    if node.op == "Pow":
        e = ir.constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        return e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0
    return node.op == "Mul" and node.inputs[0] is x and node.inputs[1] is x


def _variance_to_div(var_mean: Node, centered: Tensor) -> list[Node] | None:
    """From ReduceMean(centered²): Add eps → Sqrt → Div(centered, ·) (or Reciprocal → Mul)."""
    chain: list[Node] = []
    t = var_mean.outputs[0]
    add = next((n for n in _consumers(t, "Add") if _other(n, t) is not None and _is_const(_other(n, t))), None)
    if add is None:
        return None
    chain.append(add)
    sqrt = next(iter(_consumers(add.outputs[0], "Sqrt")), None)
    if sqrt is None:
        return None
    chain.append(sqrt)
    s = sqrt.outputs[0]
    div = next((n for n in _consumers(s, "Div") if n.inputs[0] is centered), None)
    if div is not None:
        return chain + [div]
    recip = next(iter(_consumers(s, "Reciprocal")), None)
    if recip is not None:
        mul = next((n for n in _consumers(recip.outputs[0], "Mul") if centered in n.inputs), None)
        if mul is not None:
            return chain + [recip, mul]
    return None


def _affine_tail(t: Tensor) -> list[Node]:
    """Optional ``Mul(gamma)`` then ``Add(beta)`` with constant operands after the normalization."""
    tail: list[Node] = []
    for op in ("Mul", "Add"):
        users = t.outputs
        if len(users) != 1 or users[0].op != op:
            break
        other = _other(users[0], t)
        if other is None or not _is_const(other):
            break
        tail.append(users[0])
        t = users[0].outputs[0]
    return tail


def normalization_chains(graph: Graph) -> dict[int, str]:
    """Nodes of decomposed LayerNorm/RMSNorm chains: ``id(node) → reason``."""
    found: dict[int, str] = {}
    for g in ir.iter_graphs(graph):
        for mean in g.nodes:
            if mean.op != "ReduceMean" or not mean.inputs:
                continue
            x = mean.inputs[0]
            # LayerNorm: Sub(x, mean(x)) → square → ReduceMean → ... → Div
            for sub in _consumers(mean.outputs[0], "Sub"):
                if sub.inputs[0] is not x:
                    continue
                centered = sub.outputs[0]
                for sq in centered.outputs:
                    if not _squares(sq, centered):
                        continue
                    var = next(iter(_consumers(sq.outputs[0], "ReduceMean")), None)
                    chain = _variance_to_div(var, centered) if var is not None else None
                    if chain:
                        nodes = [mean, sub, sq, var, *chain, *_affine_tail(chain[-1].outputs[0])]
                        found.update({id(n): "decomposed LayerNorm (statistics must stay float)" for n in nodes})
            # RMSNorm: ReduceMean(x²) → Add eps → Sqrt → Div(x, ·)
            producer = ir.producer(x)
            if producer is not None and producer.inputs and _squares(producer, producer.inputs[0]):
                chain = _variance_to_div(mean, producer.inputs[0])
                if chain:
                    nodes = [producer, mean, *chain, *_affine_tail(chain[-1].outputs[0])]
                    for n in nodes:  # a LayerNorm's variance branch also looks like RMSNorm: keep its label
                        found.setdefault(id(n), "decomposed RMSNorm (statistics must stay float)")
    return found


def saturating_tensors(ranges: Mapping[str, TensorRange]) -> dict[str, str]:
    """Tensors whose range no integer grid can represent usefully: name → reason."""
    bad: dict[str, str] = {}
    for name, r in ranges.items():
        if r.nonfinite:
            bad[name] = f"tensor '{name}' holds {r.nonfinite} non-finite value(s)"
        elif r.extreme:
            bad[name] = f"tensor '{name}' holds {r.extreme} value(s) with |x| >= 1e30 (e.g. an attention mask)"
        elif max(abs(r.min), abs(r.max)) > HUGE_RANGE:
            bad[name] = f"tensor '{name}' has a huge range [{r.min:.3g}, {r.max:.3g}]"
    return bad


def span(r: TensorRange) -> float:
    """Width of the quantization range (which always contains 0)."""
    return max(r.max, 0.0) - min(r.min, 0.0)


def disparate_concats(graph: Graph, ranges: Mapping[str, TensorRange], ratio: float) -> dict[int, str]:
    """Concat nodes whose input ranges differ by more than ``ratio``: ``id(node) → reason``."""
    found: dict[int, str] = {}
    for node in ir.iter_nodes(graph):
        if node.op != "Concat":
            continue
        spans = [(t.name, span(ranges[t.name])) for t in node.inputs if t.name in ranges]
        if len(spans) < 2:
            continue
        (small, lo), (large, hi) = min(spans, key=lambda s: s[1]), max(spans, key=lambda s: s[1])
        if hi > 0 and (lo == 0 or hi / lo > ratio):
            found[id(node)] = (
                f"inputs have disparate ranges ('{small}' spans {lo:.3g}, '{large}' spans {hi:.3g}); "
                "one shared scale would crush the small one"
            )
    return found


def connected_glue(
    nodes: Iterable[Node], anchors: set[int], glue: set[int]
) -> set[int]:
    """Glue nodes lying on a path anchor → glue* → anchor (ids).

    A glue node is kept when it is reachable downstream from a kept anchor through glue nodes AND
    reaches a kept anchor downstream through glue nodes: int8 then flows through it without extra
    conversions. Glue with only one quantized side would add a requantization for nothing.
    """
    nodes = list(nodes)
    by_id = {id(n): n for n in nodes}
    kept = anchors | glue

    def succ(n: Node) -> list[Node]:
        return [c for t in n.outputs for c in t.outputs if id(c) in by_id]

    def pred(n: Node) -> list[Node]:
        return [t.inputs[0] for t in n.inputs if t.inputs and id(t.inputs[0]) in by_id]

    def reach(starts: set[int], step) -> set[int]:
        seen: set[int] = set()
        work = [by_id[i] for i in starts]
        while work:
            n = work.pop()
            for m in step(n):
                if id(m) in glue and id(m) not in seen:
                    seen.add(id(m))
                    work.append(m)
        return seen

    down = reach(anchors, succ)
    up = reach(anchors, pred)
    del kept
    return down & up
