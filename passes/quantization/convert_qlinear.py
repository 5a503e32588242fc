"""``convert-qlinear``: rewrite QDQ patterns into QLinear (QOperator) ops.

Each rule is a pattern ``DequantizeLinear → Op → QuantizeLinear``, a check that returns why it does
not apply, and a rewrite into one integer op reading and writing the quantized tensors directly:

===============================  ============================================================
pattern                          becomes
===============================  ============================================================
DQ → Conv [→ Relu/Clip] → Q      QLinearConv (an absorbable activation folds into the output
                                 quantization when it saturates exactly where Q does)
DQ → MatMul → Q                  QLinearMatMul
DQ → MatMul (float output)       com.microsoft.MatMulIntegerToFloat
DQ → Gemm [→ Q]                  com.microsoft.QGemm (float output when no Q follows)
DQ → Add/Mul → Q                 com.microsoft.QLinearAdd / QLinearMul
DQ → Concat → Q                  com.microsoft.QLinearConcat
DQ → AveragePool / GAP → Q       com.microsoft.QLinearAveragePool / QLinearGlobalAveragePool
DQ → LeakyRelu / Sigmoid → Q     com.microsoft.QLinearLeakyRelu / QLinearSigmoid
DQ → Softmax → Q                 com.microsoft.QLinearSoftmax
DQ → data movement → Q           the op itself on int8 (same scale/zero point on both sides):
                                 Transpose, Reshape, Flatten, Squeeze, Unsqueeze, MaxPool,
                                 Resize, Slice, Gather, Split
===============================  ============================================================

Standard ONNX ops first, onnxruntime contrib ops where the standard has none. ConvTranspose has no
QLinear kernel in onnxruntime's CPU provider and stays in QDQ form (reported). Whatever a rule does
not convert stays as valid QDQ, so the output is always a loadable mix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass

__all__ = ["ConvertQLinear", "QLINEAR_RULES"]

MS = "com.microsoft"


@dataclass
class _QT:
    """A quantized tensor as a DQ/Q node sees it: integer tensor, scale, zero point."""

    value: Tensor
    scale: Tensor
    zero_point: Tensor

    @property
    def scale_value(self) -> np.ndarray:
        return np.asarray(ir.constant_array(self.scale))

    @property
    def zp_value(self) -> np.ndarray:
        return np.asarray(ir.constant_array(self.zero_point))


@dataclass
class _Match:
    node: Node
    inputs: dict[int, _QT]
    output: _QT | None  # the Q node's view of the output (value = the Q's integer output)
    q_node: Node | None
    absorbed: Node | None = None
    extra: dict = field(default_factory=dict)


def _dq_input(node: Node, index: int) -> _QT | str:
    if index >= len(node.inputs) or not node.inputs[index].name:
        return f"input {index} missing"
    dq = ir.producer(node.inputs[index])
    if dq is None or dq.op != "DequantizeLinear":
        return f"input {index} is not dequantized"
    if len(dq.inputs) < 3 or ir.constant_array(dq.inputs[1]) is None or ir.constant_array(dq.inputs[2]) is None:
        return f"input {index} has non-constant quantization parameters"
    return _QT(dq.inputs[0], dq.inputs[1], dq.inputs[2])


def _per_tensor(qt: _QT) -> bool:
    return qt.scale_value.size == 1


def _q_output(graph: Graph, t: Tensor) -> tuple[_QT, Node] | str:
    users = list(t.outputs)
    if len(users) != 1 or users[0].op != "QuantizeLinear" or ir.is_graph_output(graph, t):
        return "output is not read by exactly one QuantizeLinear"
    q = users[0]
    if len(q.inputs) < 3 or ir.constant_array(q.inputs[1]) is None or ir.constant_array(q.inputs[2]) is None:
        return "output quantization parameters are not constant"
    qt = _QT(q.outputs[0], q.inputs[1], q.inputs[2])
    if not _per_tensor(qt):
        return "output is quantized per channel"
    return qt, q


def _absorbable(act: Node, out: _QT) -> bool:
    """Relu/Clip whose saturation coincides with the output quantization's (so it can be dropped).

    The quantized output covers ``[s·(qmin - z), s·(qmax - z)]``; an activation clamping to an
    interval containing that one changes nothing once the result is quantized, provided the lower
    bound is exactly representable (Relu: the zero point is qmin).
    """
    zp = int(out.zp_value.reshape(-1)[0])
    info = np.iinfo(out.zp_value.dtype)
    scale = float(out.scale_value.reshape(-1)[0])
    lo_q, hi_q = scale * (info.min - zp), scale * (info.max - zp)
    if act.op == "Relu":
        return zp == info.min
    if act.op == "Clip":
        lo = ir.constant_array(act.inputs[1]) if len(act.inputs) > 1 and act.inputs[1].name else act.attrs.get("min")
        hi = ir.constant_array(act.inputs[2]) if len(act.inputs) > 2 and act.inputs[2].name else act.attrs.get("max")
        lo_v = -np.inf if lo is None else float(np.asarray(lo).reshape(-1)[0])
        hi_v = np.inf if hi is None else float(np.asarray(hi).reshape(-1)[0])
        tol = 1e-6 * max(1.0, abs(hi_v) if np.isfinite(hi_v) else 1.0)
        lower_ok = (lo_v == 0 and zp == info.min) or lo_q >= lo_v - tol
        return lower_ok and hi_q <= hi_v + tol
    return False


def _match(graph: Graph, node: Node, inputs: list[int], *, per_tensor: tuple[int, ...] = (), float_output: bool = False, absorb: bool = False) -> _Match | str:
    found: dict[int, _QT] = {}
    for i in inputs:
        qt = _dq_input(node, i)
        if isinstance(qt, str):
            return qt
        if i in per_tensor and not _per_tensor(qt):
            return f"input {i} is quantized per channel"
        found[i] = qt
    out = node.outputs[0]
    absorbed = None
    if absorb and len(out.outputs) == 1 and out.outputs[0].op in ("Relu", "Clip") and not ir.is_graph_output(graph, out):
        candidate = out.outputs[0]
        q = _q_output(graph, candidate.outputs[0])
        if not isinstance(q, str) and _absorbable(candidate, q[0]):
            return _Match(node, found, q[0], q[1], absorbed=candidate)
    q = _q_output(graph, out)
    if isinstance(q, str):
        if float_output:
            return _Match(node, found, None, None)
        return q
    return _Match(node, found, q[0], q[1], absorbed=absorbed)


def _finish(graph: Graph, m: _Match, new: Node) -> None:
    """Wire ``new`` to produce the Q node's integer output (or the float output) and drop the old."""
    if m.q_node is not None:
        target = m.q_node.outputs[0]
        m.q_node.outputs.clear()
        doomed = [m.node, m.q_node] + ([m.absorbed] if m.absorbed is not None else [])
    else:
        target = m.node.outputs[0]
        doomed = [m.node]
    m.node.outputs.clear()
    new.outputs.append(target)
    graph.nodes.append(new)
    ir.remove_nodes(graph, doomed)


