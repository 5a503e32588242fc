"""Channel dependency analysis for structured pruning (used by ``prune-channels``).

A forward walk in topological order gives every tensor that carries prunable channels a *layout*:
its channel axis (counted from the end, so broadcasting lines up) and a list of *segments*, each a
whole channel *group* or a run of fixed channels (``None``: a graph input, an unsupported producer).

- A **producer** (Conv / ConvTranspose with group=1, Gemm, MatMul with a 2-D constant weight) starts
  a new group of its output channels (weight axis 0 — axis 1 for ConvTranspose, the N axis for
  Gemm/MatMul — and its bias).
- **Pass-through** ops keep the layout: unary activations, BatchNormalization / InstanceNormalization
  (parameters sliced), pooling, Resize (constant ``sizes`` rewritten), Pad (no channel padding),
  Flatten when the channel becomes the only non-unit feature axis, Softmax / LayerNormalization /
  Reduce* not acting on the channel axis, and a depthwise Conv (its filters and bias are sliced and
  ``group`` rewritten: its output channels *are* its input channels, so it joins the group).
- **Element-wise** ops (Add, Sub, Mul, Div, Pow, Max, Min, Sum, Mean, PRelu) *couple* their operands'
  groups (residual Add, SE ``x * sigmoid(s)``, SiLU ``x * sigmoid(x)``): union-find merges them into
  one group pruned together. A per-channel constant operand (``[1, C, 1, 1]``, a bias ``[C]``) is
  sliced; a broadcast operand (size 1 on the channel axis) is left.
- **Concat** along the channel axis concatenates the segments (offsets are kept by the segment order);
  along another axis it couples its inputs like an element-wise op.
- **Consumers** (Conv / ConvTranspose / Gemm / MatMul reading the tensor as data) slice their weight's
  input-channel axis with the layout (so a consumer of a Concat drops each segment's pruned channels
  at that segment's offset).

Anything else reading a channel tensor (Reshape, Transpose, a graph output, a Softmax over channels,
a grouped Conv, a subgraph, a coupling with fixed channels, ...) *blocks* the groups it sees, with the
reason; blocked groups are never pruned, so the rewrite never has to touch such nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor

__all__ = ["Segment", "Layout", "Edit", "ChannelGraph", "analyze"]

#: Element-wise ops with one data input whose channels pass through unchanged.
UNARY_OPS = frozenset(
    {
        "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Gelu",
        "Mish", "Softplus", "Softsign", "ThresholdedRelu", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt",
        "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Dropout", "Cast", "Clip",
        "Shrink", "Swish",
    }
)  # fmt: skip
#: Element-wise ops with several data inputs (numpy broadcasting).
NARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"})
REDUCE_OPS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceProd", "ReduceSumSquare"})


@dataclass(frozen=True)
class Segment:
    """A run of channels: one whole group, or ``length`` fixed channels when ``group`` is None."""

    group: int | None
    length: int


@dataclass(frozen=True)
class Layout:
    """Channel layout of a tensor: the channel axis (negative, from the end), rank if known, segments."""

    segments: tuple[Segment, ...]
    axis: int
    rank: int | None

    @property
    def size(self) -> int:
        return sum(s.length for s in self.segments)

    def position(self) -> int | None:
        """The channel axis counted from the start (None when the rank is unknown)."""
        return None if self.rank is None else self.rank + self.axis

    def with_rank(self, rank: int | None) -> Layout:
        return Layout(self.segments, self.axis, rank if rank is not None else self.rank)


@dataclass
class Edit:
    """A constant (or attribute) to rewrite once the kept channels are known.

    ``kind``: ``"slice"`` (take the layout's kept channels along ``axis`` of input ``index``),
    ``"sizes"`` (set entry ``axis`` of Resize's constant ``sizes`` to the new channel count) or
    ``"group"`` (a depthwise Conv's ``group`` attribute).
    """

    node: Node
    index: int
    axis: int
    layout: Layout
    kind: str = "slice"
    role: str = "param"  # "producer" (output channels), "consumer" (input channels), "param"


@dataclass
class ChannelGraph:
    """The result of :func:`analyze`: groups, their union-find, blocks and the edits to apply."""

    sizes: dict[int, int] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    producers: dict[int, list[Node]] = field(default_factory=dict)
    blocked: dict[int, list[str]] = field(default_factory=dict)
    edits: list[Edit] = field(default_factory=list)
    layouts: dict[int, tuple[Tensor, Layout]] = field(default_factory=dict)
    consumer_inputs: list[tuple[Tensor, Layout]] = field(default_factory=list)

    # -- union-find ---------------------------------------------------------------------------
    def new_group(self, size: int, producer: Node) -> int:
        gid = len(self.sizes)
        self.sizes[gid] = size
        self.parent[gid] = gid
        self.producers[gid] = [producer]
        self.blocked[gid] = []
        if size < 2:
            self.blocked[gid].append("a single channel cannot be pruned")
        return gid

    def find(self, gid: int) -> int:
        root = gid
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[gid] != root:
            self.parent[gid], gid = root, self.parent[gid]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        self.parent[gone] = keep
        self.producers[keep].extend(self.producers.pop(gone))
        self.blocked[keep].extend(self.blocked.pop(gone))

    def block(self, layout: Layout | None, reason: str) -> None:
        if layout is None:
            return
        for seg in layout.segments:
            if seg.group is not None:
                reasons = self.blocked[self.find(seg.group)]
                if reason not in reasons:
                    reasons.append(reason)

    def roots(self) -> list[int]:
        """Root group ids, in creation (topological) order."""
        return sorted({self.find(g) for g in self.sizes})

    def members(self, root: int) -> list[int]:
        return [g for g in self.sizes if self.find(g) == root]

    def reasons(self, root: int) -> list[str]:
        return self.blocked[self.find(root)]


# --------------------------------------------------------------------------------------------------
# helpers


def _label(node: Node) -> str:
    return f"{node.op} '{node.name}'" if node.name else node.op


def _shape(t: Tensor) -> list | None:
    if ir.is_constant(t):
        return list(ir.const_value(t).shape)
    return list(t.shape) if isinstance(t.shape, (list, tuple)) else None


def _rank(t: Tensor, layout: Layout | None) -> int | None:
    if layout is not None and layout.rank is not None:
        return layout.rank
    shape = _shape(t)
    return None if shape is None else len(shape)


def _data_layout(w: _Walker, node: Node) -> tuple[Layout | None, int | None]:
    """The channel layout of a node's data input (input 0) and its rank, where known."""
    lay = w.layout(node.inputs[0])
    return lay, _rank(node.inputs[0], lay)


def _float_const(t: Tensor | None) -> np.ndarray | None:
    v = ir.constant_array(t)
    return v if v is not None and v.dtype.kind == "f" else None


def _optional(node: Node, index: int) -> Tensor | None:
    return node.inputs[index] if len(node.inputs) > index and node.inputs[index].name else None


def _extra_outputs_used(graph: Graph, node: Node) -> bool:
    return any(t.outputs or ir.is_graph_output(graph, t) for t in node.outputs[1:])


class _Walker:
    """Applies the per-op rules to one graph, filling a :class:`ChannelGraph`."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.graph = model.graph
        self.cg = ChannelGraph()

    def layout(self, t: Tensor) -> Layout | None:
        entry = self.cg.layouts.get(id(t))
        return entry[1] if entry else None

    def set_layout(self, t: Tensor, layout: Layout | None) -> None:
        if layout is not None:
            self.cg.layouts[id(t)] = (t, layout)

    def block_inputs(self, node: Node, reason: str) -> None:
        for t in node.inputs:
            self.cg.block(self.layout(t), reason)

    def unknown(self, node: Node) -> None:
        self.block_inputs(node, f"read by {_label(node)}, which cannot be rewritten")

    # -- walk -------------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        rules = _RULES
        main = {id(n) for n in self.graph.nodes}
        for node in self.graph.nodes:
            has_layout = any(self.layout(t) is not None for t in node.inputs)
            rule = rules.get(node.op) if not (node.domain or "") else None
            if rule is None:
                if has_layout:
                    self.unknown(node)
                continue
            if not has_layout and node.op not in _SOURCES:
                continue
            rule(self, node)
        for t in self.graph.outputs:
            self.cg.block(self.layout(t), f"tensor '{t.name}' is a graph output (its shape must not change)")
        for t, layout in list(self.cg.layouts.values()):
            if any(id(c) not in main for c in ir.consumers(t)):
                self.cg.block(layout, f"tensor '{t.name}' is read inside a subgraph")
        return self.cg

    # -- producers and consumers ------------------------------------------------------------
    def consume(self, node: Node, x: Tensor, w_axis: int, expect_axis: int, in_channels: int) -> None:
        """``node`` reads ``x``'s channels (on axis ``expect_axis``, from the end) through weight axis ``w_axis``."""
        lay = self.layout(x)
        if lay is None:
            return
        if lay.size != in_channels or lay.axis != expect_axis:
            self.cg.block(lay, f"{_label(node)} reads the channels along an unexpected axis")
            return
        self.cg.edits.append(Edit(node, 1, w_axis, lay, role="consumer"))
        self.cg.consumer_inputs.append((x, lay))

    def produce(self, node: Node, w_axis: int, channels: int, axis: int, rank: int | None) -> Layout:
        gid = self.cg.new_group(channels, node)
        lay = Layout((Segment(gid, channels),), axis, rank)
        self.cg.edits.append(Edit(node, 1, w_axis, lay, role="producer"))
        self.set_layout(node.outputs[0], lay)
        return lay


def _conv(w: _Walker, node: Node) -> None:
    x = node.inputs[0]
    weight = _float_const(node.inputs[1])
    bias_t = _optional(node, 2)
    if weight is None or (bias_t is not None and _float_const(bias_t) is None):
        w.block_inputs(node, f"{_label(node)} has a weight or bias computed at run time")
        return
    group = int(ir.attr(node, "group", 1))
    lay = w.layout(x)
    rank = weight.ndim
    if node.op == "ConvTranspose":
        if group != 1:
            return w.block_inputs(node, f"grouped {_label(node)} (group={group}) couples channels")
        w.consume(node, x, 0, 1 - rank, weight.shape[0])
        out = w.produce(node, 1, weight.shape[1], 1 - rank, rank)
    elif group == 1:
        w.consume(node, x, 1, 1 - rank, weight.shape[1])
        out = w.produce(node, 0, weight.shape[0], 1 - rank, rank)
    elif weight.shape[1] == 1 and weight.shape[0] == group:
        # depthwise: output channel c is input channel c filtered; prune both together
        if lay is None:
            return
        if lay.size != group or (lay.position() is not None and lay.position() != 1):
            return w.cg.block(lay, f"depthwise {_label(node)} does not match its input's channels")
        out = lay.with_rank(rank)
        w.cg.edits.append(Edit(node, 1, 0, out))
        w.cg.edits.append(Edit(node, 0, 0, out, kind="group"))
        w.set_layout(node.outputs[0], out)
    else:
        return w.block_inputs(node, f"grouped {_label(node)} (group={group}) couples channels in groups")
    if bias_t is not None:
        w.cg.edits.append(Edit(node, 2, 0, out))


def _gemm(w: _Walker, node: Node) -> None:
    b = _float_const(node.inputs[1])
    if b is None or b.ndim != 2 or ir.is_constant(node.inputs[0]):
        return w.unknown(node)
    trans_b = int(ir.attr(node, "transB", 0))
    k, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if int(ir.attr(node, "transA", 0)):
        w.cg.block(w.layout(node.inputs[0]), f"{_label(node)} has transA=1")
    else:
        w.consume(node, node.inputs[0], 1 if trans_b else 0, -1, k)
    out = w.produce(node, 0 if trans_b else 1, n, -1, 2)
    c_t = _optional(node, 2)
    if c_t is None:
        return
    c = _float_const(c_t)
    if c is None:
        w.cg.block(w.layout(c_t), f"{_label(node)} reads channels as its bias")
        w.cg.block(out, f"{_label(node)} adds a bias computed at run time")
    elif c.ndim >= 1 and c.shape[-1] == n and n != 1:
        w.cg.edits.append(Edit(node, 2, c.ndim - 1, out))


def _matmul(w: _Walker, node: Node) -> None:
    a, b_t = node.inputs[0], node.inputs[1]
    b = _float_const(b_t)
    if b is None or b.ndim != 2 or ir.is_constant(a):
        reason = "MatMul between two run-time tensors" if not ir.is_constant(b_t) else "MatMul weight is not a 2-D float constant"
        return w.block_inputs(node, f"{_label(node)}: {reason}")
    w.consume(node, a, 0, -1, b.shape[0])
    w.produce(node, 1, b.shape[1], -1, _rank(a, w.layout(a)))


def _unary(w: _Walker, node: Node) -> None:
    x = node.inputs[0]
    lay = w.layout(x)
    if any(w.layout(t) is not None for t in node.inputs[1:]):
        return w.block_inputs(node, f"{_label(node)} reads channels as a parameter")
    if node.op == "Cast" and np.dtype(ir.np_dtype(int(ir.attr(node, "to", 1)))).kind != "f":
        return w.unknown(node)
    if _extra_outputs_used(w.graph, node):
        return w.block_inputs(node, f"{_label(node)}'s extra outputs are used")
    w.set_layout(node.outputs[0], lay)


def _channel_first(w: _Walker, node: Node) -> Layout | None:
    """The data input's layout when its channel axis is axis 1 (NCHW ops), else block and None."""
    x = node.inputs[0]
    lay = w.layout(x)
    if lay is None:
        return None
    rank = _rank(x, lay)
    if rank is None or rank + lay.axis != 1:
        w.cg.block(lay, f"{_label(node)} works on axis 1, which is not the channel axis here")
        return None
    if any(w.layout(t) is not None for t in node.inputs[1:]) or _extra_outputs_used(w.graph, node):
        w.block_inputs(node, f"{_label(node)} reads channels as a parameter or its extra outputs are used")
        return None
    return lay.with_rank(rank)


def _norm(w: _Walker, node: Node) -> None:
    lay = _channel_first(w, node)
    if lay is None:
        return
    count = 5 if node.op == "BatchNormalization" else 3
    params = [_float_const(t) for t in node.inputs[1:count]]
    if any(p is None or p.shape != (lay.size,) for p in params) or int(ir.attr(node, "training_mode", 0)):
        return w.cg.block(lay, f"{_label(node)} has non-constant or non-per-channel parameters")
    for i in range(1, count):
        w.cg.edits.append(Edit(node, i, 0, lay))
    w.set_layout(node.outputs[0], lay)


def _pool(w: _Walker, node: Node) -> None:
    lay = _channel_first(w, node)
    if lay is not None:
        w.set_layout(node.outputs[0], lay)


def _merge(w: _Walker, node: Node, broadcast: bool) -> Layout | None:
    """Couple the layouts of ``node``'s data inputs; return the output layout or None (blocked)."""
    lays = [(t, w.layout(t)) for t in node.inputs if t.name]
    with_layout = [lay for _, lay in lays if lay is not None]
    base = with_layout[0]
    ranks = [_rank(t, lay) for t, lay in lays]
    out_rank = max(ranks) if all(r is not None for r in ranks) else None  # type: ignore[type-var]

    def fail(reason: str) -> None:
        for lay in with_layout:
            w.cg.block(lay, reason)

    if base.size == 1:
        fail(f"{_label(node)} broadcasts a single channel")
        return None
    for other in with_layout[1:]:
        if other.axis != base.axis or [s.length for s in other.segments] != [s.length for s in base.segments]:
            fail(f"{_label(node)} combines tensors whose channel layouts differ")
            return None
        for sa, sb in zip(base.segments, other.segments):
            if sa.group is not None and sb.group is not None:
                w.cg.union(sa.group, sb.group)
            elif sa.group is not None or sb.group is not None:
                fail(f"{_label(node)} couples the channels with channels that cannot be pruned")
    for i, t in enumerate(node.inputs):
        if not t.name or w.layout(t) is not None:
            continue
        shape = _shape(t)
        pos = None if shape is None else len(shape) + base.axis
        if shape is None:
            fail(f"{_label(node)}: shape of '{t.name}' is unknown")
            return None
        dim = shape[pos] if pos is not None and pos >= 0 else 1
        if broadcast and dim == 1:
            continue
        if ir.is_constant(t) and dim == base.size and pos is not None:
            w.cg.edits.append(Edit(node, i, pos, base))  # a per-channel constant: slice it
            continue
        fail(f"{_label(node)} couples the channels with '{t.name}', whose channels cannot be pruned")
        return None
    return base.with_rank(out_rank)


def _nary(w: _Walker, node: Node) -> None:
    lay = _merge(w, node, broadcast=True)
    w.set_layout(node.outputs[0], lay)


def _concat(w: _Walker, node: Node) -> None:
    out_rank = next((r for r in (_rank(t, w.layout(t)) for t in node.inputs) if r is not None), None)
    axis = int(ir.attr(node, "axis", 0))
    lays = [w.layout(t) for t in node.inputs]
    base = next(lay for lay in lays if lay is not None)
    if axis >= 0:
        if out_rank is None:
            return w.block_inputs(node, f"{_label(node)}: rank unknown")
        axis -= out_rank
    if axis != base.axis:
        return w.set_layout(node.outputs[0], _merge(w, node, broadcast=False))
    segments: list[Segment] = []
    for t, lay in zip(node.inputs, lays):
        if lay is not None and lay.axis == axis:
            segments.extend(lay.segments)
            continue
        shape = _shape(t)
        if lay is not None or shape is None or not isinstance(shape[axis], int):
            return w.block_inputs(node, f"{_label(node)}: cannot map the channels of input '{t.name}'")
        segments.append(Segment(None, shape[axis]))
    w.set_layout(node.outputs[0], Layout(tuple(segments), axis, out_rank))


def _flatten(w: _Walker, node: Node) -> None:
    x = node.inputs[0]
    lay = w.layout(x)
    shape = _shape(x)
    axis = int(ir.attr(node, "axis", 1))
    if lay is None or shape is None:
        return w.cg.block(lay, f"{_label(node)}: input shape unknown")
    rank = len(shape)
    pos, axis = rank + lay.axis, axis + rank if axis < 0 else axis
    others = [d for i, d in enumerate(shape) if i >= axis and i != pos]
    if pos < axis or any(d != 1 for d in others):
        return w.cg.block(lay, f"{_label(node)} mixes channels with other axes")
    w.set_layout(node.outputs[0], Layout(lay.segments, -1, 2))


def _axis_op(w: _Walker, node: Node) -> None:
    """Softmax / LogSoftmax / Hardmax / LayerNormalization: fine unless they act on the channel axis."""
    lay, rank = _data_layout(w, node)
    if lay is None:
        return w.block_inputs(node, f"{_label(node)} reads channels as a parameter")
    if rank is None:
        return w.cg.block(lay, f"{_label(node)}: rank unknown")
    pos = rank + lay.axis
    default = -1 if node.op == "LayerNormalization" or w.model.opset >= 13 else 1
    axis = int(ir.attr(node, "axis", default)) % rank
    flattening = node.op == "LayerNormalization" or w.model.opset < 13
    touches = pos >= axis if flattening else pos == axis
    if touches or any(w.layout(t) is not None for t in node.inputs[1:]) or _extra_outputs_used(w.graph, node):
        return w.cg.block(lay, f"{_label(node)} normalizes over the channel axis")
    w.set_layout(node.outputs[0], lay.with_rank(rank))


def _reduce(w: _Walker, node: Node) -> None:
    lay, rank = _data_layout(w, node)
    axes_t = _optional(node, 1)
    axes = ir.attr(node, "axes", None) if axes_t is None else ir.constant_array(axes_t)
    if lay is None or rank is None or axes is None or len(np.atleast_1d(axes)) == 0:
        return w.block_inputs(node, f"{_label(node)} may reduce over the channel axis")
    axes = sorted(int(a) % rank for a in np.atleast_1d(axes))
    pos = rank + lay.axis
    if pos in axes:
        return w.cg.block(lay, f"{_label(node)} reduces over the channel axis")
    keep = int(ir.attr(node, "keepdims", 1))
    after = 0 if keep else sum(1 for a in axes if a > pos)
    w.set_layout(node.outputs[0], Layout(lay.segments, lay.axis + after, rank - (0 if keep else len(axes))))


def _resize(w: _Walker, node: Node) -> None:
    lay, rank = _data_layout(w, node)
    if lay is None or rank is None or any(w.layout(t) is not None for t in node.inputs[1:]):
        return w.block_inputs(node, f"{_label(node)}: channels cannot be mapped")
    pos = rank + lay.axis
    axes = ir.attr(node, "axes", None)
    if axes is not None:
        if pos in [int(a) % rank for a in axes]:
            return w.cg.block(lay, f"{_label(node)} resizes the channel axis")
        return w.set_layout(node.outputs[0], lay.with_rank(rank))
    scales_at = 1 if w.model.opset < 11 else 2  # Resize-10 is (X, scales)
    scales_t = _optional(node, scales_at)
    scales = ir.constant_array(scales_t) if scales_t is not None else None
    sizes_t = _optional(node, 3) if scales_at == 2 else None
    if scales is not None and scales.size:
        if scales.size != rank or float(scales[pos]) != 1.0:
            return w.cg.block(lay, f"{_label(node)} scales the channel axis")
    elif sizes_t is not None and (sizes := ir.constant_array(sizes_t)) is not None and sizes.size == rank:
        w.cg.edits.append(Edit(node, 3, pos, lay, kind="sizes"))
    else:
        return w.cg.block(lay, f"{_label(node)} has run-time scales/sizes")
    w.set_layout(node.outputs[0], lay.with_rank(rank))


def _pad(w: _Walker, node: Node) -> None:
    lay, rank = _data_layout(w, node)
    pads = ir.attr(node, "pads", None) if len(node.inputs) < 2 else ir.constant_array(_optional(node, 1))
    axes_t = _optional(node, 3)
    if lay is None or rank is None or pads is None or axes_t is not None or any(w.layout(t) is not None for t in node.inputs[1:]):
        return w.block_inputs(node, f"{_label(node)}: padding of the channel axis unknown")
    pads = np.asarray(pads).reshape(-1)
    pos = rank + lay.axis
    if pads.size != 2 * rank or pads[pos] != 0 or pads[pos + rank] != 0:
        return w.cg.block(lay, f"{_label(node)} pads the channel axis")
    w.set_layout(node.outputs[0], lay.with_rank(rank))


_SOURCES = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_RULES: dict[str, Callable[[_Walker, Node], None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _norm,
    "InstanceNormalization": _norm,
    "Concat": _concat,
    "Flatten": _flatten,
    "Resize": _resize,
    "Pad": _pad,
    "Softmax": _axis_op,
    "LogSoftmax": _axis_op,
    "Hardmax": _axis_op,
    "LayerNormalization": _axis_op,
    **{op: _unary for op in UNARY_OPS},
    **{op: _nary for op in NARY_OPS},
    **{op: _pool for op in POOL_OPS},
    **{op: _reduce for op in REDUCE_OPS},
}


def analyze(model: Model) -> ChannelGraph:
    """Build the channel groups of ``model``'s main graph (shapes should be inferred first)."""
    return _Walker(model).run()
