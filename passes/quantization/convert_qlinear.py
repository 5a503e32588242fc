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
                                 Resize, Slice, Gather
===============================  ============================================================

Standard ONNX ops first, onnxruntime contrib ops where the standard has none. ConvTranspose has no
QLinear kernel in onnxruntime's CPU provider and Split has several outputs: both stay in QDQ form
(reported). Whatever a rule does not convert stays as valid QDQ, so the output is always a
loadable mix. A node that reads no dequantized tensor is not a pattern at all; a node that does
but cannot convert is recorded as a skip (kept "qdq") with its rule's reason.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import EmptyConfig, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

__all__ = ["ConvertQLinear"]

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

    def args(self) -> list[Tensor]:
        """``[x, x_scale, x_zero_point]``, the QLinear ops' input triple."""
        return [self.value, self.scale, self.zero_point]


@dataclass
class _QDQ:
    """A node seen with its quantized neighbourhood: the DQ'd inputs and the Q'd output."""

    node: Node
    inputs: dict[int, _QT]
    output: _QT | None  # the Q node's view of the output (value = the Q's integer output); None: float output
    q_node: Node | None
    absorbed: Node | None = None  # a Relu/Clip between the node and its Q, dropped

    @property
    def out(self) -> _QT:
        """The quantized output (rules that require one check it in ``_around``)."""
        assert self.output is not None, f"{self.node.name}: matched without an output QuantizeLinear"
        return self.output

    def consumed(self) -> list[Node]:
        return [self.node] + [n for n in (self.q_node, self.absorbed) if n is not None]


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


def _around(graph: Graph, node: Node, inputs: list[int], *, per_tensor: tuple[int, ...] = (), float_output: bool = False, absorb: bool = False) -> _QDQ | str:
    """``node`` with its DQ'd ``inputs`` (those in ``per_tensor`` per tensor) and its Q'd output, through
    an absorbable Relu/Clip when ``absorb``; a float output is accepted when ``float_output``."""
    found: dict[int, _QT] = {}
    for i in inputs:
        qt = _dq_input(node, i)
        if isinstance(qt, str):
            return qt
        if i in per_tensor and not _per_tensor(qt):
            return f"input {i} is quantized per channel"
        found[i] = qt
    out = node.outputs[0]
    if absorb and len(out.outputs) == 1 and out.outputs[0].op in ("Relu", "Clip") and not ir.is_graph_output(graph, out):
        candidate = out.outputs[0]
        q = _q_output(graph, candidate.outputs[0])
        if not isinstance(q, str) and _absorbable(candidate, q[0]):
            return _QDQ(node, found, q[0], q[1], absorbed=candidate)
    q = _q_output(graph, out)
    if isinstance(q, str):
        return _QDQ(node, found, None, None) if float_output else q
    return _QDQ(node, found, q[0], q[1])


def _reads_dequantized(node: Node) -> bool:
    """Some input of ``node`` comes out of a DequantizeLinear (the node sits in a QDQ region)."""
    return any((p := ir.producer(t)) is not None and p.op == "DequantizeLinear" for t in node.inputs if t.name)


class _QRule(Rule):
    """A node in a QDQ region → one integer op: subclasses give the check and the new node.

    The rewrite is shared: the new node takes over the Q node's integer output (or the node's float
    output when no Q follows), and the node, its Q and an absorbed activation go.
    """

    @abstractmethod
    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        """The node's quantized neighbourhood, or why it does not convert."""

    @abstractmethod
    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        """The integer node replacing ``m`` (without outputs)."""

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        if not node.outputs or not _reads_dequantized(node):
            return None
        found = self.check(rw, node)
        if isinstance(found, str):
            return found
        return Match(found.consumed(), {"qdq": found}, label=node.op)

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        m: _QDQ = match.values["qdq"]
        new = rw.add(self.build(rw, m))
        rw.take_output(m.q_node if m.q_node is not None else m.node, new)
        rw.remove(*match.nodes)

    @staticmethod
    def _name(rw: Rewriter, node: Node, op: str) -> str:
        return rw.name(f"{node.name or op}/{op}")


def _opset(rw: Rewriter) -> int:
    """The model's default-domain opset (13 when undeclared), which QLinearSoftmax copies."""
    return int(rw.opset or 13)


def _has(node: Node, index: int) -> bool:
    return len(node.inputs) > index and bool(node.inputs[index].name)


class _Conv(_QRule):
    ops = ("Conv",)

    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        return _around(rw.graph, node, [0, 1, 2] if _has(node, 2) else [0, 1], per_tensor=(0,), absorb=True)

    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        inputs = m.inputs[0].args() + m.inputs[1].args() + [m.out.scale, m.out.zero_point]
        if 2 in m.inputs:
            inputs.append(m.inputs[2].value)
        return ir.make_node("QLinearConv", inputs, [], name=self._name(rw, m.node, "QLinearConv"), attrs=dict(m.node.attrs))


class _MatMul(_QRule):
    ops = ("MatMul",)

    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        return _around(rw.graph, node, [0, 1], per_tensor=(0,), float_output=True, absorb=True)

    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        a, b = m.inputs[0], m.inputs[1]
        if m.output is None:
            inputs = [a.value, b.value, a.scale, b.scale, a.zero_point, b.zero_point]
            return ir.make_node("MatMulIntegerToFloat", inputs, [], name=self._name(rw, m.node, "MatMulIntegerToFloat"), domain=MS)
        return ir.make_node("QLinearMatMul", a.args() + b.args() + [m.out.scale, m.out.zero_point], [], name=self._name(rw, m.node, "QLinearMatMul"))


