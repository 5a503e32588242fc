"""Quantized activations as expressions of one 8-bit code tensor, and the graph forms they can take.

A QDQ activation such as SiLU reads one quantized tensor ``x_q`` and ends in one QuantizeLinear:

    x_q → DQ → Sigmoid → Q → DQ ─┐
    x_q → DQ ───────────────────→ Mul → Q → y_q

Everything between ``x_q`` and ``y_q`` is element-wise with scalar constants, so ``y_q`` is a
function of the code alone: ``y_q = T[x_q]`` for a 256-entry table ``T``. :func:`read_activation`
turns such a region into a frozen expression tree (:class:`Dequant`, :class:`Quant`, :class:`Op`,
:class:`Const` over the :data:`CODES` leaf) plus the nodes it covers; :class:`Emitter` writes an
expression back as nodes, in any graph; :func:`code_table` evaluates one on all 256 codes with
onnxruntime (so the table holds the codes today's form produces, bit for bit); :func:`to_float`
gives the single-rounding float form (interior Q/DQ pairs dropped, ``x·Sigmoid(x)`` written as
onnxruntime's fused ``QuickGelu``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.runtime.session import make_session

from .close_float_islands import ORT_INT8_OPS

__all__ = ["CODES", "Dequant", "Quant", "Op", "Const", "Expr", "Activation", "read_activation", "Emitter", "code_table", "to_float"]
__all__ += ["compute_ops", "code_dtype"]

#: Element-wise ops an activation region may contain (default domain; binary ones with scalar constants).
ELEMENTWISE = frozenset(
    {
        "Sigmoid", "Tanh", "Erf", "HardSigmoid", "HardSwish", "Relu", "LeakyRelu", "Elu", "Selu", "Softplus", "Exp",
        "Neg", "Abs", "Gelu", "Clip", "Sqrt", "Reciprocal", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Identity",
    }
)  # fmt: skip
_CODE_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class _Codes:
    """The activation's input: the 8-bit code tensor ``x_q``."""


CODES = _Codes()


@dataclass(frozen=True)
class Dequant:
    """``DequantizeLinear(of; scale, zero_point)`` with per-tensor parameters."""

    scale: float
    zero_point: int
    dtype: str
    of: Expr


@dataclass(frozen=True)
class Quant:
    """``QuantizeLinear(of; scale, zero_point)`` to an 8-bit ``dtype``."""

    scale: float
    zero_point: int
    dtype: str
    of: Expr


@dataclass(frozen=True)
class Const:
    """A float32 scalar constant."""

    value: float


@dataclass(frozen=True)
class Op:
    """A float op on expressions (attributes as sorted ``(name, value)`` pairs, lists as tuples)."""

    op: str
    args: tuple[Expr, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    domain: str = ""


Expr = _Codes | Dequant | Quant | Const | Op


@dataclass
class Activation:
    """A region found at a QuantizeLinear: its expression (a :class:`Quant`), the code tensor it
    reads, and the nodes it covers (``removable``: those read only inside the region)."""

    expr: Quant
    source: Tensor
    nodes: list[Node]
    removable: list[Node]


class _Refused(Exception):
    """The pattern is there but cannot be rewritten (the message says why)."""


class _Absent(Exception):
    """The pattern is not there (a tensor of the region comes from a Conv, a graph input, ...)."""


def _params(node: Node) -> tuple[float, int, str] | None:
    """Per-tensor constant 8-bit parameters of a Q/DQ node, else None."""
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return None
    s, z = ir.constant_array(node.inputs[1]), ir.constant_array(node.inputs[2])
    if s is None or z is None or s.size != 1 or z.size != 1 or str(z.dtype) not in _CODE_TYPES:
        return None
    return float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), str(z.dtype)


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, (bytes, str, int, float, bool)) or value is None:
        return value
    raise _Refused(f"attribute value of type {type(value).__name__}")


def _is_compute(node: Node | None) -> bool:
    return node is not None and node.op in ELEMENTWISE and (node.domain or "") in ("", "ai.onnx")


