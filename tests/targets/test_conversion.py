"""A target in a conversion: a recipe's ``target``, ``--strict`` on ops the target cannot run,
power-of-two scales and their reported accuracy cost, and byte-identical output for the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import build
from onnxq.api import ConversionOptions
from onnxq.lint import lint
from tests.helpers import invoke
from tests.targets._util import converted, converted_bytes, is_power_of_two, summarize

_PASSES = '[[passes]]\npass = "cleanup"\n\n[[passes]]\npass = "calibrate"\n\n[[passes]]\npass = "annotate-quantization"\n\n[[passes]]\npass = "insert-qdq"\n'


@pytest.fixture()
def lstm(tmp_path: Path) -> Path:
    path = tmp_path / "lstm.onnx"
    onnx.save(build("lstm"), str(path))
    return path


def _convert(model: Path, out: Path, *args: str) -> tuple[int, str, str]:
    return invoke("convert", str(model), "-o", str(out), "--data", "synthetic:2", "--no-tune", *args)


def _convert_recipe(model: Path, out: Path, recipe: Path, *args: str) -> tuple[int, str, str]:
    """A recipe sets every pass option itself (``--no-tune`` beside it is refused)."""
    return invoke("convert", str(model), "-o", str(out), "--data", "synthetic:2", "--dim", "N=1", "--recipe", str(recipe), *args)


# ---- recipes ------------------------------------------------------------------------------------
def test_a_recipe_target_is_validated_and_linted_for_that_target(cnn: Path, tmp_path: Path) -> None:
    """The recipe's passes run as written (default uint8 activations), and its ``target = "tensorrt"``
    holds the result to TensorRT's rules: the linter flags the uint8 Q/DQ (no-int8-kernel)."""
    recipe, report = tmp_path / "r.toml", tmp_path / "r.json"
    recipe.write_text('target = "tensorrt"\n\n' + _PASSES)
    code, _, err = _convert_recipe(cnn, tmp_path / "q.onnx", recipe, "--report", str(report))
    assert code == 0, err
    target = json.loads(report.read_text())["target"]
    assert target["name"] == "tensorrt" and target["passed"] is False
    assert target["lint"]["by_rule"].get("no-int8-kernel", 0) > 0
    assert summarize(onnx.load(str(tmp_path / "q.onnx"))).activation_dtypes == {"uint8"}  # the recipe's passes, untouched


