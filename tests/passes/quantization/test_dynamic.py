"""Dynamic int8 quantization and activation smoothing: structure, numerics vs fp32, bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models import build
from onnxq import PassContext, PassManager, ir, make_pass
from onnxq.api import convert, quantize_dynamic
from tests.helpers import checked, cosine, op_count, random_feeds, run

DIMS = {"batch": 2, "seq": 16}


def _dynamic(src: onnx.ModelProto, data=None, **options) -> tuple[ir.Model, dict]:
    """Run cleanup + quantize-dynamic; stats carry the pass's skip records as ``skipped`` {node: reason}."""
    ctx = PassContext(calibration_data=data)
    res = PassManager([make_pass("cleanup"), make_pass("quantize-dynamic", options)], check=True).run(ir.load(src), ctx)
    stats = dict(res.records[-1].stats)
    stats["skipped"] = {s.node: s.reason for s in ctx.skips if s.pass_name == "quantize-dynamic"}
    return checked(res.model), stats


@pytest.mark.parametrize("fmt", ["fused", "standard"])
def test_transformer_projections_quantized(fmt: str) -> None:
    src = build("transformer", hidden=128, layers=2)
    model, stats = _dynamic(src, format=fmt, min_weight_elements=0, guard_latency=False)
    assert stats["quantized.MatMul"] == 12  # q, k, v, out, ffn1, ffn2 per layer
    if fmt == "fused":
        assert op_count(model, "DynamicQuantizeMatMul") == 12
    else:
        assert op_count(model, "MatMulInteger") == 12 and op_count(model, "DynamicQuantizeLinear") == 12
    # attention scores (activation × activation), Softmax and LayerNorm stay float
    assert op_count(model, "MatMul") == 4 and op_count(model, "Softmax") == 2 and op_count(model, "LayerNormalization") >= 4
    reasons = set(stats["skipped"].values())
    assert any("activation × activation" in r for r in reasons)
    for i in range(3):
        f = random_feeds(src, seed=i, dims=DIMS)
        assert cosine(run(src, f)[0], run(model, f)[0]) > 0.995


def test_per_tensor_less_accurate_than_per_channel() -> None:
    src = build("mlp", in_features=64, hidden=(256, 256))
    pc, _ = _dynamic(src, per_channel=True, min_weight_elements=0, guard_latency=False)
    pt, _ = _dynamic(src, per_channel=False, min_weight_elements=0, guard_latency=False)
    f = random_feeds(src, seed=0, dims={"N": 16})
    ref = run(src, f)[0]
    assert cosine(ref, run(pc, f)[0]) >= cosine(ref, run(pt, f)[0]) - 1e-6 > 0.99


def test_lstm_uses_dynamic_quantize_lstm() -> None:
    src = build("lstm", input_size=32, hidden=64, bidirectional=True)
    model, stats = _dynamic(src, guard_latency=False, min_weight_elements=0)
    assert op_count(model, "DynamicQuantizeLSTM") == 1 and op_count(model, "LSTM") == 0
    f = random_feeds(src, seed=0, dims={"seq": 10, "batch": 3})
    assert cosine(run(src, f)[0], run(model, f)[0]) > 0.999


def test_conv_stays_float_with_reason() -> None:
    src = build("cnn-lstm")
    model, stats = _dynamic(src, guard_latency=False, min_weight_elements=0)
    assert op_count(model, "ConvInteger") == 0 and op_count(model, "Conv") > 0
    assert any("keeps Conv float" in r for r in stats["skipped"].values())


def test_small_weights_skipped() -> None:
    src = build("mlp")  # 32x64, 64x64, 64x10 weights
    model, stats = _dynamic(src, guard_latency=False, min_weight_elements=10000)
    assert stats["quantized"] == 0 and all("fewer than" in r for k, r in stats["skipped"].items() if "matmul" in k.lower())


def test_latency_guard_reverts_when_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxq.passes.quantization.quantize_dynamic as qd

    monkeypatch.setattr(qd, "_latency_verdict", lambda before, after, ctx, threads: {"float_ms": 1.0, "quantized_ms": 2.0, "slower": True})
    src = build("transformer", hidden=128, layers=1)
    model, stats = _dynamic(src, data=[random_feeds(src, seed=0, dims=DIMS)], min_weight_elements=0)
    assert op_count(model, "DynamicQuantizeMatMul") == 0 and "reverted" in stats


def test_smoothing_is_exact_in_float() -> None:
    src = build("transformer", hidden=128, layers=2)
    data = [random_feeds(src, seed=i, dims=DIMS) for i in range(4)]
    ctx = PassContext(calibration_data=data)
    res = PassManager([make_pass("cleanup"), make_pass("smooth-activations", {"alpha": 0.5})], check=True).run(ir.load(src), ctx)
    assert res.records[-1].stats["smoothed"] >= 8
    for f in data:
        np.testing.assert_allclose(run(res.model, f)[0], run(src, f)[0], rtol=1e-3, atol=1e-4)


def test_smoothing_without_data_is_a_noop() -> None:
    src = build("transformer")
    res = PassManager([make_pass("smooth-activations")]).run(ir.load(src))
    assert not res.modified


def test_convert_dynamic_api_with_data() -> None:
    src = build("transformer", hidden=128, layers=2)
    data = [random_feeds(src, seed=i, dims=DIMS) for i in range(4)]
    res = quantize_dynamic(src, data, pass_options={"quantize-dynamic": {"min_weight_elements": 0}})
    model = checked(res.model)
    steps = [p["pass"] for p in res.report.to_dict()["passes"]]
    assert steps == ["cleanup", "smooth-activations", "quantize-dynamic"]
    f = random_feeds(src, seed=9, dims=DIMS)
    assert cosine(run(src, f)[0], run(model, f)[0]) > 0.995


@pytest.mark.parametrize("mode", ["weight-only", "fp16", "bf16"])
def test_convert_other_modes(mode: str) -> None:
    src = build("transformer", hidden=128, layers=2)
    res = convert(src, mode=mode)
    model = checked(res.model)
    f = random_feeds(src, seed=1, dims=DIMS)
    assert cosine(run(src, f)[0], run(model, f)[0]) > 0.99
    assert res.report.to_dict()["bytes_after"] < 0.6 * res.report.to_dict()["bytes_before"]


def test_unknown_mode() -> None:
    from onnxq import ConfigError

    with pytest.raises(ConfigError, match="unknown mode"):
        convert(build("mlp"), mode="int3")
