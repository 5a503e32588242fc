"""convert-qlinear alone: every row of its pattern table, every rule's refusal, numerics.

Conversions start from QDQ models built the way the pipeline builds them: annotate-quantization and
insert-qdq on ranges measured here with onnxruntime (``reduce_range`` left at its default, which
turns 7-bit weights on where this CPU's 8-bit GEMM saturates). Each op sits between quantized
compute ops (``pre``/``side`` before, ``post`` after), as annotate quantizes glue only inside an
int8 region. Refusals start from QDQ graphs written by hand, one per rule reason.

Tolerances: the QOperator model matches the QDQ model within one step of the coarsest activation
quantization in the model (both compute on the same integers; only the kernels' internal rounding
differs), and the float model with cosine >= 0.99.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from onnxq import ir
from onnxq.context import PassContext, Skip
from tests.helpers import cosine, run
from tests.passes.quantization._pass_util import count, load, measured_ranges, ops, parse_with, run_pass, samples, to_qdq

MS = "com.microsoft"
H18 = '<ir_version: 8, opset_import: ["" : 18]>\n'


@dataclass(frozen=True)
class Case:
    """A float model whose node ``op`` must become ``becomes`` (weights seeded, constants given)."""

    text: str
    weights: dict[str, tuple[int, ...]]
    shape: tuple[int, ...]
    becomes: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)


def nchw(op: str, becomes: str, post_in: int = 4, hw: str = "6,6", side: bool = False, **constants: np.ndarray) -> Case:
    """``x`` [1, 4, 6, 6] → pre Conv (and a side Conv ``s``) → ``[op] b = ...`` → post Conv."""
    text = f"g (float[1,4,6,6] x) => (float[1,4,{hw}] y) {{\n [pre] a = Conv (x, w_pre)\n"
    text += " [side] s = Conv (x, w_side)\n" if side else ""
    text += f" {op}\n [post] y = Conv (b, w_post)\n}}"
    weights = {"w_pre": (4, 4, 1, 1), "w_post": (4, post_in, 1, 1), **({"w_side": (4, 4, 1, 1)} if side else {})}
    return Case(H18 + text, weights, (1, 4, 6, 6), becomes, dict(constants))


def rows(op: str, becomes: str, out: str = "2,8", x: str = "2,16", post_in: int = 16, **extra: tuple[int, ...]) -> Case:
    """``x`` (default [2, 16]) → pre MatMul → ``[op] b = ...`` → post MatMul to 8 outputs."""
    text = f"g (float[{x}] x) => (float[{out}] y) {{\n [pre] a = MatMul (x, w_pre)\n {op}\n [post] y = MatMul (b, w_post)\n}}"
    shape = tuple(int(d) for d in x.split(","))
    return Case(H18 + text, {"w_pre": (shape[-1], 16), "w_post": (post_in, 8), **extra}, shape, becomes)


def alone(op: str, becomes: str, **weights: tuple[int, ...]) -> Case:
    """``x`` [2, 16] → ``[op] y = ...`` alone: its float output is the graph output (no Q after it)."""
    return Case(H18 + f"g (float[2,16] x) => (float[2,8] y) {{\n {op}\n}}", weights, (2, 16), becomes)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


#: One case per row of the module docstring's pattern table (data movement: every op it lists).
CONVERSIONS: dict[str, Case] = {
    "Conv+Relu": Case(
        H18 + "g (float[1,3,8,8] x) => (float[1,4,8,8] y) {\n [op] c = Conv <pads=[1,1,1,1]> (x, w, bias)\n [relu] r = Relu (c)\n"
        " [post] y = Conv (r, w_post)\n}",
        {"w": (4, 3, 3, 3), "bias": (4,), "w_post": (4, 4, 1, 1)},
        (1, 3, 8, 8),
        "QLinearConv",
    ),
    "MatMul": rows("[op] b = MatMul (a, w)", "QLinearMatMul", w=(16, 16)),
    "MatMul float output": alone("[op] y = MatMul (x, w)", "MatMulIntegerToFloat", w=(16, 8)),
    "Gemm": rows("[op] b = Gemm <transB=1> (a, w, c)", "QGemm", w=(16, 16), c=(16,)),
    "Gemm float output": alone("[op] y = Gemm <transB=1> (x, w, c)", "QGemm", w=(8, 16), c=(8,)),
    "Add": nchw("[op] b = Add (a, s)", "QLinearAdd", side=True),
    "Mul": nchw("[op] b = Mul (a, s)", "QLinearMul", side=True),
    "Concat": nchw("[op] b = Concat <axis=1> (a, s)", "QLinearConcat", post_in=8, side=True),
    "AveragePool": nchw("[op] b = AveragePool <kernel_shape=[2,2], strides=[2,2]> (a)", "QLinearAveragePool", hw="3,3"),
    "GlobalAveragePool": nchw("[op] b = GlobalAveragePool (a)", "QLinearGlobalAveragePool", hw="1,1"),
    "LeakyRelu": nchw("[op] b = LeakyRelu <alpha=0.1> (a)", "QLinearLeakyRelu"),
    "Sigmoid": nchw("[op] b = Sigmoid (a)", "QLinearSigmoid"),
    "Softmax": rows("[op] b = Softmax <axis=-1> (a)", "QLinearSoftmax"),
    "Transpose": nchw("[op] b = Transpose <perm=[0,1,3,2]> (a)", "Transpose"),
    "Reshape": nchw("[op] b = Reshape (a, shape)", "Reshape", hw="4,9", shape=i64(1, 4, 4, 9)),
    "Flatten": rows("[op] b = Flatten <axis=1> (a)", "Flatten", x="2,3,16", out="2,8", post_in=48),
    "Squeeze": Case(
        H18 + "g (float[1,2,16] x) => (float[2,8] y) {\n [pre] a = MatMul (x, w_pre)\n [op] b = Squeeze (a, axes)\n [post] y = MatMul (b, w_post)\n}",
        {"w_pre": (16, 16), "w_post": (16, 8)},
        (1, 2, 16),
        "Squeeze",
        {"axes": i64(0)},
    ),
    "Unsqueeze": Case(
        H18 + "g (float[2,16] x) => (float[1,2,8] y) {\n [pre] a = MatMul (x, w_pre)\n [op] b = Unsqueeze (a, axes)\n [post] y = MatMul (b, w_post)\n}",
        {"w_pre": (16, 16), "w_post": (16, 8)},
        (2, 16),
        "Unsqueeze",
        {"axes": i64(0)},
    ),
    "MaxPool": nchw("[op] b = MaxPool <kernel_shape=[2,2], strides=[2,2]> (a)", "MaxPool", hw="3,3"),
    "Resize": nchw('[op] b = Resize <mode="nearest"> (a, , scales)', "Resize", hw="12,12", scales=np.array([1, 1, 2, 2], np.float32)),
    "Slice": nchw("[op] b = Slice (a, starts, ends, axes)", "Slice", hw="4,6", starts=i64(1), ends=i64(5), axes=i64(2)),
    "Gather": nchw("[op] b = Gather <axis=1> (a, idx)", "Gather", post_in=2, idx=i64(0, 2)),
}


def qdq_and_qop(case: Case) -> tuple[ir.Model, ir.Model, PassContext, dict]:
    """The case's float model as QDQ (ranges measured on 8 samples) and converted by convert-qlinear."""
    proto = parse_with(case.text, case.weights, constants=case.constants)
    qdq, ctx = to_qdq(load(proto), measured_ranges(proto, samples(case.shape, 8, 0)))
    qop = ir.clone(qdq)
    result = run_pass("convert-qlinear", qop, ctx)
    assert result.modified
    return qdq, result.model, ctx, result.stats


