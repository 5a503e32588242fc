"""An option the user set beats the target profile, on both faces: it is never replaced (even when it
equals the plain default), a value the target cannot take is one ``ConfigError`` (exit code 2, no
output file), and a value the target can take but the profile sets otherwise is kept and reported."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import build
from onnxq.api.options import PROFILE_OPTIONS, ConversionOptions
from onnxq.errors import ConfigError
from onnxq.targets import TARGETS
from tests.helpers import cosine, invoke, random_feeds
from tests.targets._util import converted, summarize


def _convert(model: Path, out: Path, *args: str) -> tuple[int, str, str]:
    return invoke("convert", str(model), "-o", str(out), "--data", "synthetic:2", "--dim", "N=1", "--no-tune", *args)


# ---- the options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_profile_sets_only_options_that_track_the_user(name: str) -> None:
    """A profile setting outside PROFILE_OPTIONS could not tell the user's value from the default."""
    profile = TARGETS[name]
    assert set(profile.settings) <= set(PROFILE_OPTIONS)
    assert set(profile.allowed) <= set(profile.settings)  # what the profile fills in, it also allows
    for option, values in profile.allowed.items():
        assert profile.settings[option] in values, (name, option)


def test_an_explicit_default_value_is_kept_not_replaced() -> None:
    # per_channel=True and weight_dtype="int8" are the plain defaults; QNN's profile sets per-tensor uint8
    opts = ConversionOptions(target="qnn", per_channel=True, weight_dtype="int8")
    assert (opts.per_channel, opts.weight_dtype) == (True, "int8")
    assert opts.activation_dtype == "uint8" and opts.weight_symmetric is False  # not given: the profile's
    assert opts.explicit == {"per_channel", "weight_dtype"}
    assert opts.profile_overrides == {"per_channel": (True, False), "weight_dtype": ("int8", "uint8")}
    # reduce_range=None (automatic) is a value too: generic's profile would pin it off
    assert ConversionOptions(target="generic", reduce_range=None).reduce_range is None
    assert ConversionOptions(target="generic").reduce_range is False


@pytest.mark.parametrize(
    ("option", "value", "wanted"),
    [("activation_dtype", "uint8", "int8"), ("int32_bias", True, "False"), ("weight_symmetric", True, None), ("format", "qdq", None)],
)
def test_an_explicit_default_the_target_forbids_is_one_error(option: str, value: object, wanted: str | None) -> None:
    """uint8 activations and int32 biases are the defaults; TensorRT allows neither. An allowed default
    (symmetric weights, QDQ) given explicitly passes."""
    if wanted is None:
        assert getattr(ConversionOptions(target="tensorrt", **{option: value}), option) == value
        return
    with pytest.raises(ConfigError) as err:
        ConversionOptions(target="tensorrt", **{option: value})
    message = str(err.value)
    assert "\n" not in message
    assert f"--target tensorrt needs --{option.replace('_', '-')} {wanted}, not {value}" in message


def test_a_value_equal_to_the_profile_is_explicit_but_no_override() -> None:
    opts = ConversionOptions(target="qnn", per_channel=False)
    assert "per_channel" in opts.explicit and opts.profile_overrides == {}
    assert opts == ConversionOptions(target="qnn")  # the same conversion


def test_without_a_target_or_outside_static_mode_nothing_is_overridden() -> None:
    assert ConversionOptions(per_channel=False).profile_overrides == {}
    assert ConversionOptions(target="qnn", per_channel=True, recipe="r.toml").profile_overrides == {}  # a recipe's passes run as written
    assert ConversionOptions(target="qnn", recipe="r.toml").per_channel is True  # the profile does not fill a recipe's options either


def test_changed_as_dict_and_from_values_still_agree() -> None:
    assert ConversionOptions().changed() == {}
    trt = ConversionOptions(target="tensorrt")
    assert trt.changed()["activation_dtype"] == "int8" and trt.changed()["int32_bias"] is False
    for opts in (ConversionOptions(), trt, ConversionOptions(target="qnn", per_channel=True)):
        plain = opts.as_dict()
        assert all(v is not dataclasses.MISSING and not repr(v).startswith("<target") for v in plain.values())
        assert ConversionOptions.from_values(plain) == opts  # the report's options rebuild the same options
    assert ConversionOptions.from_values({"target": "tensorrt", "activation_dtype": "int8"}).explicit == {"activation_dtype"}


# ---- the report (API) -------------------------------------------------------------------------
def test_an_allowed_override_is_honoured_and_reported() -> None:
    model, report, _ = converted("qnn", tune=False, per_channel=True)
    target = report["target"]
    assert target["overrides"] == {"per_channel": {"user": True, "profile": False}}
    assert any("--per-channel true as you set it (the profile sets false)" in n for n in report["notes"])
    assert report["options"]["per_channel"] is True and report["options"]["weight_dtype"] == "uint8"
    s = summarize(model)
    assert s.conv_weight_scale_sizes and all(n > 1 for n in s.conv_weight_scale_sizes)  # per-channel, as asked
    assert s.weight_dtypes == {"uint8"}  # the rest of the profile still applies
    onnx.checker.check_model(model, full_check=True)
    fp32 = build("cnn")
    for seed in (10, 11):  # exact QDQ numerics (qnn has no runtime here) vs onnxruntime fp32: cosine >= 0.99
        feeds = random_feeds(fp32, seed=seed, dims={"N": 1})
        from onnxq.runtime.backends import make_runtime_session

        ref = make_runtime_session(fp32, "onnxruntime").run(None, feeds)[0]
        got = make_runtime_session(model, "onnxruntime-reference").run(None, feeds)[0]
        assert cosine(ref, got) >= 0.99, seed


def test_no_override_no_overrides_in_the_report() -> None:
    _, report, _ = converted("qnn", tune=False)
    assert report["target"]["overrides"] == {}
    assert not any("as you set it" in n for n in report["notes"])


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_explicit_default_kept_and_override_reported(cnn: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    code, _, err = _convert(cnn, out, "--target", "qnn", "--per-channel", "--report", str(report))
    assert code == 0, err
    assert "--per-channel true as you set it (the profile sets false)" in err
    data = json.loads(report.read_text())
    assert data["options"]["per_channel"] is True and data["target"]["overrides"] == {"per_channel": {"user": True, "profile": False}}
    s = summarize(onnx.load(str(out)))
    assert all(n > 1 for n in s.conv_weight_scale_sizes) and s.weight_dtypes == {"uint8"}


def test_cli_flags_left_at_their_default_let_the_profile_decide(cnn: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    code, _, err = _convert(cnn, out, "--target", "qnn", "--report", str(report))
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["options"]["per_channel"] is False and data["target"]["overrides"] == {}
    assert np.all(np.array(summarize(onnx.load(str(out))).conv_weight_scale_sizes) == 1)


@pytest.mark.parametrize(("flag", "message"), [
    (("--activation-type", "uint8"), "--target tensorrt needs --activation-dtype int8, not uint8"),
    (("--int32-bias",), "--target tensorrt needs --int32-bias False, not True"),
])
def test_cli_explicit_default_the_target_forbids_is_exit_2_one_line_no_file(cnn: Path, tmp_path: Path, flag: tuple[str, ...], message: str) -> None:
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    code, stdout, err = _convert(cnn, out, "--target", "tensorrt", *flag, "--report", str(report))
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err and "Traceback" not in err + stdout
    assert not out.exists() and not report.exists()
