"""One view of the linear layers the compensation passes edit: Conv, Gemm and MatMul with constant weights.

Every such layer computes, per group ``g`` of its input channels, ``y[o] = Σ_f W[g, o, f] · x_patch[g, f] + b[o]``.
:class:`Linear` hides where the output and input channels live in each op's weight layout:

===============  ===================  =====================  ======================================
op               weight               output channels        input channels
===============  ===================  =====================  ======================================
Conv (group g)   [O, C/g, k...]       axis 0                 axis 1, within group ``o // (O/g)``
Gemm transB=1    [O, K]               axis 0                 axis 1
Gemm transB=0    [K, O]               axis 1                 axis 0
MatMul (2-D W)   [K, O]               axis 1                 axis 0
===============  ===================  =====================  ======================================

A depthwise Conv is the grouped case with one input channel per group: its input channel ``c``
only feeds output channel ``c`` (times the depth multiplier). The bias is input 2 of Conv, ``beta·C``
of Gemm, and for MatMul the constant of the Add that is its only reader (PyTorch's ``nn.Linear``
on 3-D inputs).

Edits happen on float64 working copies (:meth:`Linear.scale_outputs`, ``weight = ...``,
``bias = ...``) and reach the graph once, as new constants, in :meth:`Linear.commit`: an iterative
pass (cross-layer equalization) then creates two constants per layer, not two per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Node

__all__ = ["Linear", "linear_of", "LINEAR_OPS"]

#: Ops with a weight the compensation passes can rescale or re-round.
LINEAR_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class Linear:
    """A Conv / Gemm / MatMul with a constant float weight (see the module docstring).

    Attributes:
        node: the node.
        weight: float64 working copy of the weight, in the op's layout.
        bias: float64 working copy of the effective per-output bias, or None when it has none.
        out_axis: the weight axis of output channels.
        groups: number of channel groups (Conv ``group``; 1 otherwise).
        bias_add: for MatMul, the Add holding its bias (None: no bias).
        dtype: the stored weight's dtype (the committed constants keep it).
    """

    node: Node
    weight: np.ndarray
    bias: np.ndarray | None
    out_axis: int
    groups: int = 1
    bias_add: Node | None = None
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[self.out_axis])

    @property
    def in_channels(self) -> int:
        """Input channels (features) the layer reads."""
        if self.op == "Conv":
            return int(self.weight.shape[1]) * self.groups
        return int(self.weight.shape[1 - self.out_axis])

    @property
    def is_pointwise(self) -> bool:
        """A 1x1 Conv without padding, or a Gemm/MatMul: a constant input offset maps to a constant output offset."""
        if self.op != "Conv":
            return True
        pads = [int(p) for p in self.node.attrs.get("pads", [])]
        return all(int(k) == 1 for k in self.weight.shape[2:]) and not any(pads)

    def rows(self) -> np.ndarray:
        """The weight as ``[groups, O/groups, F]``: one row per output channel, ``F`` inputs per group."""
        return self.rows_of(self.weight)

    def rows_of(self, a: np.ndarray) -> np.ndarray:
        """An array in the weight's layout (integers, a broadcast scale) in :meth:`rows` layout."""
        if self.op == "Conv":
            return a.reshape(self.groups, self.out_channels // self.groups, -1)
        return (a if self.out_axis == 0 else a.T)[None]

    def from_rows(self, rows: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`rows`: ``[groups, O/groups, F]`` back in the weight's layout."""
        if self.op == "Conv":
            return rows.reshape(self.weight.shape)
        return rows[0] if self.out_axis == 0 else rows[0].T

    def out_ranges(self) -> np.ndarray:
        """``max |W|`` of each output channel."""
        return np.abs(self.rows()).max(axis=2).reshape(-1)

    def in_ranges(self) -> np.ndarray:
        """``max |W|`` over everything input channel ``c`` feeds (for a depthwise Conv: its one filter)."""
        w = np.abs(self.weight)
        if self.op != "Conv":
            return w.max(axis=self.out_axis)
        per_group = w.reshape(self.groups, self.out_channels // self.groups, w.shape[1], -1)
        return per_group.max(axis=(1, 3)).reshape(-1)

    def input_sums(self, c: np.ndarray) -> np.ndarray:
        """``Σ_f W[o, f] · c[channel of f]``: the output offset a per-channel input offset ``c`` causes
        (exact for pointwise layers; a padded kxk Conv differs at the borders)."""
        if self.op != "Conv":
            return self.rows()[0] @ c
        g, og = self.groups, self.out_channels // self.groups
        per = self.weight.reshape(g, og, self.weight.shape[1], -1).sum(axis=3)  # [g, og, C/g]
        return np.einsum("goc,gc->go", per, c.reshape(g, -1)).reshape(-1)

    def scale_outputs(self, s: np.ndarray) -> None:
        """Divide output channel ``o`` (weights and bias) by ``s[o]``."""
        shape = [1] * self.weight.ndim
        shape[self.out_axis] = -1
        self.weight = self.weight / s.reshape(shape)
        if self.bias is not None:
            self.bias = self.bias / s

    def scale_inputs(self, s: np.ndarray) -> None:
        """Multiply every weight reading input channel ``c`` by ``s[c]``."""
        w = self.weight
        if self.op == "Conv":
            g, og = self.groups, self.out_channels // self.groups
            per = s.reshape(g, 1, -1, *([1] * (w.ndim - 2)))
            self.weight = (w.reshape(g, og, *w.shape[1:]) * per).reshape(w.shape)
        else:
            self.weight = w * (s[None, :] if self.out_axis == 0 else s[:, None])

    def can_hold_bias(self) -> str | None:
        """Why a bias cannot be given to this layer (None: it can)."""
        if self.op == "MatMul" and self.bias_add is None:
            return "MatMul has no bias Add (adding one would leave its output float)"
        return None

    def commit(self, namer: ir.NameGenerator, tag: str, *, weight: bool = True, bias: bool = True) -> None:
        """Write the working copies into the graph as new constants (adding a bias input when needed)."""
        base = self.node.name or self.op
        if weight:
            self.node.inputs[1] = ir.make_constant(namer.new(f"{base}/W_{tag}"), self.weight.astype(self.dtype))
        if not bias or self.bias is None:
            return
        const = ir.make_constant(namer.new(f"{base}/B_{tag}"), self.bias.astype(self.dtype))
        if self.op == "MatMul":
            if self.bias_add is None:
                raise ValueError(self.can_hold_bias())
            add = self.bias_add
            add.inputs[1 if ir.is_constant(add.inputs[1]) else 0] = const
            return
        if self.op == "Gemm":
            self.node.attrs["beta"] = 1.0  # C now carries the whole bias (the Gemm quantizer wants beta=1)
        if len(self.node.inputs) > 2:
            self.node.inputs[2] = const
        else:
            self.node.inputs.append(const)


def _bias_add_constant(add: Node) -> np.ndarray | None:
    consts = [ir.constant_array(t) for t in add.inputs]
    return next((c for c in consts if c is not None), None)


def _matmul_bias_add(graph: Graph, mm: Node, channels: int) -> Node | None:
    """The Add adding a per-channel constant to ``mm``'s output, when it is the output's only reader."""
    add = ir.only_consumer(graph, mm.outputs[0])
    if add is None or add.op != "Add" or (add.domain or "") or len(add.inputs) != 2:
        return None
    c = _bias_add_constant(add)
    if c is None or c.dtype.kind != "f" or c.size != channels or c.shape[-1] != channels:
        return None
    return add


def _bias_of(node: Node, bias_add: Node | None, channels: int) -> np.ndarray | None:
    if node.op == "MatMul":
        c = _bias_add_constant(bias_add) if bias_add is not None else None
    else:
        c = ir.constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if c is None:
        return None
    beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,)) * beta


def linear_of(graph: Graph, node: Node) -> Linear | str:
    """``node`` as a :class:`Linear`, or why it is not one (a reason for the skip record)."""
    if node.op not in LINEAR_OPS or (node.domain or ""):
        return f"not a {'/'.join(LINEAR_OPS)}"
    w = ir.constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.dtype.kind != "f":
        return "weight is not a float constant"
    w64 = w.astype(np.float64)
    if node.op == "Conv":
        if w.ndim != 4:
            return f"{w.ndim - 2}-D convolution (only 2-D convolutions are handled)"
        if str(node.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            return f"auto_pad={node.attrs.get('auto_pad')} (explicit pads only)"
        if len(node.inputs) > 2 and node.inputs[2].name and ir.constant_array(node.inputs[2]) is None:
            return "bias is not a constant"
        return Linear(node, w64, _bias_of(node, None, w.shape[0]), 0, int(node.attrs.get("group", 1)), dtype=w.dtype)
    if w.ndim != 2:
        return "weight is not 2-D"
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0:
            return "Gemm with transA or alpha != 1"
        out_axis = 0 if int(node.attrs.get("transB", 0)) else 1
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = ir.constant_array(node.inputs[2])
            if c is None or c.size not in (1, w.shape[out_axis]):
                return "Gemm C is not a constant per-output bias"
        return Linear(node, w64, _bias_of(node, None, w.shape[out_axis]), out_axis, dtype=w.dtype)
    add = _matmul_bias_add(graph, node, int(w.shape[1]))
    return Linear(node, w64, _bias_of(node, add, w.shape[1]), 1, 1, add, dtype=w.dtype)