def coarsest_step(model: ir.Model) -> float:
    """The largest activation scale among the model's QuantizeLinear nodes (and QLinear outputs)."""
    steps = []
    for n in ir.iter_nodes(model.graph):
        if n.op == "QuantizeLinear" or n.op.startswith("QLinear") or n.op == "QGemm":
            for t in n.inputs[1:]:
                v = ir.constant_array(t)
                if v is not None and v.dtype == np.float32 and v.size == 1:
                    steps.append(float(v))
    return max(steps)


@pytest.mark.parametrize("row", sorted(CONVERSIONS))
def test_each_pattern_row_becomes_the_op_it_promises(row: str) -> None:
    case = CONVERSIONS[row]
    _, qop, ctx, stats = qdq_and_qop(case)
    op = next(n for n in ir.iter_nodes(qop.graph) if n.name.startswith("op"))
    assert op.op == case.becomes and stats["converted"] >= 1 and stats["kept_qdq"] == 0
    assert not [s for s in ctx.skips if s.pass_name == "convert-qlinear"]
    # it reads the integers directly, and whatever read its float output now reads its integer one
    assert all(ir.producer(t) is None or ir.producer(t).op != "DequantizeLinear" for t in op.inputs)  # type: ignore[union-attr]
    if row == "Conv+Relu":
        assert count(qop, "Relu") == 0  # absorbed: it saturates exactly where the uint8 output does
    assert (qop.opsets.get(MS) == 1) == any(n.domain == MS for n in ir.iter_nodes(qop.graph))