def _name(namer: ir.NameGenerator, node: Node, op: str) -> str:
    return namer.new(f"{node.name or op}/{op}")


Rule = Callable[[Graph, Node, ir.NameGenerator], "str | None"]
QLINEAR_RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    """Register a conversion rule for ``ops``; it returns a reason when it did not apply."""

    def deco(fn: Rule) -> Rule:
        for op in ops:
            QLINEAR_RULES[op] = fn
        return fn

    return deco


def _qargs(qt: _QT) -> list[Tensor]:
    return [qt.value, qt.scale, qt.zero_point]


@rule("Conv")
def _conv(graph: Graph, node: Node, namer: ir.NameGenerator) -> str | None:
    has_bias = len(node.inputs) > 2 and node.inputs[2].name
    m = _match(graph, node, [0, 1] + ([2] if has_bias else []), per_tensor=(0,), absorb=True)
    if isinstance(m, str):
        return m
    inputs = _qargs(m.inputs[0]) + _qargs(m.inputs[1]) + [m.output.scale, m.output.zero_point]  # type: ignore[union-attr]
    if has_bias:
        inputs.append(m.inputs[2].value)
    _finish(graph, m, ir.make_node("QLinearConv", inputs, [], name=_name(namer, node, "QLinearConv"), attrs=dict(node.attrs)))
    return None