class _Gemm(_QRule):
    ops = ("Gemm",)

    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        return _around(rw.graph, node, [0, 1, 2] if _has(node, 2) else [0, 1], per_tensor=(0,), float_output=True, absorb=True)

    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        inputs = m.inputs[0].args() + m.inputs[1].args() + [m.inputs[2].value if 2 in m.inputs else ir.make_variable("")]
        if m.output is not None:
            inputs += [m.output.scale, m.output.zero_point]
        attrs = {k: v for k, v in m.node.attrs.items() if k in ("transA", "transB", "alpha")}
        return ir.make_node("QGemm", inputs, [], name=self._name(rw, m.node, "QGemm"), attrs=attrs, domain=MS)


class _Binary(_QRule):
    ops = ("Add", "Mul")

    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        return _around(rw.graph, node, [0, 1], per_tensor=(0, 1), absorb=True)

    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        op = "QLinearAdd" if m.node.op == "Add" else "QLinearMul"
        inputs = m.inputs[0].args() + m.inputs[1].args() + [m.out.scale, m.out.zero_point]
        return ir.make_node(op, inputs, [], name=self._name(rw, m.node, op), domain=MS)


class _Concat(_QRule):
    ops = ("Concat",)

    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        every = list(range(len(node.inputs)))
        return _around(rw.graph, node, every, per_tensor=tuple(every))

    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        inputs = [m.out.scale, m.out.zero_point]
        for i in range(len(m.inputs)):
            inputs += m.inputs[i].args()
        return ir.make_node("QLinearConcat", inputs, [], name=self._name(rw, m.node, "QLinearConcat"), attrs=dict(m.node.attrs), domain=MS)


class _Unary(_QRule):
    """One-input ops with a contrib kernel ``QLinear<Op>`` taking the same attributes."""

    ops = ("AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid", "Softmax")

    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        m = _around(rw.graph, node, [0], per_tensor=(0,))
        if not isinstance(m, str) and node.op == "Softmax" and _opset(rw) < 13 and node.attrs.get("axis", 1) != -1:
            return "QLinearSoftmax before opset 13 needs axis = last"
        return m

    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        op = f"QLinear{m.node.op}"
        attrs: dict[str, Any] = dict(m.node.attrs)
        if m.node.op == "Softmax":
            attrs["opset"] = _opset(rw)
        if m.node.op in ("AveragePool", "GlobalAveragePool"):
            attrs.setdefault("channels_last", 0)
        return ir.make_node(op, m.inputs[0].args() + [m.out.scale, m.out.zero_point], [], name=self._name(rw, m.node, op), attrs=attrs, domain=MS)


class _Movement(_QRule):
    """Data movement: the same op on the integers, when input and output share scale and zero point."""

    ops = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Resize", "Slice", "Gather")

    def check(self, rw: Rewriter, node: Node) -> _QDQ | str:
        if node.op == "MaxPool" and len([t for t in node.outputs if t.name]) > 1:
            return "MaxPool with indices"
        m = _around(rw.graph, node, [0], per_tensor=(0,))
        if isinstance(m, str):
            return m
        x, y = m.inputs[0], m.out
        same = np.array_equal(x.scale_value, y.scale_value) and np.array_equal(x.zp_value, y.zp_value) and x.zp_value.dtype == y.zp_value.dtype
        if not same:
            return "input and output quantization parameters differ"
        if node.op == "Resize" and node.attrs.get("mode", "nearest") != "nearest":
            return "linear Resize on integers rounds differently from QDQ"
        return m

    def build(self, rw: Rewriter, m: _QDQ) -> Node:
        inputs = [m.inputs[0].value] + list(m.node.inputs[1:])
        return ir.make_node(m.node.op, inputs, [], name=self._name(rw, m.node, m.node.op), attrs=dict(m.node.attrs))


class _Unsupported(Rule):
    """Ops in a QDQ region that no QLinear form serves: always refused, with the reason."""

    ops = ("ConvTranspose", "Split")
    REASONS: ClassVar[dict[str, str]] = {
        "ConvTranspose": "no QLinearConvTranspose kernel in onnxruntime's CPU provider (kept QDQ)",
        "Split": "Split has several outputs (kept in QDQ form)",
    }

    def match(self, rw: Rewriter, node: Node) -> str | None:
        return self.REASONS[node.op] if node.outputs and _reads_dequantized(node) else None

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        raise AssertionError("_Unsupported never matches")


@register_pass("convert-qlinear")
class ConvertQLinear(RewritePass[EmptyConfig]):
    """Rewrite DQ → Op → Q patterns into QLinear / integer ops (QOperator format)."""

    counter = "converted"
    skip_kept = "qdq"

    def rules(self) -> Sequence[Rule]:
        return [_Conv(), _MatMul(), _Gemm(), _Binary(), _Concat(), _Unary(), _Movement(), _Unsupported()]

    def after(self, model: Model, counts: dict[str, int]) -> None:
        """Declare onnxruntime's contrib domain when a converted node lives in it."""
        if counts and any(n.domain == MS for n in ir.iter_nodes(model.graph)):
            model.set_opset(MS, 1)

    def summarize(self, counts: dict[str, int], refused: dict[str, str]) -> dict[str, Any]:
        """``converted`` (and per source op) and ``kept_qdq``: the nodes recorded as kept in QDQ form."""
        stats = super().summarize(counts, refused)
        del stats["refused"]
        return {**stats, "kept_qdq": len(refused)}
