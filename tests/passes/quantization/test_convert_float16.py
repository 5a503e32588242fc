"""convert-float16: storage / compute precision, Casts at the boundaries, clamping, onnxruntime numerics."""

from __future__ import annotations

import logging

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import build
from onnxq import PassManager, ir, make_pass
from onnxq.errors import ConfigError
from tests.helpers import checked, cosine, op_count, random_feeds, run

FEEDS_DIMS = {"batch": 2, "seq": 16, "N": 3}


def convert(src: onnx.ModelProto | ir.Model, **options: object) -> tuple[ir.Model, bool, dict]:
    model = ir.load(src)
    res = PassManager([make_pass("convert-float16", options)], check=True).run(model)
    return checked(res.model), res.records[-1].modified, res.records[-1].stats


def float_bytes(proto: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in proto.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16))


def dtypes_of(model: ir.Model, op: str) -> set:
    return {ir.np_dtype(t) if isinstance(t, int) else np.dtype(t) for n in model.graph.nodes if n.op == op for t in [n.inputs[0].dtype] if t is not None}


def test_auto_on_cpu_stores_weights_in_fp16_and_keeps_fp32_compute(transformer: onnx.ModelProto, transformer_ref: tuple) -> None:
    model, modified, stats = convert(transformer)
    assert modified
    # onnxruntime 1.32's CPU provider has no native fp16 MatMul: "auto" degrades to storage-only.
    assert stats["half_nodes"] == 0 and stats["constants_storage_only"] == 20
    proto = ir.to_proto(model)
    inits = {t.name: t for t in proto.graph.initializer}
    assert inits["encoder/layer0/ffn/intermediate/weight"].data_type == TensorProto.FLOAT16
    assert inits["mask/min_value"].data_type == TensorProto.FLOAT  # scalars stay exact (no clamping of -3.4e38)
    assert op_count(model, "Cast") == 1 + 20  # the mask's own Cast + one widening Cast per stored weight
    assert float_bytes(proto) <= 0.501 * float_bytes(transformer)
    feeds, ref = transformer_ref
    assert cosine(ref[0], run(model, feeds)[0]) >= 0.999
    assert [i.type.tensor_type.elem_type for i in proto.graph.output] == [TensorProto.FLOAT]


def test_file_halves_on_a_wider_transformer() -> None:
    src = build("transformer", hidden=128)
    model, _, _ = convert(src)
    assert ir.to_proto(model).ByteSize() <= 0.51 * src.ByteSize()


def test_full_fp16_compute_loads_on_cpu_with_io_kept(transformer: onnx.ModelProto, transformer_ref: tuple) -> None:
    model, modified, stats = convert(transformer, storage_only=False)
    assert modified and stats["float_nodes"] == 0 and stats["half_nodes"] == 40
    assert dtypes_of(model, "MatMul") == {np.dtype(np.float16)} and dtypes_of(model, "Softmax") == {np.dtype(np.float16)}
    assert stats["half_casts"] == 1  # the mask's Cast(int64 -> float) now casts straight to float16
    assert stats["clamped"] == {"mask/min_value": 1}
    proto = ir.to_proto(model)
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.ByteSize() <= 0.515 * transformer.ByteSize()
    feeds, ref = transformer_ref
    assert cosine(ref[0], run(model, feeds)[0]) >= 0.999


def test_keep_io_types_false_and_second_run_unmodified() -> None:
    src = build("mlp")
    model, modified, stats = convert(src, storage_only=False, keep_io_types=False)
    proto = ir.to_proto(model)
    assert modified and stats["casts_inserted"] == 0 and op_count(model, "Cast") == 0
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    feeds = random_feeds(src, dims=FEEDS_DIMS)
    out = run(model, {"input": feeds["input"].astype(np.float16)})[0]
    assert cosine(run(src, feeds)[0], out.astype(np.float32)) >= 0.999
    _, again, stats = convert(proto)
    assert not again and "already float16" in stats["note"]


@pytest.mark.parametrize("storage_only", ["auto", False])
def test_bfloat16_always_loads(storage_only: object, transformer: onnx.ModelProto, transformer_ref: tuple) -> None:
    model, modified, stats = convert(transformer, dtype="bfloat16", storage_only=storage_only)
    assert modified
    # Almost no CPU kernel takes bfloat16: MatMul/Add/Softmax stay fp32, data movement may not.
    assert dtypes_of(model, "MatMul") == {np.dtype(np.float32)}
    assert any(t.data_type == TensorProto.BFLOAT16 for t in ir.to_proto(model).graph.initializer)
    feeds, ref = transformer_ref
    assert cosine(ref[0], run(model, feeds)[0]) >= 0.999