@rule("MatMul")
def _matmul(graph: Graph, node: Node, namer: ir.NameGenerator) -> str | None:
    m = _match(graph, node, [0, 1], per_tensor=(0,), float_output=True, absorb=True)
    if isinstance(m, str):
        return m
    a, b = m.inputs[0], m.inputs[1]
    if m.output is None:
        inputs = [a.value, b.value, a.scale, b.scale, a.zero_point, b.zero_point]
        new = ir.make_node("MatMulIntegerToFloat", inputs, [], name=_name(namer, node, "MatMulIntegerToFloat"), domain=MS)
    else:
        new = ir.make_node("QLinearMatMul", _qargs(a) + _qargs(b) + [m.output.scale, m.output.zero_point], [], name=_name(namer, node, "QLinearMatMul"))
    _finish(graph, m, new)
    return None


@rule("Gemm")
def _gemm(graph: Graph, node: Node, namer: ir.NameGenerator) -> str | None:
    has_c = len(node.inputs) > 2 and node.inputs[2].name
    m = _match(graph, node, [0, 1] + ([2] if has_c else []), per_tensor=(0,), float_output=True, absorb=True)
    if isinstance(m, str):
        return m
    inputs = _qargs(m.inputs[0]) + _qargs(m.inputs[1]) + [m.inputs[2].value if has_c else ir.make_variable("")]
    if m.output is not None:
        inputs += [m.output.scale, m.output.zero_point]
    attrs = {k: v for k, v in node.attrs.items() if k in ("transA", "transB", "alpha")}
    _finish(graph, m, ir.make_node("QGemm", inputs, [], name=_name(namer, node, "QGemm"), attrs=attrs, domain=MS))
    return None


@rule("Add", "Mul")
def _binary(graph: Graph, node: Node, namer: ir.NameGenerator) -> str | None:
    m = _match(graph, node, [0, 1], per_tensor=(0, 1), absorb=True)
    if isinstance(m, str):
        return m
    op = "QLinearAdd" if node.op == "Add" else "QLinearMul"
    inputs = _qargs(m.inputs[0]) + _qargs(m.inputs[1]) + [m.output.scale, m.output.zero_point]  # type: ignore[union-attr]
    _finish(graph, m, ir.make_node(op, inputs, [], name=_name(namer, node, op), domain=MS))
    return None


@rule("Concat")
def _concat(graph: Graph, node: Node, namer: ir.NameGenerator) -> str | None:
    m = _match(graph, node, list(range(len(node.inputs))), per_tensor=tuple(range(len(node.inputs))))
    if isinstance(m, str):
        return m
    inputs = [m.output.scale, m.output.zero_point]  # type: ignore[union-attr]
    for i in range(len(node.inputs)):
        inputs += _qargs(m.inputs[i])
    _finish(graph, m, ir.make_node("QLinearConcat", inputs, [], name=_name(namer, node, "QLinearConcat"), attrs=dict(node.attrs), domain=MS))
    return None


_UNARY_CONTRIB = {
    "AveragePool": "QLinearAveragePool",
    "GlobalAveragePool": "QLinearGlobalAveragePool",
    "LeakyRelu": "QLinearLeakyRelu",
    "Sigmoid": "QLinearSigmoid",
    "Softmax": "QLinearSoftmax",
}


