"""AWQ weight-only rounding: the scale search, where ``1 / s`` goes, and ``algorithm="awq"`` on onnxruntime.

Margins (measured, seeded): with a few salient input channels (30x the others) AWQ's held-out output
MSE is about 0.25x round-to-nearest's (0.2-0.3x with the weighted clip search against RTN's plain
one), asserted <= 0.5x; through the graph, folded into a LayerNorm / RMSNorm or an inserted Mul,
about 0.26x (asserted <= 0.4x), folded into a preceding MatMul about 0.61x (asserted <= 0.75x: that
MatMul is quantized too and its own input has no salient channel); on the transformer builder (no
salient channels) AWQ is asserted not worse than RTN beyond noise (held-out cosine loss <= 1.05x).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxq import PassContext, PassManager, ir, make_pass
from onnxq.api import convert
from onnxq.passes.quantization import _blockwise as bw
from onnxq.passes.quantization._awq import alpha_grid, apply_scales, awq_scales, search_alpha
from onnxq.passes.quantization._weight_calibration import _weight_readers
from tests.helpers import checked, op_count, random_feeds, run, vi

FEEDS_DIMS = {"batch": 2, "seq": 16}
K, N, ROWS = 128, 64, 16
FIXED = np.random.default_rng(0)
GAIN = np.exp(FIXED.standard_normal(K) * 0.3)
SALIENT = FIXED.choice(K, 4, replace=False)
GAIN[SALIENT] *= 30.0  # a few salient channels, as in LLM / BERT activations
W = (FIXED.standard_normal((K, N)) * 0.05).astype(np.float32)


def rows(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, K)) * GAIN).astype(np.float32)


# -- the maths ----------------------------------------------------------------------------------


def test_scales_are_normalized_and_alpha_zero_is_plain_rounding() -> None:
    a = np.abs(rows(512, 1)).mean(axis=0)
    np.testing.assert_array_equal(awq_scales(a, 0.0), np.ones(K))
    s = awq_scales(a, 0.5)
    assert s.max() * s.min() == pytest.approx(1.0) and np.argmax(s) in SALIENT
    assert alpha_grid(20)[0] == 0 and alpha_grid(20)[-1] == 1 and len(alpha_grid(20)) == 21


@pytest.mark.parametrize("block", [32, 128])
def test_search_protects_salient_channels(block: int) -> None:
    calib, held = rows(2048, 1), rows(2048, 2)

    def quantize(w: np.ndarray) -> np.ndarray:
        return bw.quantize_blockwise(w, bw.BlockGrid(block, 4, False)).dequantize()

    choice = search_alpha(calib[:512], np.abs(calib).mean(axis=0), [W], quantize, alpha_grid(20))
    assert 0 < choice.alpha < 1 and choice.loss < choice.loss_plain
    mse = lambda q: float(np.square(held @ (q - W)).mean())  # noqa: E731
    s = choice.scales[:, None].astype(np.float32)
    assert mse(quantize(W * s) / s) <= 0.5 * mse(quantize(W))
    weights = np.square(calib).mean(axis=0) / choice.scales**2  # clip search weighted by E[(x/s)²]
    clipped = bw.quantize_blockwise(W * s, bw.BlockGrid(block, 4, False, search=True), importance=weights).dequantize() / s
    assert mse(clipped) <= 0.5 * mse(bw.quantize_blockwise(W, bw.BlockGrid(block, 4, False, search=True)).dequantize())
    flat = search_alpha(calib[:512], np.ones(K), [W], quantize, alpha_grid(20))  # equal magnitudes: s = 1 for every α
    assert flat.alpha == 0 and flat.loss == flat.loss_plain


# -- where 1 / s goes ---------------------------------------------------------------------------


def graph_model(kind: str) -> onnx.ModelProto:
    """x → [producer] → t → MatMul(W) → y; ``kind`` picks the producer of ``t`` and its other readers."""
    gamma = np.ones(K, np.float32)
    gamma[SALIENT] = 30.0
    inits = [numpy_helper.from_array(W, "w"), numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(np.full(K, 0.1, np.float32), "beta")]
    tail = [helper.make_node("MatMul", ["t", "w"], ["y"])]
    opset = 17
    if kind == "layernorm":
        nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["t"], axis=-1)]
    elif kind == "rmsnorm":
        nodes, opset = [helper.make_node("RMSNormalization", ["x", "gamma"], ["t"], axis=-1)], 23
    elif kind == "residual":  # post-LN: the LayerNorm output also feeds a residual Add
        nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["t"], axis=-1)]
        inits[0] = numpy_helper.from_array(W[:, :K] if N >= K else np.tile(W, (1, K // N)), "w")
        tail += [helper.make_node("Add", ["y", "t"], ["z"])]
    else:  # matmul: t = x @ W1 + b1, W1 columns carrying the salient channels
        w1 = (FIXED.standard_normal((K, K)) * 0.1 * gamma[None, :]).astype(np.float32)
        inits += [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.full(K, 0.05, np.float32), "b1")]
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["t"])]
    out = "z" if kind == "residual" else "y"
    width = K if kind == "residual" else N
    graph = helper.make_graph(nodes + tail, "g", [vi("x", ["b", ROWS, K])], [vi(out, ["b", ROWS, width])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset >= 23 else 8
    onnx.checker.check_model(m, full_check=True)
    return m


FOLDS = {"layernorm": "norm", "rmsnorm": "norm", "residual": "mul", "matmul": "matmul"}


def feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    return [{"x": np.random.default_rng([seed, i]).standard_normal((4, ROWS, K)).astype(np.float32)} for i in range(n)]


@pytest.mark.parametrize("kind", list(FOLDS))
def test_folding_one_over_s_is_exact_in_float(kind: str) -> None:
    src = graph_model(kind)
    model = ir.load(src)
    mm = next(n for n in model.graph.nodes if n.op == "MatMul" and n.inputs[1].name == "w")
    s = np.exp(np.random.default_rng(3).standard_normal(K))
    how, folded_into = apply_scales(model.graph, mm.inputs[0], [mm], s, ir.names(model), _weight_readers(model))
    assert how == FOLDS[kind] and (folded_into is not None) == (kind == "matmul")
    assert op_count(model, "Mul") == (1 if kind == "residual" else 0)
    for f in feeds(2, 4):
        np.testing.assert_allclose(run(checked(model), f)[0], run(src, f)[0], rtol=1e-4, atol=1e-4)


def awq(src: onnx.ModelProto, data: list | None, **options: object) -> tuple[ir.Model, dict]:
    ctx = PassContext(calibration_data=data)
    res = PassManager([make_pass("quantize-weights-blockwise", options)], check=True).run(ir.load(src), ctx)
    return checked(res.model), res.records[-1].stats


@pytest.mark.parametrize("kind", list(FOLDS))
def test_pass_beats_round_to_nearest_through_the_graph(kind: str) -> None:
    src = graph_model(kind)
    fmt = "qdq" if kind == "rmsnorm" else "matmulnbits"
    options = {"scale_search": "none", "format": fmt, "accuracy_level": 0}
    rtn, _ = awq(src, None, **options)
    model, stats = awq(src, feeds(8, 5), algorithm="awq", **options)
    assert stats["awq_folds"].get(FOLDS[kind]) == 1 and stats["output_error_ratio"] < 1
    held = feeds(4, 6)
    err = lambda m: np.mean([np.square(run(m, f)[0] - run(src, f)[0]).mean() for f in held])  # noqa: E731
    assert err(model) <= (0.75 if kind == "matmul" else 0.4) * err(rtn)  # the chain's first MatMul sees no salient channel
    assert op_count(model, "MatMulNBits" if fmt == "matmulnbits" else "DequantizeLinear") == (2 if kind == "matmul" else 1)


def test_same_inputs_give_the_same_bytes_and_clipping_keeps_the_gain() -> None:
    src = graph_model("layernorm")
    runs = [awq(src, feeds(4, 5), algorithm="awq")[0] for _ in range(2)]
    assert ir.to_proto(runs[0]).SerializeToString() == ir.to_proto(runs[1]).SerializeToString()
    rtn, _ = awq(src, None, scale_search="mse")
    held = feeds(4, 6)
    err = lambda m: np.mean([np.square(run(m, f)[0] - run(src, f)[0]).mean() for f in held])  # noqa: E731
    assert err(runs[0]) <= 0.4 * err(rtn)  # awq + clip search (the conversion default) vs rtn + clip search


def test_transformer_awq_is_not_worse_than_rtn(transformer: onnx.ModelProto, transformer_loss: Callable[[ir.Model], float]) -> None:
    calib = [random_feeds(transformer, seed=i, dims=FEEDS_DIMS) for i in range(8)]
    rtn = convert(transformer, mode="weight-only", block_size=128)
    result = convert(transformer, calib, mode="weight-only", block_size=128, algorithm="awq", weight_format="qdq")
    stats = next(p for p in result.report.to_dict()["passes"] if p["pass"] == "quantize-weights-blockwise")["stats"]
    assert stats["calibrated_layers"] == 6 and stats["output_error_ratio"] <= 1.0
    assert result.model.opset == 21 and op_count(result.model, "DequantizeLinear") == 6
    assert transformer_loss(result.model) <= 1.05 * transformer_loss(rtn.model)