def test_blocked_ops_stay_fp32_with_casts_around() -> None:
    src = build("layernorm-classifier")  # decomposed LayerNorm: Pow(x, 2) must not overflow fp16
    model, _, stats = convert(src, storage_only=False)
    assert stats["float_reasons"] == {"op_block_list": 2}
    assert dtypes_of(model, "Pow") == {np.dtype(np.float32)} and dtypes_of(model, "Sqrt") == {np.dtype(np.float16)}
    pow_node = next(n for n in model.graph.nodes if n.op == "Pow")
    assert ir.producer(pow_node.inputs[0]).op == "Cast" and all(c.op == "Cast" for c in pow_node.outputs[0].outputs)
    feeds = random_feeds(src, dims=FEEDS_DIMS)
    assert cosine(run(src, feeds)[0], run(model, feeds)[0]) >= 0.999
    _, _, stats = convert(src, storage_only=False, node_block_list=["layer1/fc/matmul"])
    assert stats["float_reasons"] == {"op_block_list": 2, "node_block_list": 1}


def test_subgraphs_are_converted_and_the_if_interface_stays_float32() -> None:
    src = build("if-model")
    model, _, stats = convert(src, storage_only=False)
    assert stats["subgraph_half_nodes"] > 0 and stats["subgraph_float_nodes"] == 0
    assert stats["float_reasons"]["holds subgraphs (the If/Loop/Scan interface stays float32; its bodies are converted)"] == 1
    feeds = random_feeds(src, dims=FEEDS_DIMS)
    for a, b in zip(run(src, feeds), run(model, feeds)):
        assert cosine(a, b) >= 0.999


def _mul_model(c: np.ndarray, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Mul", ["x", "c"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", dtype, [4])],
            [helper.make_tensor_value_info("y", dtype, [4])],
            [numpy_helper.from_array(c, "c")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    return m


def test_out_of_range_constant_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    src = _mul_model(np.array([1e6, -7e4, 1e-9, 0.5], np.float32))
    with caplog.at_level(logging.WARNING, logger="onnxq.passes.quantization.convert_float16"):
        model, _, stats = convert(src, storage_only=False)
    assert stats["clamped"] == {"c": 3}
    msg = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "'c'" in msg and "clamped 2 value(s) beyond +/-65504" in msg and "1 nonzero value(s) below" in msg
    c = ir.constant_array(next(n for n in model.graph.nodes if n.op == "Mul").inputs[1])
    np.testing.assert_array_equal(c, np.array([65504, -65504, 5.96e-08, 0.5], np.float16))
    out = run(model, {"x": np.ones(4, np.float32)})[0]
    assert np.isfinite(out).all() and out[2] > 0


def test_round_trip_casts_are_folded() -> None:
    # x (fp16) -> Cast(float) -> Relu -> Cast(float16) -> y: in fp16 compute both Casts are no-ops.
    m = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
                helper.make_node("Relu", ["xf"], ["r"]),
                helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT16),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    model, modified, stats = convert(m, storage_only=False)
    assert modified and stats["casts_folded"] >= 1
    assert [n.op for n in model.graph.nodes] == ["Relu"]
    x = np.array([-1, 2, -3, 4], np.float16)
    np.testing.assert_array_equal(run(model, {"x": x})[0], np.maximum(x, 0))


def test_unchanged_models() -> None:
    _, modified, stats = convert(_mul_model(np.ones(4, np.float16), TensorProto.FLOAT16))
    assert not modified and "already float16" in stats["note"]
    _, modified, stats = convert(_mul_model(np.ones(4, np.float32)), storage_only=True)  # tiny constant, nothing to store
    assert not modified and "nothing to convert" in stats["note"]


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="dtype"):
        make_pass("convert-float16", {"dtype": "float8"})
    with pytest.raises(ConfigError, match="storage_only"):
        make_pass("convert-float16", {"storage_only": "sometimes"})
    assert make_pass("convert-float16", {"storage_only": True}).config.storage_only is True
    assert ml_dtypes.finfo(ml_dtypes.bfloat16).max > 1e38  # bfloat16 defaults use its own range