@rule(*_UNARY_CONTRIB)
def _unary(graph: Graph, node: Node, namer: ir.NameGenerator) -> str | None:
    m = _match(graph, node, [0], per_tensor=(0,))
    if isinstance(m, str):
        return m
    op = _UNARY_CONTRIB[node.op]
    attrs = dict(node.attrs)
    if node.op == "Softmax":
        attrs["opset"] = int(graph.opset or 13)
        if attrs["opset"] < 13 and attrs.get("axis", 1) != -1:
            return "QLinearSoftmax before opset 13 needs axis = last"
    if op in ("QLinearAveragePool", "QLinearGlobalAveragePool"):
        attrs.setdefault("channels_last", 0)
    _finish(graph, m, ir.make_node(op, _qargs(m.inputs[0]) + [m.output.scale, m.output.zero_point], [], name=_name(namer, node, op), attrs=attrs, domain=MS))  # type: ignore[union-attr]
    return None


_MOVEMENT = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Resize", "Slice", "Gather", "Split")


@rule(*_MOVEMENT)
def _movement(graph: Graph, node: Node, namer: ir.NameGenerator) -> str | None:
    if node.op == "Split":
        return "Split has several outputs (kept in QDQ form)"
    if node.op == "MaxPool" and len([t for t in node.outputs if t.name]) > 1:
        return "MaxPool with indices"
    m = _match(graph, node, [0], per_tensor=(0,))
    if isinstance(m, str):
        return m
    x, y = m.inputs[0], m.output
    assert y is not None
    same = np.array_equal(x.scale_value, y.scale_value) and np.array_equal(x.zp_value, y.zp_value) and x.zp_value.dtype == y.zp_value.dtype
    if not same:
        return "input and output quantization parameters differ"
    if node.op == "Resize" and node.attrs.get("mode", "nearest") != "nearest":
        return "linear Resize on integers rounds differently from QDQ"
    inputs = [x.value] + list(node.inputs[1:])
    _finish(graph, m, ir.make_node(node.op, inputs, [], name=_name(namer, node, node.op), attrs=dict(node.attrs)))
    return None


@register_pass("convert-qlinear")
class ConvertQLinear(Pass[EmptyConfig]):
    """Rewrite DQ → Op → Q patterns into QLinear / integer ops (QOperator format)."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        namer = ir.names(model)
        converted: dict[str, int] = {}
        skipped: dict[str, tuple[str, str]] = {}
        uses_ms = False
        for graph in ir.iter_graphs(model.graph):
            graph.opset = model.opset
            for node in list(graph.nodes):
                if node.op not in QLINEAR_RULES or (node.domain or "") or not node.outputs:
                    if node.op == "ConvTranspose" and _reads_dequantized(node):
                        skipped[node.name] = (node.op, "no QLinearConvTranspose kernel in onnxruntime's CPU provider (kept QDQ)")
                    continue
                if not _reads_dequantized(node):
                    continue
                reason = QLINEAR_RULES[node.op](graph, node, namer)
                if reason is None:
                    converted[node.op] = converted.get(node.op, 0) + 1
                    uses_ms |= node.op not in _MOVEMENT and node.op not in ("Conv",)
                else:
                    skipped[node.name] = (node.op, reason)
        if uses_ms:
            model.set_opset(MS, 1)
        for name, (op, reason) in skipped.items():
            ctx.skip(name, op, reason, kept="qdq")
        total = sum(converted.values())
        return PassResult(model, total > 0, {"converted": total, **{f"converted.{k}": v for k, v in sorted(converted.items())}, "kept_qdq": len(skipped)})


def _reads_dequantized(node: Node) -> bool:
    """Some input of ``node`` comes out of a DequantizeLinear (the node sits in a QDQ region)."""
    return any((p := ir.producer(t)) is not None and p.op == "DequantizeLinear" for t in node.inputs if t.name)
