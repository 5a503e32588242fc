"""Every conversion mode inside If branches and Loop/Scan bodies, on the three control-flow builders.

Each builder is converted in every mode (static QDQ, QOperator, dynamic, weight-only, fp16) once per
module; each result passes the full ONNX checker, loads and runs in onnxruntime, stays close to the
fp32 model (tolerances below), converts nodes *inside* the bodies, keeps every body output local and
the bodies' interface types consistent, and its report names every body node left float.

Tolerances (cosine, max |diff| against fp32 on 4 unseen inputs per builder), measured with margin on
this AVX2 CPU with onnxq's default 7-bit weights: static int8 within ~one quantization step of the
logits (cosine >= 0.999, <= 0.15); dynamic int8 (>= 0.999, <= 0.1); weight-only int4 blocks of 32
(>= 0.98, <= 0.6); fp16 storage (>= 0.99999, <= 5e-3). QOperator vs QDQ: nearly bit-exact (<= 1e-3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import onnxq
from models import build
from onnxq import ir
from tests.helpers import cosine, invoke, run
from tests.subgraphs._cases import BUILDERS, feeds, samples

MODES = ("static", "qoperator", "dynamic", "weight-only", "fp16")
TOLERANCE = {"static": (0.999, 0.15), "qoperator": (0.999, 0.15), "dynamic": (0.999, 0.1), "weight-only": (0.98, 0.6), "fp16": (0.99999, 5e-3)}
#: Ops a mode targets inside bodies (any of them left unconverted must be in the report).
TARGETS = {
    "static": {"Conv", "MatMul", "Gemm"},
    "qoperator": {"Conv", "MatMul", "Gemm"},
    "dynamic": {"MatMul", "Gemm", "LSTM", "Conv"},
    "weight-only": {"MatMul", "Gemm"},
    "fp16": {"Conv", "MatMul", "Gemm", "LSTM", "Add", "Relu", "Tanh"},
}
#: What a converted node inside a body looks like, per mode.
CONVERTED = {
    "qoperator": {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat"},
    "dynamic": {"DynamicQuantizeMatMul", "DynamicQuantizeLSTM"},
    "weight-only": {"MatMulNBits"},
}


def _options(mode: str) -> dict[str, Any]:
    if mode in ("static", "qoperator"):
        return {"mode": "static", "format": "qoperator" if mode == "qoperator" else "qdq", "tune": False}
    return {"mode": mode}


@pytest.fixture(scope="module")
def converted() -> dict[tuple[str, str], onnxq.ConversionResult]:
    """(builder, mode) → the conversion (done once for the module)."""
    out = {}
    for name in BUILDERS:
        for mode in MODES:
            data = samples(name, 8) if mode in ("static", "qoperator") else None
            out[(name, mode)] = onnxq.convert(build(name), data, **_options(mode))
    return out


def _body_nodes(model: ir.Model) -> list[tuple[ir.Graph, ir.Node]]:
    return [(g, n) for g in ir.iter_graphs(model.graph) if g is not model.graph for n in g.nodes]


def _reads_dequantized(node: ir.Node) -> bool:
    return any(ir.producer(t) is not None and ir.producer(t).op == "DequantizeLinear" for t in node.inputs[1:2])


def _converted(mode: str, node: ir.Node) -> bool:
    if mode == "static":
        return _reads_dequantized(node)
    if mode == "fp16":
        return any(ir.producer(t) is not None and ir.producer(t).op == "Cast" and ir.is_constant(ir.producer(t).inputs[0]) for t in node.inputs)
    return node.op in CONVERTED[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", BUILDERS)
def test_converted_model_checks_runs_and_stays_close_to_fp32(converted: dict, name: str, mode: str) -> None:
    result = converted[(name, mode)]
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    min_cos, max_abs = TOLERANCE[mode]
    src = build(name)
    for seed in range(100, 104):
        f = feeds(name, seed)
        for ref, out in zip(run(src, f), run(result.model, f), strict=True):
            assert out.shape == ref.shape
            assert cosine(ref, out) >= min_cos, (seed, cosine(ref, out))
            assert float(np.abs(ref - out).max()) <= max_abs, (seed, float(np.abs(ref - out).max()))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", BUILDERS)
def test_nodes_inside_bodies_are_converted_and_the_rest_reported(converted: dict, name: str, mode: str) -> None:
    result = converted[(name, mode)]
    inside = [n for _, n in _body_nodes(result.model)]
    assert any(_converted(mode, n) for n in inside if n.op in TARGETS[mode] | CONVERTED.get(mode, set())), mode
    reported = {s.node: s.reason for s in [*result.report.float_nodes, *result.report.qdq_nodes]}
    left = [n for n in inside if n.op in TARGETS[mode] and not _converted(mode, n)]
    for node in left:
        assert reported.get(node.name), f"{node.op} {node.name} left float without a reason in the report"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", BUILDERS)
def test_body_outputs_stay_local_and_interfaces_keep_their_types(converted: dict, name: str, mode: str) -> None:
    model = converted[(name, mode)].model
    for g in ir.iter_graphs(model.graph):
        if g is model.graph:
            continue
        local = {id(t) for n in g.nodes for t in n.outputs} | {id(t) for t in g.inputs}
        assert all(id(t) in local for t in g.outputs), f"{g.name} returns an outer value directly"
    proto = ir.to_proto(model)
    for node in proto.graph.node:
        graphs = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
        elem = lambda vis: [vi.type.tensor_type.elem_type for vi in vis]  # noqa: E731
        if node.op_type == "If":
            assert elem(graphs["then_branch"].output) == elem(graphs["else_branch"].output)
        if node.op_type == "Loop":  # carried state: same type at the body's input and output
            body = graphs["body"]
            assert elem(body.input[2:]) == elem(body.output[1 : len(body.input) - 1])
        if node.op_type == "Scan":
            body = graphs["body"]
            assert elem(body.input[:1]) == elem(body.output[:1])
    names = [n.name for g in ir.iter_graphs(model.graph) for n in g.nodes]
    assert len(names) == len(set(names)), "node names must stay unique across scopes"


def test_qoperator_matches_qdq_nearly_bit_exactly(converted: dict) -> None:
    for name in BUILDERS:
        for seed in range(100, 103):
            f = feeds(name, seed)
            for a, b in zip(run(converted[(name, "static")].model, f), run(converted[(name, "qoperator")].model, f), strict=True):
                assert float(np.abs(a - b).max()) <= 1e-3, name


def _branch_nodes(model: ir.Model, op: str) -> list[ir.Node]:
    """The ``op`` nodes of the streaming model's two If branches."""
    return [n for _, n in _body_nodes(model) if n.op == op and n.name.startswith(("wideband/", "narrowband/"))]