@dataclass
class _Reader:
    """One backwards walk from an anchor QuantizeLinear (memoized per tensor)."""

    graph: Graph
    source: Tensor | None = None
    nodes: list[Node] = field(default_factory=list)
    memo: dict[int, Expr] = field(default_factory=dict)

    def tensor(self, t: Tensor) -> Expr:
        if id(t) not in self.memo:
            self.memo[id(t)] = self._read(t)
        return self.memo[id(t)]

    def _take(self, node: Node) -> None:
        if all(n is not node for n in self.nodes):
            self.nodes.append(node)

    def _read(self, t: Tensor) -> Expr:
        value = ir.constant_array(t)
        if value is not None:
            if value.size != 1 or value.dtype.kind != "f":
                raise _Refused(f"constant '{t.name}' is not a float scalar (a per-element constant is no function of the code)")
            return Const(float(value.reshape(-1)[0]))
        node = ir.producer(t)
        if node is not None and node.op == "DequantizeLinear":
            return self._dequant(node)
        if not _is_compute(node):
            raise _Absent(t.name)
        assert node is not None
        self._take(node)
        args = tuple(self.tensor(x) for x in node.inputs if x.name)
        attrs = tuple(sorted((k, _hashable(v)) for k, v in node.attrs.items()))
        return Op(node.op, args, attrs)

    def _dequant(self, dq: Node) -> Expr:
        params = _params(dq)
        if params is None:
            raise _Refused(f"DequantizeLinear '{dq.name}' is not per-tensor 8-bit with constant parameters")
        self._take(dq)
        codes = dq.inputs[0]
        value = ir.constant_array(codes)
        if value is not None:
            if value.size != 1:
                raise _Refused(f"constant '{codes.name}' is not a scalar")
            s, z, _ = params
            return Const(float(np.float32(s) * np.float32(int(value.reshape(-1)[0]) - z)))
        q = ir.producer(codes)
        if q is not None and q.op == "QuantizeLinear" and self._interior(q):
            qp = _params(q)
            assert qp is not None
            self._take(q)
            return Dequant(*params, Quant(*qp, self.tensor(q.inputs[0])))
        if self.source is not None and codes is not self.source:
            raise _Absent(codes.name)  # a function of two tensors (an SE block's scale), not an activation
        self.source = codes
        return Dequant(*params, CODES)

    def _interior(self, q: Node) -> bool:
        """Whether the walk continues through ``q``: an element-wise op feeds it and only
        DequantizeLinears read it, themselves read by element-wise ops (a Q whose code also feeds
        a Conv is another activation's input, not part of this one)."""
        if _params(q) is None or not _is_compute(ir.producer(q.inputs[0])) or ir.is_graph_output(self.graph, q.outputs[0]):
            return False
        readers = list(q.outputs[0].outputs)
        return all(r.op == "DequantizeLinear" and all(_is_compute(u) for u in r.outputs[0].outputs) for r in readers)


def compute_ops(expr: Expr) -> list[str]:
    """The float ops of ``expr``, sorted, each once per distinct subexpression."""
    seen: dict[Expr, None] = {}

    def walk(e: Expr) -> None:
        if e in seen:
            return
        seen[e] = None
        for child in e.args if isinstance(e, Op) else (e.of,) if isinstance(e, (Dequant, Quant)) else ():
            walk(child)

    walk(expr)
    return sorted(e.op for e in seen if isinstance(e, Op))


def read_activation(q: Node, graph: Graph) -> Activation | str | None:
    """The activation ending in ``q`` (a reason when it is there but unusable; None when absent)."""
    if not q.inputs or not _is_compute(ir.producer(q.inputs[0])):
        return None
    out = _params(q)
    if out is None:
        return "the output QuantizeLinear is not per-tensor 8-bit"
    reader = _Reader(graph)
    try:
        expr = Quant(*out, reader.tensor(q.inputs[0]))
    except _Refused as e:
        return str(e)
    except _Absent:
        return None
    if reader.source is None:
        return None  # a function of constants only: constant folding's business
    ops = compute_ops(expr)
    if len(ops) == 1 and ops[0] in ORT_INT8_OPS:
        return None  # one op onnxruntime already runs as one int8 kernel (QLinearSigmoid is itself a table)
    inside = {id(n) for n in reader.nodes} | {id(q)}
    for node in reader.nodes:
        for t in node.outputs:
            if ir.is_graph_output(graph, t) or (node.op != "DequantizeLinear" and any(id(r) not in inside for r in t.outputs)):
                return f"'{t.name}' inside the activation is also read outside it"
    removable = [n for n in reader.nodes if all(id(r) in inside for t in n.outputs for r in t.outputs)]
    return Activation(expr, reader.source, [q, *reader.nodes], [q, *removable])


