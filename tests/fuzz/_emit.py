"""The emitter the fuzz op catalog writes into: names, constants (initializers or Constant nodes),
seeded weights, subgraph scopes and the opset-dependent spellings of ops whose inputs changed.

Every weight comes from one ``numpy.random.default_rng(seed)`` consumed in emission order, so a
:class:`~tests.fuzz._graphs.ModelSpec` (opset, seed, op list) rebuilds the same model bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str
Shape = tuple[Dim, ...]
ConstMode = Literal["init", "node", "outer"]
#: ``plain`` names (``relu_3``), exporter-style ``path`` names (``/blk3/Relu_output_0:0``), or
#: ``anonymous``: plain tensor names and empty node names (as many exporters write them).
Naming = Literal["plain", "path", "anonymous"]

__all__ = ["Dim", "Shape", "ConstMode", "Naming", "Emitter", "Scope", "concrete", "numel"]


def concrete(*dims: Dim) -> bool:
    """Whether every dim is a number (not a symbolic ``dim_param``)."""
    return all(isinstance(d, int) for d in dims)


def numel(shape: Shape, dims: dict[str, int] | None = None) -> int:
    """Element count, symbolic dims counted as their feed value (default 2)."""
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) else (dims or {}).get(d, 2)
    return n


@dataclass
class Scope:
    """Nodes and initializers of one graph (the main graph or a subgraph body)."""

    consts: ConstMode
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)


class Emitter:
    """Writes nodes for the op catalog at one opset, drawing weights from one seeded generator."""

    def __init__(self, opset: int, seed: int, consts: ConstMode = "init", naming: Naming = "plain") -> None:
        self.opset = opset
        self.naming = naming
        self.rng = np.random.default_rng(seed)
        self.main = Scope("init" if consts == "outer" else consts)
        self.scope = self.main
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        #: graph input name → (low, high) of the int64 indices it holds (exclusive high)
        self.index_inputs: dict[str, tuple[int, int]] = {}
        #: weights visible from every scope (main-graph constants), by shape, for sharing
        self.shared: dict[tuple[int, ...], str] = {}
        self._count = 0

    # -- names, nodes, constants ------------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        self._count += 1
        if self.naming == "path":
            return f"/blk{self._count}/{hint}_output_0:0"
        return f"{hint}_{self._count}"

    def node_name(self, op: str) -> str:
        if self.naming == "anonymous":
            return ""
        self._count += 1
        return f"/blk{self._count}/{op}" if self.naming == "path" else f"n_{op}_{self._count}"

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> list[str]:
        """Append ``op`` to the current scope; returns its output names."""
        outs = [self.fresh(op.lower()) for _ in range(outputs)]
        self.scope.nodes.append(helper.make_node(op, list(inputs), outs, name=self.node_name(op), **attrs))
        return outs

    def op(self, op: str, *inputs: str, **attrs: Any) -> str:
        """One-output node."""
        return self.node(op, inputs, 1, **attrs)[0]

    def const(self, value: np.ndarray | float | int | Sequence[Any], dtype: Any = np.float32, hint: str = "c") -> str:
        """A constant: an initializer of this scope, of the main graph (``outer``) or a Constant node."""
        arr = np.asarray(value, dtype=dtype)
        name = self.fresh(hint)
        if self.scope.consts == "node":
            self.scope.nodes.append(helper.make_node("Constant", [], [name], name=self.node_name("Constant"), value=numpy_helper.from_array(arr, name)))
        elif self.scope.consts == "outer":
            self.main.inits.append(numpy_helper.from_array(arr, name))
        else:
            self.scope.inits.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values: Sequence[int], hint: str = "i") -> str:
        return self.const(np.asarray(values, np.int64), np.int64, hint)

    def weight(self, shape: Sequence[int], fan_in: int, gain: float = 1.0, hint: str = "w", share: bool = False) -> str:
        """Gaussian weights scaled by ``gain / sqrt(fan_in)`` so activations stay O(1).

        With ``share``, an earlier main-graph weight of the same shape is used again when there is
        one (weights shared by layers, across subgraphs too).
        """
        key = tuple(int(d) for d in shape)
        if share and key in self.shared:
            return self.shared[key]
        w = self.rng.standard_normal(key) * (gain / np.sqrt(max(fan_in, 1)))
        name = self.const(w.astype(np.float32), hint=hint)
        if self.scope is self.main or self.scope.consts == "outer":
            self.shared.setdefault(key, name)
        return name

    def values(self, shape: Sequence[int], low: float, high: float, signed: bool = False, hint: str = "c") -> str:
        """Uniform ``[low, high)`` (optionally with random signs): divisors and scales away from 0."""
        v = self.rng.uniform(low, high, tuple(shape))
        if signed:
            v = v * np.where(self.rng.random(tuple(shape)) < 0.5, -1.0, 1.0)
        return self.const(v.astype(np.float32), hint=hint)

    @contextmanager
    def subgraph(self, consts: ConstMode) -> Iterator[Scope]:
        """Emit into a fresh scope (an If branch or Loop body) until the block ends."""
        outer, self.scope = self.scope, Scope(consts)
        try:
            yield self.scope
        finally:
            self.scope = outer

    def add_input(self, hint: str, elem: int, shape: Shape) -> str:
        name = self.fresh(hint)
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def add_output(self, name: str, shape: Shape, elem: int = TensorProto.FLOAT) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem, list(shape)))

    def is_io(self, name: str) -> bool:
        """Whether ``name`` is already a graph input or output (it cannot be listed again)."""
        return any(v.name == name for v in self.inputs + self.outputs)

    # -- opset-dependent spellings -----------------------------------------------------------------

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset < 13:
            return self.op("Unsqueeze", x, axes=list(axes))
        return self.op("Unsqueeze", x, self.ints(axes, "axes"))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset < 13:
            return self.op("Squeeze", x, axes=list(axes))
        return self.op("Squeeze", x, self.ints(axes, "axes"))

    def reduce(self, op: str, x: str, axes: Sequence[int] | None, keepdims: int) -> str:
        """ReduceX: ``axes`` an attribute until the op's input form (ReduceSum 13, the others 18)."""
        takes_input = self.opset >= (13 if op == "ReduceSum" else 18)
        if axes is None:
            return self.op(op, x, keepdims=keepdims)
        if takes_input:
            return self.op(op, x, self.ints(axes, "axes"), keepdims=keepdims)
        return self.op(op, x, axes=list(axes), keepdims=keepdims)

    def split(self, x: str, axis: int, sizes: Sequence[int], form: str) -> list[str]:
        """Split into ``sizes``: ``form`` is ``sizes`` (attribute < 13, input after), ``equal``
        (no sizes, < 18) or ``num_outputs`` (>= 18)."""
        n = len(sizes)
        if form == "equal" and self.opset < 18:
            return self.node("Split", [x], n, axis=axis)
        if form == "num_outputs" and self.opset >= 18:
            return self.node("Split", [x], n, axis=axis, num_outputs=n)
        if self.opset < 13:
            return self.node("Split", [x], n, axis=axis, split=list(sizes))
        return self.node("Split", [x, self.ints(sizes, "split")], n, axis=axis)

    def clip(self, x: str, low: float | None, high: float | None) -> str:
        ins = [x, self.const(low, hint="lo") if low is not None else "", self.const(high, hint="hi") if high is not None else ""]
        while ins[-1] == "":
            ins.pop()
        return self.op("Clip", *ins)

    def empty_float(self) -> str:
        return self.const(np.zeros((0,), np.float32), hint="empty")