def test_an_outer_weight_read_by_both_branches_is_quantized_once(converted: dict) -> None:
    static = converted[("streaming-if", "static")].model
    head = [n for _, n in _body_nodes(static) if n.op == "MatMul" and n.name.endswith("head/matmul")]
    assert len(head) == 2
    stored = [ir.producer(n.inputs[1]).inputs[0] for n in head]  # DQ(int8 weight) in each branch
    assert stored[0] is stored[1] and ir.is_constant(stored[0])
    dynamic = converted[("streaming-if", "dynamic")].model
    lstms = _branch_nodes(dynamic, "DynamicQuantizeLSTM")
    assert len(lstms) == 2 and lstms[0].inputs[1] is lstms[1].inputs[1] and lstms[0].inputs[2] is lstms[1].inputs[2]
    matmuls = _branch_nodes(dynamic, "DynamicQuantizeMatMul")
    assert len(matmuls) == 2 and matmuls[0].inputs[1] is matmuls[1].inputs[1]
    nbits = _branch_nodes(converted[("streaming-if", "weight-only")].model, "MatMulNBits")
    assert len(nbits) == 2 and nbits[0].inputs[1] is nbits[1].inputs[1]
    half = _branch_nodes(converted[("streaming-if", "fp16")].model, "LSTM")
    stored = [ir.producer(n.inputs[1]).inputs[0] for n in half]  # Cast(float16 W) in each branch
    assert stored[0] is stored[1] and ir.const_value(stored[0]).dtype == np.float16