@pytest.mark.parametrize("row", sorted(CONVERSIONS))
def test_qoperator_matches_qdq_within_a_step_and_float_by_cosine(row: str) -> None:
    case = CONVERSIONS[row]
    proto = parse_with(case.text, case.weights, constants=case.constants)
    qdq, qop, _, _ = qdq_and_qop(case)
    step = coarsest_step(qop)
    for feeds in samples(case.shape, 4, 1):
        ref, a, b = run(proto, feeds)[0], run(qdq, feeds)[0], run(qop, feeds)[0]
        assert np.max(np.abs(a - b)) <= 1.01 * step + 1e-6, f"{row}: QOperator vs QDQ {np.max(np.abs(a - b))} > step {step}"
        assert cosine(ref, b) >= 0.99, f"{row}: QOperator vs float cosine {cosine(ref, b):.4f}"


#: Constants of the hand-written QDQ graphs: activation scales s1/s2 with zero point z (uint8),
#: per-channel s4/z4, int8 weights with scale sw and zero point zw.
QDQ_CONSTANTS: dict[str, np.ndarray] = {
    "s1": np.array(0.05, np.float32),
    "s2": np.array(0.1, np.float32),
    "z": np.array(128, np.uint8),
    "s4": np.array([0.05, 0.1, 0.2, 0.4], np.float32),
    "z4": np.full(4, 128, np.uint8),
    "sw": np.array(0.02, np.float32),
    "zw": np.array(0, np.int8),
    "wq": np.arange(-8, 8, dtype=np.int8).reshape(4, 4, 1, 1),
    "wq2": np.arange(-8, 8, dtype=np.int8).reshape(4, 4),
    "c": np.ones(4, np.float32),
    "scales": np.array([1, 1, 2, 2], np.float32),
    "split": np.array([2, 2], np.int64),
}


def qdq_text(inputs: str, outputs: str, body: str, opset: int = 18) -> str:
    """A hand-written QDQ graph: ``x`` dequantized from ``xq`` with (s1, z); ``body`` defines the
    node ``[op]`` and its quantized outputs."""
    return f'<ir_version: 8, opset_import: ["" : {opset}]>\ng ({inputs}) => ({outputs}) {{\n x = DequantizeLinear (xq, s1, z)\n{body}\n}}'


def q_out(t: str, scale: str = "s2") -> str:
    return f" {t}q = QuantizeLinear ({t}, {scale}, z)\n {t}_out = DequantizeLinear ({t}q, {scale}, z)"


