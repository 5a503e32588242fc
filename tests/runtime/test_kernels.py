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