def test_qdq_nodes_live_where_the_tensor_lives_and_readers_dequantize_locally(converted: dict) -> None:
    scan = converted[("scan-rnn", "static")].model
    cell = next(g for g in ir.iter_graphs(scan.graph) if g is not scan.graph)
    q = [n for n in cell.nodes if n.op == "QuantizeLinear"]
    assert {n.inputs[0].name for n in q} >= {"rnn/cell/h", "rnn/cell/x_t"}  # body inputs quantized in the body
    stream = converted[("streaming-if", "static")].model
    for g, conv in _body_nodes(stream):
        if conv.op == "Conv" and conv.name.endswith("wideband/conv1"):
            dq = ir.producer(conv.inputs[0])  # 'features' is quantized outside, dequantized inside
            assert dq.op == "DequantizeLinear" and any(n is dq for n in g.nodes)
            assert not any(n is ir.producer(dq.inputs[0]) for n in g.nodes)


def test_fp16_keeps_the_loop_state_float32_and_stores_body_weights_in_half(converted: dict) -> None:
    model = converted[("loop-decoder", "fp16")].model
    loop = next(n for n in model.graph.nodes if n.op == "Loop")
    body = loop.attrs["body"]
    assert np.dtype(body.inputs[2].dtype) == np.dtype(body.outputs[1].dtype) == np.float32
    halves = [ir.producer(t).inputs[0] for n in body.nodes for t in n.inputs if ir.producer(t) is not None and ir.producer(t).op == "Cast"]
    assert any(ir.is_constant(h) and ir.const_value(h).dtype == np.float16 for h in halves)


# -- the regressions of the issue ------------------------------------------------------------------------


def test_static_convert_of_the_streaming_if_model_succeeds_through_the_api() -> None:
    result = onnxq.convert(build("streaming-if"), samples("streaming-if", 6))
    ir.check(result.model, full=True)
    for seed in (100, 101):  # both branches run
        f = feeds("streaming-if", seed)
        assert all(np.isfinite(o).all() for o in run(result.model, f))


def test_static_convert_of_the_streaming_if_model_succeeds_through_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "streaming_if.onnx"
    onnx.save(build("streaming-if"), str(src))
    data = tmp_path / "data"
    data.mkdir()
    for i, f in enumerate(samples("streaming-if", 6)):
        np.savez(data / f"sample{i}.npz", **f)
    out = tmp_path / "int8.onnx"
    code, stdout, stderr = invoke("convert", str(src), "-o", str(out), "--data", str(data), "--no-tune")
    assert code == 0, stderr
    assert "wrote" in stdout + stderr and "no calibration range" not in stdout + stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    for seed in (100, 101):
        f = feeds("streaming-if", seed)
        for ref, got in zip(run(src, f), run(model, f), strict=True):
            assert cosine(ref, got) >= 0.999


def test_fp16_computing_in_half_inside_a_loop_body_keeps_the_carried_state_float32() -> None:
    src = build("loop-decoder")
    result = onnxq.convert(src, mode="fp16", pass_options={"convert-float16": {"storage_only": False}})
    ir.check(result.model, full=True)
    loop = next(n for n in result.model.graph.nodes if n.op == "Loop")
    body = loop.attrs["body"]
    assert any(n.op == "Gemm" and np.dtype(n.outputs[0].dtype) == np.float16 for n in body.nodes)  # compute in half
    assert np.dtype(body.inputs[2].dtype) == np.dtype(body.outputs[1].dtype) == np.dtype(loop.inputs[2].dtype) == np.float32
    for seed in (100, 101):
        f = feeds("loop-decoder", seed)
        for ref, out in zip(run(src, f), run(result.model, f), strict=True):
            assert cosine(ref, out) >= 0.9999 and float(np.abs(ref - out).max()) <= 0.02