class Emitter:
    """Writes expressions as nodes reading ``source`` (equal subexpressions become one node)."""

    def __init__(self, source: Tensor, name: Callable[[str], str], base: str) -> None:
        self.source = source
        self.name = name
        self.base = base
        self.nodes: list[Node] = []
        self.memo: dict[Expr, Tensor] = {}

    def _var(self, suffix: str, dtype: Any) -> Tensor:
        return ir.make_variable(self.name(f"{self.base}/{suffix}"), dtype=dtype, shape=self.source.shape)

    def _node(self, op: str, inputs: list[Tensor], out: Tensor, attrs: dict[str, Any] | None = None, domain: str = "") -> Tensor:
        self.nodes.append(ir.make_node(op, inputs, [out], name=self.name(f"{self.base}/{op}"), attrs=attrs, domain=domain or None))
        return out

    def _const(self, suffix: str, value: Any) -> Tensor:
        return ir.make_constant(self.name(f"{self.base}/{suffix}"), np.asarray(value))

    def emit(self, e: Expr) -> Tensor:
        if e not in self.memo:
            self.memo[e] = self._emit(e)
        return self.memo[e]

    def _emit(self, e: Expr) -> Tensor:
        if isinstance(e, _Codes):
            return self.source
        if isinstance(e, Const):
            return self._const("value", np.float32(e.value))
        if isinstance(e, (Dequant, Quant)):
            scale, zero_point = self._const("scale", np.float32(e.scale)), self._const("zero_point", np.asarray(e.zero_point, e.dtype))
            op, dtype = ("DequantizeLinear", np.float32) if isinstance(e, Dequant) else ("QuantizeLinear", np.dtype(e.dtype))
            return self._node(op, [self.emit(e.of), scale, zero_point], self._var(op.lower(), dtype))
        args = [self.emit(a) for a in e.args]
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in e.attrs}
        return self._node(e.op, args, self._var(e.op.lower(), np.float32), attrs, e.domain)

    def lookup(self, table: np.ndarray) -> Tensor:
        """``GatherElements(T, Cast(flat codes, int32))`` reshaped back: the activation as one lookup.

        GatherElements, not Gather: onnxruntime's Gather copies each 1-byte row with its own
        ``memcpy`` (11 ms for 819,200 codes here), GatherElements runs a typed loop (1.7 ms). An
        int8 code ``c < 0`` indexes ``c`` from the end, so the table is ordered by ``c mod 256``
        (the order :func:`code_table` returns)."""
        shape = self._node("Shape", [self.source], self._var("shape", np.int64), {})
        shape.shape = [len(self.source.shape)] if self.source.shape is not None else None
        flat = self._node("Reshape", [self.source, self._const("flat", np.asarray([-1], np.int64))], self._var("flat", self.source.dtype))
        flat.shape = None
        index = self._node("Cast", [flat], self._var("index", np.int32), {"to": ir.onnx_dtype(np.int32)})
        index.shape = None
        found = self._node("GatherElements", [self._const("table", table), index], self._var("lookup", table.dtype), {"axis": 0})
        found.shape = None
        return self._node("Reshape", [found, shape], self._var("reshaped", table.dtype))


def to_float(expr: Quant) -> Quant:
    """The single-rounding float form: ``DQ(Q(e))`` with equal parameters becomes ``e`` (one
    rounding instead of two), and ``x·Sigmoid(x)`` becomes ``QuickGelu(x, alpha=1)`` — the kernel
    onnxruntime fuses SiLU into in fp32, which its QDQ graph never reaches because it gives each
    reader of ``x`` its own DequantizeLinear."""

    def strip(e: Expr) -> Expr:
        if isinstance(e, Dequant) and isinstance(e.of, Quant) and (e.scale, e.zero_point, e.dtype) == (e.of.scale, e.of.zero_point, e.of.dtype):
            return strip(e.of.of)
        if isinstance(e, (Dequant, Quant)):
            return type(e)(e.scale, e.zero_point, e.dtype, strip(e.of))
        if not isinstance(e, Op):
            return e
        args = tuple(strip(a) for a in e.args)
        if e.op == "Mul" and not e.attrs and len(args) == 2:
            for x, gate in (args, args[::-1]):
                if isinstance(gate, Op) and gate.op == "Sigmoid" and gate.args == (x,):
                    return Op("QuickGelu", (x,), (("alpha", 1.0),), ir.MS_DOMAIN)
        return Op(e.op, args, e.attrs, e.domain)

    return Quant(expr.scale, expr.zero_point, expr.dtype, strip(expr.of))


def _all_codes(dtype: str) -> np.ndarray:
    """Every code of ``dtype`` in table order (``c mod 256``: 0..127, then -128..-1 for int8)."""
    return np.arange(256, dtype=np.uint8).view(np.dtype(dtype))


def code_table(expr: Quant, source_dtype: str, model: Model) -> np.ndarray:
    """``T[c]`` for every code ``c`` of ``source_dtype``: the expression run by onnxruntime on a
    256-element tensor (the same kernels, hence the same codes, as in the model)."""
    codes = ir.make_variable("codes", dtype=np.dtype(source_dtype), shape=[256])
    counter = iter(range(1 << 30))
    em = Emitter(codes, lambda base: f"{base}_{next(counter)}", "t")
    out = em.emit(expr)
    graph = ir.make_graph(em.nodes, [codes], [out], name="activation_table", opset=model.opset)
    opsets = {**model.opsets, ir.MS_DOMAIN: model.opsets.get(ir.MS_DOMAIN, 1)}
    table_model = Model(graph, opsets, ir_version=model.ir_version, source=f"{model.source} (activation table)")
    session = make_session(table_model, threads=1)
    return np.asarray(session.run(None, {"codes": _all_codes(source_dtype)})[0])


def code_dtype(expr: Expr) -> str:
    """The code type of the activation's input (the zero-point type of a DequantizeLinear reading it)."""
    if isinstance(expr, Dequant) and isinstance(expr.of, _Codes):
        return expr.dtype
    children = expr.args if isinstance(expr, Op) else (expr.of,) if isinstance(expr, (Dequant, Quant)) else ()
    found = [code_dtype(c) for c in children]
    return next((f for f in found if f), "")
