"""Each lint rule fires on a small graph made to break it (naming its nodes, with a fix) and stays quiet on
the fixed twin; a model onnxq converted for a target lints clean for that target."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxq.errors import ConfigError
from onnxq.lint import RULES, Finding, LintReport, lint
from tests.lint import _models as m
from tests.targets._util import converted


def _only(report: LintReport, rule: str) -> list[Finding]:
    found = [f for f in report.findings if f.rule == rule]
    for f in found:
        assert f.fix and f.message and f.severity in ("error", "warning")
    return found


def _one(model: onnx.ModelProto, target: str, rule: str, **kwargs: bool) -> Finding:
    found = _only(lint(model, target, **kwargs), rule)
    assert len(found) == 1, found
    return found[0]


def test_every_documented_rule_is_registered() -> None:
    assert set(RULES) == {
        "unsupported-op", "opset-too-new", "no-int8-kernel", "forbidden-zero-point", "bias-overflow", "non-power-of-two-scale",
        "qdq-breaks-fusion", "qdq-around-unfusable-op", "dq-shared-consumers", "shared-scale-disparate-ranges", "redundant-qdq",
    }


# ---- errors -------------------------------------------------------------------------------------
def test_unsupported_op() -> None:
    f = _one(m.single_op("Erf"), "qnn", "unsupported-op")
    assert f.severity == "error" and f.nodes == ("op0",) and "qnn cannot run Erf" in f.message
    assert not _only(lint(m.single_op("Relu"), "qnn"), "unsupported-op")
    assert _one(m.single_op("Hardmax"), "tensorrt", "unsupported-op").nodes == ("op0",)  # onnx-tensorrt's "N" row


def test_opset_too_new() -> None:
    found = _only(lint(m.single_op("Relu", opset=19, ir_version=9), "tensorrt"), "opset-too-new")
    messages = " | ".join(f.message for f in found)
    assert len(found) == 2 and "opset 19 is newer than tensorrt reads (<= 17)" in messages and "IR version 9" in messages
    assert all(f.severity == "error" for f in found)
    assert not _only(lint(m.single_op("Relu"), "tensorrt"), "opset-too-new")
    assert not _only(lint(m.single_op("Relu", opset=19, ir_version=9), "generic"), "opset-too-new")  # generic reads any


def test_no_int8_kernel_for_uint8_activations_on_tensorrt() -> None:
    f = _one(m.activation_qdq(np.uint8), "tensorrt", "no-int8-kernel")
    assert f.severity == "error" and set(f.nodes) == {"act_q", "act_dq"} and "uint8 activation" in f.message
    assert not _only(lint(m.activation_qdq(np.int8, zp=0), "tensorrt"), "no-int8-kernel")


def test_no_int8_kernel_for_int8_or_per_channel_matmul_weights_on_qnn() -> None:
    found = _only(lint(m.matmul_with_int8_weights(per_channel=True), "qnn"), "no-int8-kernel")
    messages = " | ".join(f.message for f in found)
    assert "MatMul with int8 weights" in messages and "per-channel MatMul weights" in messages
    assert all("mm0" in f.nodes for f in found if "MatMul" in f.message)


def test_no_int8_kernel_for_an_int32_bias_on_tensorrt() -> None:
    found = _only(lint(m.conv(), "tensorrt"), "no-int8-kernel")  # (the uint8 input Q/DQ is a second finding)
    bias = [f for f in found if "int32 bias" in f.message]
    assert len(bias) == 1 and bias[0].nodes == ("b_dq",) and "--float-bias" in bias[0].fix


def test_forbidden_zero_point_on_tensorrt_activations() -> None:
    f = _one(m.activation_qdq(np.int8, zp=3), "tensorrt", "forbidden-zero-point")
    assert f.severity == "error" and set(f.nodes) == {"act_q", "act_dq"} and "zero points of 0 on activations" in f.message
    assert not _only(lint(m.activation_qdq(np.int8, zp=0), "tensorrt"), "forbidden-zero-point")


def test_forbidden_zero_point_uneven_per_channel_on_onnxruntime() -> None:
    f = _one(m.conv(weight_zp=np.array([0, 1, 0, 0], np.int8)), "ort-cpu", "forbidden-zero-point")
    assert f.nodes == ("w_dq",) and "one zero point for all channels" in f.message
    assert not _only(lint(m.conv(), "ort-cpu"), "forbidden-zero-point")


def test_bias_overflow_wrong_scale_and_saturation() -> None:
    f = _one(m.conv(bias_scale=1.0), "generic", "bias-overflow")
    assert f.severity == "error" and f.nodes == ("conv0",) and "bias scale is not input scale × weight scale" in f.message
    saturated = _one(m.conv(bias_values=np.array([2**31 - 1, 0, 0, 0], np.int32)), "generic", "bias-overflow")
    assert "saturated at the int32 limit" in saturated.message and "past the int32 accumulator" in saturated.message
    assert not _only(lint(m.conv(), "generic"), "bias-overflow")


def test_non_power_of_two_scale_only_when_asked() -> None:
    model = m.activation_qdq(scale=0.3)
    f = _one(model, "generic", "non-power-of-two-scale", power_of_two=True)
    assert set(f.nodes) == {"act_q", "act_dq"} and "--power-of-two-scales" in f.fix
    assert not _only(lint(model, "generic"), "non-power-of-two-scale")
    assert not _only(lint(m.activation_qdq(scale=0.25), "generic", power_of_two=True), "non-power-of-two-scale")


# ---- warnings -----------------------------------------------------------------------------------
def test_qdq_breaks_fusion_half_quantized_conv() -> None:
    f = _one(m.conv(quantize_input=False), "generic", "qdq-breaks-fusion")
    assert f.severity == "warning" and f.nodes == ("conv0",) and "weight is quantized but its input is float" in f.message


def test_qdq_breaks_fusion_pair_between_conv_and_relu() -> None:
    f = _one(m.conv(act_after=True), "tensorrt", "qdq-breaks-fusion")
    assert f.nodes == ("conv0", "out_q", "out_dq", "relu0") and "Relu" in f.fix
    assert not _only(lint(m.conv(), "tensorrt"), "qdq-breaks-fusion")


def test_qdq_around_unfusable_op() -> None:
    f = _one(m.unfusable_between_qdq("Tanh"), "ort-cpu", "qdq-around-unfusable-op")
    assert f.severity == "warning" and f.nodes == ("op0",) and "no int8 Tanh" in f.message and "--exclude-op-types Tanh" in f.fix
    assert not _only(lint(m.unfusable_between_qdq("Relu"), "ort-cpu"), "qdq-around-unfusable-op")  # onnxruntime folds Relu


def test_dq_shared_consumers() -> None:
    f = _one(m.shared_weight_dq(), "generic", "dq-shared-consumers")
    assert f.nodes == ("w_dq", "conv_a", "conv_b") and "feeds 2 ops" in f.message


def test_shared_scale_disparate_ranges() -> None:
    f = _one(m.concat_of_disparate_ranges(), "generic", "shared-scale-disparate-ranges")
    assert f.nodes[0] == "cat0" and {"a_dq", "b_dq"} <= set(f.nodes) and "(255x)" in f.message


def test_shared_scale_disparate_ranges_from_data() -> None:
    """Measured ranges override the grids: inputs that keep both branches within 10x give no finding."""
    model = m.concat_of_disparate_ranges()
    small = [{"X": np.full(m.X, 0.5, np.float32)}]  # Sigmoid ~0.62, Relu 0.5 (rounded to 0 or 1)
    assert not _only(lint(model, "generic", data=small), "shared-scale-disparate-ranges")
    wide = [{"X": np.full(m.X, 200.0, np.float32)}]
    assert _only(lint(model, "generic", data=wide), "shared-scale-disparate-ranges")


def test_redundant_requantization() -> None:
    found = _only(lint(m.requantize_with_same_params(), "generic"), "redundant-qdq")
    same = [f for f in found if "with the same parameters" in f.message]
    assert len(same) == 1 and same[0].nodes == ("first_dq", "second_q")


def test_redundant_pair_read_by_float_ops_only() -> None:
    f = _one(m.activation_qdq(np.uint8), "ort-cpu", "redundant-qdq")  # X → Q/DQ → Relu → graph output
    assert f.nodes == ("act_q", "act_dq") and "remove the pair" in f.fix


# ---- whole models -------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["generic", "tensorrt", "qnn"])
def test_a_model_converted_for_the_target_lints_clean(target: str) -> None:
    model, _, _ = converted(target, tune=False)
    report = lint(model, target)
    assert report.findings == [] and report.exit_code == 0 and set(report.rules) == set(RULES)


def test_a_model_converted_for_one_target_fails_anothers_rules() -> None:
    model, _, _ = converted("generic", tune=False)
    report = lint(model, "tensorrt")
    assert report.exit_code == 1 and {"no-int8-kernel"} <= set(report.by_rule())


def test_report_as_data() -> None:
    report = lint(m.activation_qdq(np.uint8), "tensorrt", rules=["no-int8-kernel"])
    data = report.to_dict()
    assert data["schema_version"] == 1 and data["target"] == "tensorrt" and data["rules"] == ["no-int8-kernel"]
    assert data["errors"] == 1 and data["findings"][0]["nodes"] == ["act_q", "act_dq"]


def test_unknown_rule_or_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown lint rule"):
        lint(m.single_op("Relu"), "generic", rules=["no-such-rule"])
    with pytest.raises(ConfigError, match="unknown target 'tpu'"):
        lint(m.single_op("Relu"), "tpu")
