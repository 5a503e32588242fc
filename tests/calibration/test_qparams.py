"""Tests of scale / zero-point computation and the QuantizeLinear / DequantizeLinear helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxq.calibration.qparams import (
    QUANT_DTYPES,
    compute_qparams,
    compute_qparams_array,
    dequantize,
    quant_grid,
    quantize,
)
from onnxq.errors import CalibrationError, ConfigError

FAST = settings(max_examples=50, deadline=None)
DTYPES = sorted(QUANT_DTYPES)
bounds = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def _ordered(a: float, b: float) -> tuple[float, float]:
    return (a, b) if a <= b else (b, a)


@FAST
@given(a=bounds, b=bounds, dtype=st.sampled_from(DTYPES), symmetric=st.booleans(), reduce_range=st.booleans())
def test_round_trip_error_within_half_step_and_zero_exact(
    a: float, b: float, dtype: str, symmetric: bool, reduce_range: bool
) -> None:
    rmin, rmax = _ordered(a, b)
    scale, zp = compute_qparams(rmin, rmax, dtype, symmetric, reduce_range)
    assert isinstance(scale, np.float32) and isinstance(zp, int)
    assert scale > 0 and np.isfinite(scale)
    grid = quant_grid(dtype, symmetric, reduce_range)
    assert grid.qmin <= zp <= grid.qmax
    # zero is exactly representable
    assert quantize(np.zeros(1, np.float32), scale, zp, dtype)[0] == zp
    assert dequantize(np.array([zp], dtype=dtype), scale, zp)[0] == 0.0
    # every value of the (zero-including) range round-trips within half a step
    lo, hi = min(rmin, 0.0), max(rmax, 0.0)
    if symmetric:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    x = np.linspace(lo, hi, 101).astype(np.float32)
    x = x[(x >= lo) & (x <= hi)]
    err = np.abs(dequantize(quantize(x, scale, zp, dtype), scale, zp).astype(np.float64) - x)
    tolerance = 0.5 * float(scale) * (1 + 1e-5) + 2.0**-20 * max(abs(lo), abs(hi))
    assert err.max(initial=0.0) <= tolerance


@pytest.mark.parametrize(
    ("dtype", "expected"), [("int8", 0), ("uint8", 128), ("int16", 0), ("uint16", 32768)]
)
def test_symmetric_zero_points(dtype: str, expected: int) -> None:
    for rmin, rmax in [(-1.0, 3.0), (0.0, 2.0), (-5.0, -1.0), (0.0, 0.0)]:
        assert compute_qparams(rmin, rmax, dtype, symmetric=True)[1] == expected


def test_symmetric_int8_uses_restricted_grid() -> None:
    scale, zp = compute_qparams(-2.0, 1.0, "int8", symmetric=True)
    assert zp == 0 and scale == np.float32(2.0 / 127)


def test_asymmetric_uint8_known_values() -> None:
    scale, zp = compute_qparams(-1.0, 2.0, "uint8", symmetric=False)
    assert scale == np.float32(3.0 / 255) and zp == 85
    scale, zp = compute_qparams(1.0, 5.0, "uint8", symmetric=False)  # range widened to [0, 5]
    assert scale == np.float32(5.0 / 255) and zp == 0
    scale, zp = compute_qparams(-4.0, -1.0, "uint8", symmetric=False)  # [-4, 0]
    assert scale == np.float32(4.0 / 255) and zp == 255


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_degenerate_range_never_divides_by_zero(dtype: str, symmetric: bool) -> None:
    for value in (0.0, 1e-45, -1e-42):
        scale, zp = compute_qparams(value, value, dtype, symmetric)
        assert scale == np.float32(1.0)
        assert quantize(np.zeros(3, np.float32), scale, zp, dtype).tolist() == [zp] * 3


def test_reduce_range_uses_seven_bits() -> None:
    assert (quant_grid("uint8", reduce_range=True).qmin, quant_grid("uint8", reduce_range=True).qmax) == (0, 127)
    assert (quant_grid("int8", True, True).qmin, quant_grid("int8", True, True).qmax) == (-64, 64)
    scale, zp = compute_qparams(-1.0, 1.0, "int8", symmetric=True, reduce_range=True)
    assert zp == 0 and scale == np.float32(1.0 / 64)


def test_huge_range_is_finite() -> None:
    scale, zp = compute_qparams(-3.4e38, 3.4e38, "int8", symmetric=True)
    assert np.isfinite(scale) and zp == 0
    scale, zp = compute_qparams(-3.4e38, 1.0, "uint8", symmetric=False)
    assert np.isfinite(scale) and zp == 255


@FAST
@given(
    st.lists(st.tuples(bounds, bounds), min_size=1, max_size=8),
    st.sampled_from(DTYPES),
    st.booleans(),
    st.booleans(),
)
def test_array_version_matches_scalar(
    pairs: list[tuple[float, float]], dtype: str, symmetric: bool, reduce_range: bool
) -> None:
    ordered = [_ordered(a, b) for a, b in pairs]
    rmin = np.array([p[0] for p in ordered], dtype=np.float32)
    rmax = np.array([p[1] for p in ordered], dtype=np.float32)
    scales, zps = compute_qparams_array(rmin, rmax, dtype, symmetric, reduce_range)
    assert scales.dtype == np.float32 and zps.dtype == np.dtype(dtype)
    for i, (lo, hi) in enumerate(ordered):
        assert (scales[i], int(zps[i])) == compute_qparams(float(lo), float(hi), dtype, symmetric, reduce_range)


@FAST
@given(a=bounds, b=bounds, dtype=st.sampled_from(DTYPES), symmetric=st.booleans(), reduce_range=st.booleans())
def test_matches_onnxruntime(a: float, b: float, dtype: str, symmetric: bool, reduce_range: bool) -> None:
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils")
    from onnx import TensorProto

    qtype = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8, "uint16": TensorProto.UINT16,
             "int16": TensorProto.INT16}[dtype]
    rmin, rmax = _ordered(a, b)
    qmin, qmax = quant_utils.get_qmin_qmax_for_qType(qtype, reduce_range=reduce_range, symmetric=symmetric)
    ort_zp, ort_scale = quant_utils.compute_scale_zp(
        np.array(rmin, np.float32), np.array(rmax, np.float32), qmin, qmax, symmetric=symmetric
    )
    scale, zp = compute_qparams(rmin, rmax, dtype, symmetric, reduce_range)
    if float(ort_scale) == 1.0 and int(ort_zp) == 0 and max(abs(rmin), abs(rmax)) < 1e-30:
        assert scale == 1.0  # degenerate range: we keep the symmetric midpoint zero point on purpose
        return
    assert scale == np.float32(ort_scale)
    assert zp == int(ort_zp)


def test_quantize_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0, np.nan], dtype=np.float32)
    assert quantize(x, 1.0, 0, "int8").tolist() == [0, 2, 2, 0, -2, 127, -128, 0]
    assert quantize(x, 1.0, 10, "uint8").tolist() == [10, 12, 12, 10, 8, 255, 0, 10]


def test_quantize_per_axis_matches_per_channel_loop() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 2)).astype(np.float32)
    scales, zps = compute_qparams_array(w.min(axis=(0, 2)), w.max(axis=(0, 2)), "int8", symmetric=True)
    q = quantize(w, scales, zps, "int8", axis=1)
    for c in range(3):
        assert np.array_equal(q[:, c], quantize(w[:, c], scales[c], zps[c], "int8"))
    back = dequantize(q, scales, zps, axis=1)
    assert np.all(np.abs(back - w) <= scales[None, :, None] / 2 * (1 + 1e-6))


def test_quantize_matches_onnx_reference() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(257) * 3).astype(np.float32)
    x[:4] = [0.5 * 0.03, 1.5 * 0.03, -2.5 * 0.03, 1e6]  # (the reference casts to int32: keep it small)
    scale, zp = compute_qparams(-2.0, 4.0, "uint8", symmetric=False)
    node_q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    node_dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node_q, node_dq],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [257])],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [257]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [257])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [float(scale)]),
         helper.make_tensor("z", TensorProto.UINT8, [], [zp])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    q_ref, y_ref = ReferenceEvaluator(model).run(None, {"x": x})
    q = quantize(x, scale, zp, "uint8")
    assert np.array_equal(q, q_ref)
    assert np.array_equal(dequantize(q, scale, zp), y_ref)
    assert onnx is not None


def test_errors() -> None:
    with pytest.raises(CalibrationError, match="non-finite"):
        compute_qparams(float("nan"), 1.0, "int8", True)
    with pytest.raises(CalibrationError, match="rmin > rmax"):
        compute_qparams(2.0, 1.0, "int8", True)
    with pytest.raises(ConfigError, match="valid: uint8, int8, uint16, int16"):
        compute_qparams(0.0, 1.0, "int4", True)
    with pytest.raises(ConfigError):
        quantize(np.zeros(2), 1.0, 0, "float8")
