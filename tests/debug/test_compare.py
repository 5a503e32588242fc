"""compare_layers numerics: SQNR as computed by hand, local vs accumulated error, blame, memory groups."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from onnxq.debug import compare_layers
from tests.debug._models import float_model, quantized, samples, with_scale_times
from tests.helpers import cosine, session, sqnr_db


def _exposed(model: onnx.ModelProto, name: str, elem: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return out


def _tensor_values(model: onnx.ModelProto, name: str, elem: int) -> list[np.ndarray]:
    sess = session(_exposed(model, name, elem), threads=0)
    feeds = [{i.name: s[i.name] for i in sess.get_inputs()} for s in samples("cnn")]
    return [sess.run([name], f)[0] for f in feeds]


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_sqnr_equals_the_one_computed_by_hand(fmt: str) -> None:
    """Both models run on the same inputs with the tensor as an extra output; the quantized tensor
    dequantized with its own scale and zero point; SQNR and cosine over all samples."""
    report = compare_layers(float_model("cnn"), quantized("cnn", fmt), samples("cnn"))
    row = next(t for t in report.tensors if t.tensor == "stage1/block1/relu1/out")
    ref = np.concatenate([v.ravel() for v in _tensor_values(float_model("cnn"), row.tensor, onnx.TensorProto.FLOAT)])
    q = np.concatenate([v.ravel() for v in _tensor_values(quantized("cnn", fmt), row.quant_tensor, onnx.TensorProto.UINT8)])
    scale, zp = row.quantization["scale"], row.quantization["zero_point"]  # type: ignore[index]
    cand = (q.astype(np.float32) - zp) * np.float32(scale)
    assert row.sqnr == pytest.approx(sqnr_db(ref, cand), abs=1e-3)
    assert row.cosine == pytest.approx(cosine(ref, cand), abs=1e-6)
    assert row.max_abs == pytest.approx(float(np.abs(ref - cand).max()), rel=1e-5)
    lo, hi = row.range_used  # type: ignore[misc]
    assert (lo, hi) == pytest.approx((scale * (0 - zp), scale * (255 - zp)))
    assert row.observed == pytest.approx((float(ref.min()), float(ref.max())))
    assert report.samples == len(samples("cnn"))


def test_the_first_layer_has_no_upstream_error() -> None:
    report = compare_layers(float_model("cnn"), quantized("cnn"), samples("cnn"))
    first = report.tensors[0]
    assert first.tensor == "input" and first.local_sqnr == pytest.approx(first.sqnr)
    deep = [t for t in report.tensors[5:] if t.local_sqnr is not None and t.sqnr is not None]
    assert sum(t.local_sqnr > t.sqnr for t in deep) > len(deep) // 2  # error accumulates downstream


def test_an_injected_bad_layer_is_blamed_first_and_is_the_first_jump() -> None:
    """One weight's DequantizeLinear scale × 50: that layer is ranked first by the error it adds,
    and flagged where the error first jumps; the layers after it inherit the error but do not add it."""
    bad = with_scale_times(quantized("cnn"), "stage1/block2/conv1/W1_scale", 50.0)
    report = compare_layers(float_model("cnn"), bad, samples("cnn"))
    blamed = report.blame()[0]
    assert blamed.layer == "stage1/block2/conv1" and blamed.tensor == "stage1/block2/relu1/out"
    assert [t.tensor for t in report.first_jumps] == ["stage1/block2/relu1/out"]
    after = [t for t in report.tensors if t.order > blamed.order]
    assert all(t.sqnr is not None and t.sqnr < 15 for t in after[:3])  # inherited...
    assert all(t.local_sqnr is not None and t.local_sqnr > 25 for t in after)  # ...not added


def test_memory_groups_give_the_same_numbers() -> None:
    """Up to float rounding: onnxruntime fuses FLOAT differently when other tensors are exposed."""
    one = compare_layers(float_model("cnn"), quantized("cnn"), samples("cnn"))
    many = compare_layers(float_model("cnn"), quantized("cnn"), samples("cnn"), max_memory_mb=0.05)
    assert one.groups == 1 and many.groups > 3
    for a, b in zip(one.tensors, many.tensors):
        assert a.tensor == b.tensor
        for field in ("sqnr", "local_sqnr", "cosine", "max_abs", "saturation"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6), field


def test_report_json_is_plain_data() -> None:
    import json

    report = compare_layers(float_model("detector"), quantized("detector", "qoperator"), samples("detector"))
    data = json.loads(json.dumps(report.to_dict()))
    assert next(iter(data)) == "schema_version"
    assert data["matched"] == len(data["tensors"]) == len(report.tensors)
    assert {"sqnr", "local_sqnr", "cosine", "max_abs", "quantization", "observed", "saturation", "jump"} <= set(data["tensors"][0])
