"""Each target profile's settings reach the options and the written model, values a target refuses are one
``ConfigError`` (exit code 2 on the CLI), and every target's output is a valid model that stays close
to onnxruntime fp32 on the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from models import build
from onnxq.api import ConversionOptions
from onnxq.errors import ConfigError
from onnxq.targets import TARGETS, get_target, target_names
from tests.helpers import cosine, invoke, random_feeds, run, session
from tests.targets._util import converted, summarize

#: What each profile must set, written out here (not read from the profiles), with its source in
#: onnxq.targets.profiles: (activation dtype, activation symmetric, weight dtype, weight symmetric,
#: per-channel, int32 bias).
EXPECTED = {
    "generic": ("uint8", False, "int8", True, True, True),
    "ort-cpu": ("uint8", False, "int8", True, True, True),
    "ort-mobile": ("uint8", False, "int8", True, True, True),
    "openvino": ("uint8", False, "int8", True, True, True),
    "tensorrt": ("int8", True, "int8", True, True, False),
    "qnn": ("uint8", False, "uint8", False, False, True),
}
#: Targets whose conversion is cheap enough to run here (ort-mobile runs onnxruntime's converter in a
#: subprocess: test_ort_mobile.py; openvino needs the extra: test_openvino.py).
CHEAP = ("generic", "ort-cpu", "tensorrt", "qnn")


def test_the_registry_holds_the_six_documented_targets() -> None:
    assert target_names() == ("generic", "ort-cpu", "ort-mobile", "openvino", "tensorrt", "qnn")


@pytest.mark.parametrize("target", list(EXPECTED))
def test_profile_settings_reach_the_options(target: str) -> None:
    opts = ConversionOptions(target=target)
    act, act_sym, weight, weight_sym, per_channel, int32_bias = EXPECTED[target]
    assert opts.format == "qdq"
    assert (opts.activation_dtype, opts.activation_symmetric, opts.weight_dtype, opts.weight_symmetric) == (act, act_sym, weight, weight_sym)
    assert (opts.per_channel, opts.int32_bias) == (per_channel, int32_bias)


def test_profiles_limit_q_dq_to_the_ops_the_target_runs_int8() -> None:
    assert "Softmax" not in ConversionOptions(target="openvino").op_types  # OpenVINO's LPT has no int8 Softmax
    assert "Sigmoid" not in ConversionOptions(target="openvino").op_types
    assert "Mul" not in ConversionOptions(target="tensorrt").op_types  # onnx-tensorrt lists no INT8 Mul
    assert ConversionOptions(target="generic").op_types == ConversionOptions().op_types


def test_an_option_the_user_set_is_kept_when_the_target_allows_it() -> None:
    opts = ConversionOptions(target="qnn", activation_dtype="uint16")
    assert opts.activation_dtype == "uint16" and opts.weight_dtype == "uint8"
    assert ConversionOptions(target="ort-cpu", per_channel=False).per_channel is False


@pytest.mark.parametrize(
    ("target", "option", "value"),
    [
        ("tensorrt", "weight_dtype", "uint8"),
        ("tensorrt", "format", "qoperator"),
        ("tensorrt", "activation_dtype", "uint16"),
        ("openvino", "activation_dtype", "int16"),
        ("qnn", "activation_dtype", "int8"),
        ("generic", "format", "qoperator"),
    ],
)
def test_a_value_the_target_refuses_is_one_config_error(target: str, option: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        ConversionOptions(target=target, **{option: value})
    message = str(err.value)
    assert "\n" not in message
    assert f"--target {target} needs --{option.replace('_', '-')}" in message and f"not {value}" in message


def test_a_refused_value_on_the_cli_is_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    model, out = tmp_path / "cnn.onnx", tmp_path / "q.onnx"
    onnx.save(build("cnn"), str(model))
    args = ("--data", "synthetic:2", "--dim", "N=1", "--target", "tensorrt", "--weight-dtype", "uint8")
    code, _, err = invoke("convert", str(model), "-o", str(out), *args)
    assert code == 2
    assert err.strip().count("\n") == 0 and "--target tensorrt needs --weight-dtype int8, not uint8" in err
    assert not out.exists()


def test_an_unknown_target_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'tpu'; valid: generic, ort-cpu, ort-mobile, openvino, tensorrt, qnn"):
        get_target("tpu")
    with pytest.raises(ConfigError, match="unknown target 'tpu'"):
        ConversionOptions(target="tpu")
    model = tmp_path / "cnn.onnx"
    onnx.save(build("cnn"), str(model))
    code, _, err = invoke("convert", str(model), "-o", str(tmp_path / "q.onnx"), "--data", "synthetic:2", "--dim", "N=1", "--target", "tpu")
    assert code == 2 and "'tpu' is not one of" in err and "tensorrt" in err
    assert not (tmp_path / "q.onnx").exists()


def test_strict_without_a_target_is_refused() -> None:
    with pytest.raises(ConfigError, match="give --target"):
        ConversionOptions(strict=True)


@pytest.mark.parametrize("target", CHEAP)
def test_the_written_model_follows_the_profile(target: str) -> None:
    model, report, _ = converted(target, tune=False)
    act, act_sym, weight, weight_sym, per_channel, int32_bias = EXPECTED[target]
    s = summarize(model)
    assert s.activation_dtypes == {act}
    assert s.weight_dtypes == {weight}
    if act_sym:  # TensorRT: every activation zero point is 0
        assert set(s.activation_zero_points) == {0}
    else:  # asymmetric: the input (standard normal) gets a zero point inside the grid
        assert any(z != 0 for z in s.activation_zero_points)
    if weight_sym:
        assert set(s.weight_zero_points) == {0}
    else:
        assert any(z != 0 for z in s.weight_zero_points)
    assert s.conv_weight_scale_sizes and all((n > 1) == per_channel for n in s.conv_weight_scale_sizes)
    if int32_bias:
        assert s.biased_nodes > 0 and s.int32_bias_dqs == s.biased_nodes and s.float_biases == 0
    else:  # TensorRT: no int32 DequantizeLinear at all, biases stay float initializers of Conv / Gemm
        assert s.biased_nodes > 0 and s.int32_bias_dqs == 0 and s.float_biases == s.biased_nodes
    assert report["target"]["name"] == target and report["target"]["passed"]


@pytest.mark.parametrize("target", CHEAP)
def test_every_target_output_passes_the_full_checker(target: str) -> None:
    model, _, _ = converted(target, tune=False)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == get_target(target).opset


@pytest.mark.parametrize("target", CHEAP)
def test_numerics_stay_close_to_onnxruntime_fp32(target: str) -> None:
    """On held-out inputs (seeds other than the calibration's): cosine >= 0.99 per sample, top-1 agrees on most."""
    model, _, _ = converted(target, tune=False)
    fp32 = build("cnn")
    runtime = "reference" if TARGETS[target].runtime is None else "onnxruntime"
    agree = 0
    for seed in range(10, 14):
        feeds = random_feeds(fp32, seed=seed, dims={"N": 1})
        ref = run(fp32, feeds)[0]
        got = run(model, feeds)[0] if runtime == "onnxruntime" else _reference_run(model, feeds)
        assert got.shape == ref.shape
        assert cosine(ref, got) >= 0.99, (target, seed)
        agree += int(np.argmax(ref) == np.argmax(got))
    assert agree >= 3


def _reference_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Exact QDQ numerics (the validation of targets without a runtime here)."""
    from onnxq.runtime.backends import make_runtime_session

    return make_runtime_session(model, "onnxruntime-reference").run(None, feeds)[0]


def test_ort_cpu_output_loads_with_its_int8_kernels() -> None:
    model, report, _ = converted("ort-cpu", tune=False)
    sess = session(model)  # all optimizations: Q/DQ fused into QLinearConv / QGemm
    assert [o.name for o in sess.get_outputs()] == [o.name for o in build("cnn").graph.output]
    checks = {c["check"]: c["passed"] for c in report["target"]["validation"]["checks"]}
    assert checks == {"loads in onnxruntime (CPU, all optimizations)": True, "matches fp32 within the accuracy guard": True}