U8 = "uint8[1,4,6,6] xq"
#: rule → (graph text, op type, the reason it records).
REFUSALS: dict[str, tuple[str, str, str]] = {
    "Conv: float output": (
        qdq_text(U8, "float[1,4,6,6] m", " w = DequantizeLinear (wq, sw, zw)\n [op] m = Conv (x, w)"),
        "Conv",
        "output is not read by exactly one QuantizeLinear",
    ),
    "MatMul: per-channel input": (
        qdq_text("uint8[2,4] xq", "float[2,4] m_out", " xc = DequantizeLinear <axis=1> (xq, s4, z4)\n w = DequantizeLinear (wq2, sw, zw)\n"
                 " [op] m = MatMul (xc, w)\n" + q_out("m")),
        "MatMul",
        "input 0 is quantized per channel",
    ),
    "Gemm: float bias": (
        qdq_text("uint8[2,4] xq", "float[2,4] m_out", " w = DequantizeLinear (wq2, sw, zw)\n [op] m = Gemm (x, w, c)\n" + q_out("m")),
        "Gemm",
        "input 2 is not dequantized",
    ),
    "Add: per-channel input": (
        qdq_text("uint8[2,4] xq, uint8[2,4] x2q", "float[2,4] m_out", " x2 = DequantizeLinear <axis=1> (x2q, s4, z4)\n [op] m = Add (x, x2)\n" + q_out("m")),
        "Add",
        "input 1 is quantized per channel",
    ),
    "Concat: float input": (
        qdq_text(f"{U8}, float[1,4,6,6] f", "float[1,8,6,6] m_out", " [op] m = Concat <axis=1> (x, f)\n" + q_out("m")),
        "Concat",
        "input 1 is not dequantized",
    ),
    "Softmax: opset 12": (
        qdq_text("uint8[2,4] xq", "float[2,4] m_out", " [op] m = Softmax <axis=1> (x)\n" + q_out("m"), opset=12),
        "Softmax",
        "QLinearSoftmax before opset 13 needs axis = last",
    ),
    "Transpose: other scale": (
        qdq_text(U8, "float[1,4,6,6] m_out", " [op] m = Transpose <perm=[0,1,3,2]> (x)\n" + q_out("m")),
        "Transpose",
        "input and output quantization parameters differ",
    ),
    "Resize: linear": (
        qdq_text(U8, "float[1,4,12,12] m_out", ' [op] m = Resize <mode="linear"> (x, , scales)\n' + q_out("m", "s1")),
        "Resize",
        "linear Resize on integers rounds differently from QDQ",
    ),
    "MaxPool: indices": (
        qdq_text(U8, "float[1,4,3,3] m_out, int64[1,4,3,3] i", " [op] m, i = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x)\n" + q_out("m", "s1")),
        "MaxPool",
        "MaxPool with indices",
    ),
    "ConvTranspose": (
        qdq_text(U8, "float[1,4,6,6] m_out", " w = DequantizeLinear (wq, sw, zw)\n [op] m = ConvTranspose (x, w)\n" + q_out("m")),
        "ConvTranspose",
        "no QLinearConvTranspose kernel in onnxruntime's CPU provider (kept QDQ)",
    ),
    "Split": (
        qdq_text(U8, "float[1,2,6,6] m_out, float[1,2,6,6] n_out", " [op] m, n = Split <axis=1> (x, split)\n" + q_out("m", "s1") + "\n" + q_out("n", "s1")),
        "Split",
        "Split has several outputs (kept in QDQ form)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_rule_refuses_with_its_reason_and_the_node_stays_qdq(case: str) -> None:
    text, op, reason = REFUSALS[case]
    model = load(parse_with(text, constants=QDQ_CONSTANTS))
    before = ir.to_proto(model).SerializeToString()
    ctx = PassContext()
    result = run_pass("convert-qlinear", model, ctx)
    assert not result.modified and result.stats == {"converted": 0, "kept_qdq": 1}
    assert ir.to_proto(result.model).SerializeToString() == before
    assert ctx.skipped("qdq") == [Skip("op", op, reason, "convert-qlinear", "qdq")]


def test_a_mix_converts_what_it_can_and_records_the_rest() -> None:
    """Conv → ConvTranspose → Conv: the Convs become QLinearConv, the ConvTranspose stays QDQ."""
    case = nchw("[op] b = ConvTranspose <strides=[2,2]> (a, w_t)", "", hw="12,12")
    proto = parse_with(case.text, {**case.weights, "w_t": (4, 4, 2, 2)})
    qdq, ctx = to_qdq(load(proto), measured_ranges(proto, samples(case.shape, 8, 0)))
    result = run_pass("convert-qlinear", qdq, ctx)
    assert result.modified and result.stats == {"converted": 2, "converted.Conv": 2, "kept_qdq": 1}
    assert ops(result.model).count("QLinearConv") == 2 and count(result.model, "ConvTranspose") == 1
    assert [(s.node, s.kept) for s in ctx.skipped("qdq")] == [("op", "qdq")]
    feeds = samples(case.shape, 1, 1)[0]
    assert cosine(run(proto, feeds)[0], run(result.model, feeds)[0]) >= 0.99


def test_a_float_model_is_left_alone_without_records() -> None:
    case = CONVERSIONS["Conv+Relu"]
    model = load(parse_with(case.text, case.weights))
    ctx = PassContext()
    result = run_pass("convert-qlinear", model, ctx)
    assert not result.modified and result.stats == {"converted": 0, "kept_qdq": 0} and ctx.skips == []
    assert MS not in result.model.opsets
