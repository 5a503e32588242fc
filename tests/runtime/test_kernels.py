"""The kernel probe asks onnxruntime's CPU provider for real (results below are onnxruntime 1.32's)."""

from __future__ import annotations

import pytest

from onnxq.runtime import kernels
from onnxq.runtime.kernels import cpu_kernel_error, has_cpu_kernel, tensor_type

MNB_ATTRS = {"K": 64, "N": 16, "bits": 4, "block_size": 32}


def test_relu_float32_native_float16_only_through_fallback() -> None:
    assert has_cpu_kernel("Relu", input_types=("float",))
    # onnxruntime loads a float16 Relu, but only by wrapping it in Casts to float32 (no fp16 kernel).
    assert has_cpu_kernel("Relu", input_types=("float16",), native=False)
    assert not has_cpu_kernel("Relu", input_types=("float16",))
    assert "fp32 fallback" in (cpu_kernel_error("Relu", input_types=("float16",)) or "")


def test_layernorm_has_a_native_float16_kernel() -> None:
    assert has_cpu_kernel("LayerNormalization", input_types=("float16",), num_inputs=3)


def test_bfloat16_matmul_does_not_even_load() -> None:
    err = cpu_kernel_error("MatMul", input_types=("bfloat16",), num_inputs=2, native=False)
    assert err is not None and "Could not find an implementation" in err


def test_contrib_weight_only_kernels_exist() -> None:
    assert has_cpu_kernel("MatMulNBits", "com.microsoft", input_types=("float", "uint8", "float", "uint8"), attrs=MNB_ATTRS)
    assert has_cpu_kernel("MatMulNBits", "com.microsoft", input_types=("float16", "uint8", "float16"), attrs=MNB_ATTRS)
    gbq = {"bits": 4, "block_size": 32, "quantize_axis": 1, "gather_axis": 0}
    assert has_cpu_kernel("GatherBlockQuantized", "com.microsoft", input_types=("uint4", "int64", "float", "uint4"), attrs=gbq)


def test_integer_conv_and_qlinear_combinations() -> None:
    # onnxruntime 1.32 registers ConvInteger for u8 x s8 (older releases only had u8 x u8) ...
    assert has_cpu_kernel("ConvInteger", input_types=("uint8", "int8"))
    # ... but QLinearConv with int8 activations and uint8 weights has no CPU kernel.
    qlinear = ("int8", "float", "int8", "uint8", "float", "uint8", "float", "int8")
    assert not has_cpu_kernel("QLinearConv", input_types=qlinear, native=False)
    # A type the schema forbids fails as an invalid graph, not a crash.
    assert "invalid" in (cpu_kernel_error("ConvInteger", input_types=("float", "float")) or "").lower()


def test_missing_required_attribute_and_omitted_optional_input() -> None:
    assert not has_cpu_kernel("MatMulNBits", "com.microsoft", input_types=("float", "uint8", "float"))  # no K/N
    assert has_cpu_kernel("Resize", opset=19, input_types=("float", "", "float"))  # roi omitted


def test_results_are_cached() -> None:
    has_cpu_kernel("Sigmoid", input_types=("float",))
    hits = kernels._probe.cache_info().hits
    assert has_cpu_kernel("Sigmoid", input_types=("float",))
    assert kernels._probe.cache_info().hits == hits + 1


def test_type_names_and_input_expansion() -> None:
    assert tensor_type("float16") == tensor_type("tensor(float16)") == tensor_type("fp16") == 10
    assert tensor_type("float32") == tensor_type("float") == 1
    assert tensor_type("uint4") == 21
    with pytest.raises(ValueError, match="unknown tensor element type"):
        tensor_type("float7")
    assert kernels._expand_types(("float16",), 3) == ("float16",) * 3
    assert kernels._expand_types(("float", "int64", "int64"), 2) == ("float", "int64")
    assert not has_cpu_kernel("Add", input_types=("float7",), num_inputs=2)


def _qdq_matmul_error(activation: str, weight_max: int, k: int = 64) -> float:
    """|onnxruntime − exact| of a fused QDQ MatMul at the top of both grids, in output steps."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    a_np = np.dtype(activation)
    a_max = int(np.iinfo(a_np).max)
    exact = k * a_max * weight_max
    step = 1024.0
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.zeros((), a_np), "azp"),
        numpy_helper.from_array(np.full((k, 4), weight_max, np.int8), "w"),
        numpy_helper.from_array(np.zeros((), np.int8), "wzp"),
        numpy_helper.from_array(np.array(step, np.float32), "ys"),
        numpy_helper.from_array(np.zeros((), np.int32), "yzp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "one", "azp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "one", "azp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "one", "wzp"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    from tests.helpers import session

    got = session(model).run(None, {"x": np.full((1, k), a_max, np.float32)})[0]
    return float(np.max(np.abs(got - exact)))


@pytest.mark.parametrize("activation", ["uint8", "int8"])
def test_saturation_probe_predicts_the_kernel(activation: str) -> None:
    """The probe's verdict is what a full-range int8 MatMul does here; 7-bit weights are always exact."""
    saturates = kernels.int8_products_saturate(activation, "int8")
    full = _qdq_matmul_error(activation, 127)
    assert (full > 0.5) == saturates, f"probe says saturates={saturates}, full-range error {full}"
    assert _qdq_matmul_error(activation, 64) < 0.5  # reduce_range's grid fits VPMADDUBSW's int16


def test_reduce_range_auto_follows_the_probe_and_explains_itself() -> None:
    on, note = kernels.resolve_reduce_range(None, "uint8", "int8")
    assert on == kernels.int8_products_saturate("uint8", "int8")
    assert (note is not None) == on and (note is None or "saturates" in note)
    assert kernels.resolve_reduce_range(False, "uint8", "int8") == (False, None)
    assert kernels.resolve_reduce_range(True, "uint8", "int8") == (True, None)
    assert kernels.resolve_reduce_range(None, "uint16", "int8") == (False, None)