def test_a_recipe_naming_an_unknown_target_is_refused(cnn: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('target = "tpu"\n\n' + _PASSES)
    code, _, err = _convert_recipe(cnn, tmp_path / "q.onnx", recipe)
    assert code == 2 and err.strip().count("\n") == 0
    assert "unknown target 'tpu'; valid: generic" in err
    assert not (tmp_path / "q.onnx").exists()


def test_a_recipe_target_and_a_different_target_option_are_refused(cnn: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('target = "tensorrt"\n\n' + _PASSES)
    code, _, err = _convert_recipe(cnn, tmp_path / "q.onnx", recipe, "--target", "qnn")
    assert code == 2 and "--target qnn but the recipe" in err and "'tensorrt'" in err


def test_a_recipe_target_with_a_non_string_value_is_refused(cnn: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text("target = 3\n\n" + _PASSES)
    code, _, err = _convert_recipe(cnn, tmp_path / "q.onnx", recipe)
    assert code == 2 and "target must be a string" in err


def test_strict_with_a_recipe_that_names_the_target(cnn: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('target = "tensorrt"\n\n' + _PASSES)
    code, _, err = _convert_recipe(cnn, tmp_path / "q.onnx", recipe, "--strict")
    assert code == 2 and "not ready for tensorrt" in err and "no-int8-kernel" in err


# ---- --strict -----------------------------------------------------------------------------------
def test_strict_fails_naming_the_op_the_target_cannot_run(lstm: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    code, _, err = _convert(lstm, out, "--dim", "seq=4", "--dim", "batch=1", "--target", "qnn", "--strict")
    assert code == 2
    assert err.strip().count("\n") == 0 and "not ready for qnn: qnn cannot run LSTM" in err
    assert not out.exists()


def test_without_strict_the_op_is_reported_and_the_model_written(lstm: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    code, stdout, err = _convert(lstm, out, "--dim", "seq=4", "--dim", "batch=1", "--target", "qnn", "--report", str(report))
    assert code == 0, err
    assert "target qnn: cannot run LSTM" in err and "NOT passed" in stdout
    target = json.loads(report.read_text())["target"]
    assert list(target["unsupported_ops"]) == ["LSTM"] and target["passed"] is False
    assert target["validation"] is None  # skipped: the target could not load the model at all
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_strict_passes_a_model_the_target_runs(cnn: Path, tmp_path: Path) -> None:
    code, stdout, err = _convert(cnn, tmp_path / "q.onnx", "--dim", "N=1", "--target", "tensorrt", "--strict")
    assert code == 0, err
    assert "target tensorrt: lint 0 error(s)" in stdout and "(passed)" in stdout


# ---- power-of-two scales ------------------------------------------------------------------------
def test_power_of_two_scales_are_exact_powers_of_two() -> None:
    model, report, _ = converted("generic", tune=False, power_of_two_scales=True)
    scales = summarize(model).scales
    assert len(scales) > 30 and all(is_power_of_two(s) for s in scales)
    plain, _, _ = converted("generic", tune=False)
    assert not all(is_power_of_two(s) for s in summarize(plain).scales)  # the check above can fail
    onnx.checker.check_model(model, full_check=True)


def test_power_of_two_report_states_the_accuracy_cost() -> None:
    _, report, _ = converted("generic", tune=False, power_of_two_scales=True)
    stats = next(p["stats"] for p in report["passes"] if p["pass"] == "measure-fixed-point")
    assert set(stats["exact"]) == set(stats["power_of_two"]) == {"agreement", "cosine"}
    assert 0.9 < stats["power_of_two"]["cosine"] <= 1.0 and 1.0 <= stats["median_scale_ratio"] <= stats["max_scale_ratio"] < 2.0
    note = next(n for n in report["notes"] if n.startswith("power-of-two scales"))
    assert "exact scales" in note and "cosine" in note and "scales grew by" in note


def test_power_of_two_lint_flags_plain_scales_only() -> None:
    plain, _, _ = converted("generic", tune=False)
    pow2, _, _ = converted("generic", tune=False, power_of_two_scales=True)
    assert lint(plain, "generic", power_of_two=True).by_rule().get("non-power-of-two-scale") == 1
    assert "non-power-of-two-scale" not in lint(pow2, "generic", power_of_two=True).by_rule()


# ---- determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize(("target", "options"), [("tensorrt", {}), ("qnn", {}), ("generic", {"power_of_two_scales": True})])
def test_same_inputs_give_a_byte_identical_model(target: str, options: dict[str, bool]) -> None:
    """Targets whose tuner does not time (TensorRT, QNN, generic) decide on accuracy only: repeatable."""
    first = converted_bytes(target, **options)
    from onnxq.api import convert
    from onnxq.ir import to_proto

    again = convert(build("cnn"), "synthetic:4", dims={"N": 1}, target=target, samples=4, eval_samples=4, **options)
    assert to_proto(again.model).SerializeToString() == first


def test_cli_output_is_byte_identical_across_runs(cnn: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        code, _, err = invoke("convert", str(cnn), "-o", str(out), "--data", "synthetic:2", "--dim", "N=1", "--target", "tensorrt")
        assert code == 0, err
    assert a.read_bytes() == b.read_bytes()


def test_options_are_plain_data_for_the_report() -> None:
    opts = ConversionOptions(target="tensorrt", strict=True)
    assert opts.as_dict()["target"] == "tensorrt" and opts.changed()["int32_bias"] is False
    assert np.isfinite(opts.min_cosine)
