"""Weight-only block quantization: the maths (hypothesis) and the pass against onnxruntime fp32."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper, numpy_helper

from models import build
from onnxq import PassContext, PassManager, PreconditionError, ir, make_pass
from onnxq.errors import ConfigError
from onnxq.passes.quantization import _blockwise as bw
from onnxq.runtime import make_session, run_session
from tests.helpers import checked, cosine, model_of, op_count, random_feeds, run, vi

FAST = settings(max_examples=60, deadline=None)
RNG = np.random.default_rng(0)
FEEDS_DIMS = {"batch": 2, "seq": 16, "N": 4}

# -- the maths -----------------------------------------------------------------------------------

weights = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
    elements=st.floats(-1e3, 1e3, width=32, allow_nan=False),
)


@FAST
@given(bits=st.sampled_from([2, 4, 8]), codes=hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=17), elements=st.integers(0, 255)))
def test_pack_unpack_round_trip(bits: int, codes: np.ndarray) -> None:
    codes = codes % (1 << bits)
    packed = bw.pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape[-1] == -(-codes.shape[-1] * bits // 8)
    np.testing.assert_array_equal(bw.unpack_codes(packed, bits, codes.shape[-1]), codes)


def test_packing_is_low_nibble_first() -> None:
    np.testing.assert_array_equal(bw.pack_codes(np.array([1, 2, 3]), 4), [0x21, 0x03])


@FAST
@given(w=weights, bits=st.sampled_from([4, 8]), symmetric=st.booleans(), block=st.sampled_from([16, 32]))
def test_rtn_error_at_most_half_a_step(w: np.ndarray, bits: int, symmetric: bool, block: int) -> None:
    bq = bw.quantize_blockwise(w, bw.BlockGrid(block, bits, symmetric))
    qmin, qmax = bw.qrange(bits, symmetric)
    assert bq.codes.min() >= qmin and bq.codes.max() <= qmax
    step = np.repeat(bq.scale.T, block, axis=0)[: w.shape[0]]  # [K, N], scale of each weight
    err = np.abs(bq.dequantize() - w)
    assert (err <= step / 2 * (1 + 1e-5) + 1e-30).all()
    assert (bq.dequantize()[w == 0] == 0).all()  # zero (and the padding) is exact


@FAST
@given(w=weights, bits=st.sampled_from([4, 8]), symmetric=st.booleans())
def test_mse_search_never_worse_than_rtn(w: np.ndarray, bits: int, symmetric: bool) -> None:
    blocks = bw.to_blocks(w, 16)
    ratios = bw.search_ratios(blocks, bits, symmetric, min_ratio=0.5, steps=11)
    assert ratios.shape == blocks.shape[:-1] and ((ratios >= 0.5) & (ratios <= 1)).all()

    def block_errors(ratio: np.ndarray | float) -> np.ndarray:
        s, z = bw.block_qparams(blocks, bits, symmetric, ratio)
        return np.square(bw.dequantize_blocks(bw.quantize_blocks(blocks, s, z, bits, symmetric), s, z) - blocks).sum(-1)

    assert (block_errors(ratios) <= block_errors(1.0) * (1 + 1e-6) + 1e-12).all()  # block by block
    bq = bw.quantize_blockwise(w, bw.BlockGrid(16, bits, symmetric, search=True, min_ratio=0.5, steps=11))
    assert bq.mse <= bq.mse_rtn * (1 + 1e-6) + 1e-12


@FAST
@given(s=hnp.arrays(np.float32, st.integers(1, 20), elements=st.floats(0, 1e5, width=32)))
def test_float16_scales_round_up_and_stay_positive(s: np.ndarray) -> None:
    r = bw.representable_scale(s, np.float16)
    assert (r >= np.minimum(s, 65504)).all() and (r > 0).all()
    np.testing.assert_array_equal(r.astype(np.float16).astype(np.float32), r)


def test_all_zero_block_is_exact_and_searched_weights_improve() -> None:
    assert bw.quantize_blockwise(np.zeros((32, 3), np.float32), bw.BlockGrid(32, 4, False)).dequantize().max() == 0
    w = RNG.standard_t(3, (256, 64)).astype(np.float32)  # heavy tails: clipping pays
    bq = bw.quantize_blockwise(w, bw.BlockGrid(32, 4, False, search=True))
    assert bq.mse < 0.98 * bq.mse_rtn


# -- the pass ------------------------------------------------------------------------------------


def quantize(src: onnx.ModelProto, **options: object) -> tuple[ir.Model, bool, dict]:
    """Run the pass; stats carry its skip records as ``skipped`` {node: reason}."""
    ctx = PassContext()
    res = PassManager([make_pass("quantize-weights-blockwise", options)], check=True).run(ir.load(src), ctx)
    stats = {**res.records[-1].stats, "skipped": {s.node: s.reason for s in ctx.skips}}
    return checked(res.model), res.records[-1].modified, stats






def init_bytes(model: ir.Model | onnx.ModelProto, names: set[str] | None = None) -> int:
    proto = model if isinstance(model, onnx.ModelProto) else ir.to_proto(model)
    return sum(len(t.raw_data) for t in proto.graph.initializer if names is None or t.name in names)


def test_transformer_int4_matmulnbits_structure_size_and_accuracy(transformer: onnx.ModelProto, transformer_ref: tuple) -> None:
    model, modified, stats = quantize(transformer)
    assert modified and stats["quantized_by_op"] == {"MatMul": 6}
    assert op_count(model, "MatMulNBits") == 6 and op_count(model, "MatMul") == 2  # QK^T and probs x V stay float
    assert model.opsets[ir.MS_DOMAIN] == 1
    assert all("activation x activation" in r for r in stats["skipped"].values()) and len(stats["skipped"]) == 2
    node = next(n for n in model.graph.nodes if n.op == "MatMulNBits" and n.attrs["N"] == 256)
    b, scales, zp = (ir.constant_array(t) for t in node.inputs[1:4])
    assert node.domain == ir.MS_DOMAIN and node.attrs["K"] == 64 and node.attrs["bits"] == 4
    assert b.dtype == np.uint8 and b.shape == (256, 2, 16)  # [N, K/32, 32*4/8]
    assert scales.dtype == np.float32 and scales.shape == (256, 2) and zp.shape == (256, 1)
    # MatMul weights shrink to <= 0.2x (int4 codes + one float scale and a nibble zero point per 32).
    mm_weights = {n.inputs[1].name for n in ir.load(transformer).graph.nodes if n.op == "MatMul" and ir.is_constant(n.inputs[1])}
    new = {t.name for n in model.graph.nodes if n.op == "MatMulNBits" for t in n.inputs[1:]}
    assert init_bytes(model, new) <= 0.2 * init_bytes(transformer, mm_weights)
    assert stats["weight_bytes_after"] == init_bytes(model, new)
    feeds, ref = transformer_ref
    assert cosine(ref[0], run(model, feeds)[0]) >= 0.99
    _, again, _ = quantize(ir.to_proto(model))
    assert not again


def test_transformer_int8_is_nearly_exact(transformer: onnx.ModelProto, transformer_ref: tuple) -> None:
    model, _, stats = quantize(transformer, bits=8, symmetric=True)
    node = next(n for n in model.graph.nodes if n.op == "MatMulNBits")
    assert len(node.inputs) == 3  # symmetric: zero points omitted (onnxruntime's default 128)
    feeds, ref = transformer_ref
    assert cosine(ref[0], run(model, feeds)[0]) >= 0.9999


def test_mlp_int4_file_and_mse_search(transformer: onnx.ModelProto) -> None:
    src = build("mlp", in_features=64, hidden=(128, 128))
    model, _, rtn = quantize(src)
    assert rtn["skipped"] == {"head/fc/matmul": "N=10 < min_n=16"}
    mm_bytes = init_bytes(src, {"layer1/fc/weight", "layer2/fc/weight"})
    new = {t.name for n in model.graph.nodes if n.op == "MatMulNBits" for t in n.inputs[1:]}
    assert init_bytes(model, new) <= 0.2 * mm_bytes
    _, _, searched = quantize(src, scale_search="mse")
    assert searched["mse_rtn"] == pytest.approx(rtn["mse"]) and searched["mse"] < searched["mse_rtn"]
    assert 0 < searched["mse_improvement"] < 1
    feeds = random_feeds(src, dims=FEEDS_DIMS)
    assert cosine(run(src, feeds)[0], run(model, feeds)[0]) >= 0.98


def test_qdq_format_needs_opset_21(transformer: onnx.ModelProto, transformer_ref: tuple) -> None:
    with pytest.raises(PreconditionError, match="upgrade-opset.*target=21"):
        quantize(transformer, format="qdq")
    model, modified, _ = quantize(transformer, format="qdq", upgrade_opset=True)
    assert modified and model.opset == 21 and op_count(model, "DequantizeLinear") == 6 and op_count(model, "MatMul") == 8
    dq = next(n for n in model.graph.nodes if n.op == "DequantizeLinear")
    q, scale, zp = (ir.constant_array(t) for t in dq.inputs)
    assert q.dtype == ml_dtypes.uint4 and zp.dtype == ml_dtypes.uint4 and dq.attrs == {"axis": 0, "block_size": 32}
    assert scale.shape == (q.shape[0] // 32, q.shape[1])
    feeds, ref = transformer_ref
    assert cosine(ref[0], run(model, feeds)[0]) >= 0.99


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq"])
def test_block_size_not_dividing_k_is_exact_against_numpy(fmt: str) -> None:
    w = RNG.standard_normal((40, 24)).astype(np.float32)  # K = 40, block 32: one full and one partial block
    src = model_of([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 3, 40])], [vi("y", [2, 3, 24])], [numpy_helper.from_array(w, "w")], opset=21)
    model, modified, _ = quantize(src, format=fmt, accuracy_level=0)
    assert modified
    x = RNG.standard_normal((2, 3, 40)).astype(np.float32)
    expected = x @ bw.quantize_blockwise(w, bw.BlockGrid(32, 4, False)).dequantize()
    # Optimizations off: onnxruntime would otherwise fuse DQ + MatMul into MatMulNBits with its
    # default accuracy_level 4 (A quantized to int8), which is not what we check here.
    sess = make_session(model, optimization="disable")
    np.testing.assert_allclose(run_session(sess, {"x": x})[0], expected, atol=1e-4)
    if fmt == "qdq":
        dq = next(n for n in model.graph.nodes if n.op == "DequantizeLinear")
        assert ir.constant_array(dq.inputs[1]).shape == (2, 24)  # ceil(40 / 32) blocks, last one partial


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq"])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_alpha_beta_trans_b(fmt: str, trans_b: int) -> None:
    w = RNG.standard_normal((24, 64) if trans_b else (64, 24)).astype(np.float32)
    src = model_of(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=trans_b, alpha=0.5, beta=2.0)],
        [vi("x", [3, 64])],
        [vi("y", [3, 24])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(RNG.standard_normal(24).astype(np.float32), "c")],
        opset=21,
    )
    model, modified, stats = quantize(src, format=fmt, bits=8, accuracy_level=0)
    assert modified and stats["quantized_by_op"] == {"Gemm": 1}
    assert op_count(model, "MatMulNBits" if fmt == "matmulnbits" else "DequantizeLinear") == 1
    feeds = {"x": RNG.standard_normal((3, 64)).astype(np.float32)}
    assert cosine(run(src, feeds)[0], run(model, feeds)[0]) >= 0.9999


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq"])
def test_embedding_gather(fmt: str, transformer: onnx.ModelProto, transformer_ref: tuple) -> None:
    model, _, stats = quantize(transformer, format=fmt, include_gather=True, upgrade_opset=True)
    assert stats["quantized_by_op"] == {"Gather": 2, "MatMul": 6}
    assert "not a constant embedding table" in stats["skipped"]["embeddings/seq_len"]
    if fmt == "matmulnbits":
        assert op_count(model, "GatherBlockQuantized") == 2
        gbq = next(n for n in model.graph.nodes if n.op == "GatherBlockQuantized")
        assert ir.constant_array(gbq.inputs[0]).dtype == ml_dtypes.uint4 and ir.constant_array(gbq.inputs[2]).shape == (1000, 2)
    else:
        assert op_count(model, "DequantizeLinear") == 8
    feeds, ref = transformer_ref
    assert cosine(ref[0], run(model, feeds)[0]) >= 0.99


def test_shared_weight_quantized_once_and_float16_weights() -> None:
    w = RNG.standard_normal((64, 32)).astype(np.float32)
    src = model_of(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("MatMul", ["x", "w"], ["z"])],
        [vi("x", [2, 64])],
        [vi("y", [2, 32]), vi("z", [2, 32])],
        [numpy_helper.from_array(w, "w")],
    )
    model, _, stats = quantize(src)
    assert stats["quantized_by_op"] == {"MatMul": 2} and len(ir.to_proto(model).graph.initializer) == 3
    half = PassManager([make_pass("convert-float16", {"storage_only": False, "keep_io_types": False})]).run(ir.load(src)).model
    model16, modified, _ = quantize(ir.to_proto(half))
    node = next(n for n in model16.graph.nodes if n.op == "MatMulNBits")
    assert modified and ir.constant_array(node.inputs[2]).dtype == np.float16
    x = RNG.standard_normal((2, 64)).astype(np.float32)
    assert cosine(run(src, {"x": x})[0], run(model16, {"x": x.astype(np.float16)})[0].astype(np.float32)) >= 0.99


def test_nothing_to_quantize_is_unmodified_with_reasons() -> None:
    src = model_of([helper.make_node("MatMul", ["a", "b"], ["y"])], [vi("a", [2, 64]), vi("b", [64, 32])], [vi("y", [2, 32])], [])
    _, modified, stats = quantize(src)
    assert not modified and "activation x activation" in stats["skipped"]["y"]
    _, modified, stats = quantize(build("mlp"), exclude_names=["layer1/fc/matmul", "layer2/fc/weight"])
    assert not modified and set(stats["skipped"].values()) == {"excluded by name (exclude_names)", "N=10 < min_n=16"}


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="block_size"):
        make_pass("quantize-weights-blockwise", {"block_size": 48})
    with pytest.raises(ConfigError, match="search_min_ratio"):
        make_pass("quantize-weights-blockwise", {"search_min_ratio": 1.5})
