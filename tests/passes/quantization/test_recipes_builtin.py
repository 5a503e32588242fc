"""The built-in recipes ``accurate`` and ``fast``: resolved by name (a path still works), run from the Python
API and from ``onnxq convert --recipe``, and ``accurate``'s compensation worth its 6 dB goal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxq
from onnxq import ir
from onnxq.api import load_recipe
from onnxq.api.recipes import builtin_recipes
from onnxq.errors import ConfigError
from tests.helpers import invoke
from tests.passes.quantization._compensation_util import outputs, run_steps, sqnr_db
from tests.passes.quantization._separable_model import build_separable_cnn, image_samples

CALIB = image_samples(16, 1)
HELD_OUT = image_samples(8, 2, batch=4)
PER_TENSOR = {"annotate-quantization": {"per_channel": False}}
QUICK = {"adaround": {"iterations": 300, "seconds_per_layer": 1.0, "samples": 16}, "tune-latency": {"budget_s": 2.0}}


@pytest.fixture(scope="module")
def separable() -> onnx.ModelProto:
    return build_separable_cnn()


def test_names_resolve_and_paths_still_work(tmp_path: Path) -> None:
    assert {"accurate", "compact", "fast"} <= set(builtin_recipes())
    accurate = [s["pass"] for s in load_recipe("accurate")]
    assert accurate.index("record-batchnorm-stats") < accurate.index("cleanup") < accurate.index("equalize-cross-layer") < accurate.index("calibrate")
    assert accurate.index("tune-latency") < accurate.index("adaround") < accurate.index("correct-bias") < accurate.index("insert-qdq")
    assert {"pass": "calibrate", "method": "minmax"} in load_recipe("fast")
    mine = tmp_path / "accurate"  # a file wins over the built-in of the same name
    mine.write_text('[[passes]]\npass = "cleanup"\n')
    assert load_recipe(str(mine)) == [{"pass": "cleanup"}]
    with pytest.raises(ConfigError, match=r"neither a file nor a built-in recipe \(built-in: accurate, compact, fast"):
        load_recipe("acurate")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe("missing.toml")


def test_fast_is_the_plain_min_max_pipeline(separable: onnx.ModelProto) -> None:
    api = onnxq.convert(separable, CALIB, recipe="fast")
    assert [p.name for p in api.report.passes] == [s["pass"] for s in load_recipe("fast")]
    steps = [{"pass": "upgrade-opset", "target": 17}, {"pass": "cleanup"}, {"pass": "expand-hardswish"}, {"pass": "calibrate", "method": "minmax"},
             {"pass": "annotate-quantization"}, {"pass": "choose-weight-range"}, {"pass": "insert-qdq"}]
    explicit, _, _ = run_steps(separable, steps, CALIB)
    assert ir.to_proto(api.model).SerializeToString() == ir.to_proto(explicit).SerializeToString()


def test_accurate_from_the_api(separable: onnx.ModelProto) -> None:
    result = onnxq.convert(separable, CALIB, recipe="accurate", pass_options={**PER_TENSOR, **QUICK})
    assert [p.name for p in result.report.passes] == [s["pass"] for s in load_recipe("accurate")]
    ref = outputs(separable, HELD_OUT)
    fast = onnxq.convert(separable, CALIB, recipe="fast", pass_options=PER_TENSOR)
    # whatever the guard decides on this machine (this model is tiny: int8 may well be slower, then it stays float)
    assert sqnr_db(ref, outputs(result.model, HELD_OUT)) > sqnr_db(ref, outputs(fast.model, HELD_OUT)) + 6.0


def test_accurate_compensation_gains_6_db_over_plain_per_tensor(separable: onnx.ModelProto) -> None:
    """The recipe without its guard (which may return nodes to float): the compensation alone."""
    from onnxq.api.pipelines import PipelineInputs, build_steps

    opts = onnxq.ConversionOptions(recipe="accurate", pass_options={**PER_TENSOR, **QUICK})
    steps = [s for s in build_steps(opts, PipelineInputs(True, False)) if s["pass"] != "tune-latency"]
    compensated, _, recs = run_steps(separable, steps, CALIB)
    assert recs["adaround"].stats["improved"] >= 6 and recs["equalize-cross-layer"].stats["pairs"] == 7
    plain = onnxq.convert(separable, CALIB, recipe="fast", pass_options=PER_TENSOR)
    ref = outputs(separable, HELD_OUT)
    gain = sqnr_db(ref, outputs(compensated, HELD_OUT)) - sqnr_db(ref, outputs(plain.model, HELD_OUT))
    assert gain >= 6.0, gain  # measured +18.7 dB (12.7 -> 31.4 dB)


@pytest.fixture()
def files(tmp_path: Path, separable: onnx.ModelProto) -> tuple[Path, Path]:
    model = tmp_path / "separable.onnx"
    model.write_bytes(separable.SerializeToString())
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, feed in enumerate(CALIB[:8]):
        np.savez(folder / f"{i}.npz", **feed)
    return model, folder


@pytest.mark.parametrize("recipe", ["fast", "accurate"])
def test_from_the_cli(files: tuple[Path, Path], tmp_path: Path, recipe: str) -> None:
    model, folder = files
    out, report = tmp_path / f"{recipe}.onnx", tmp_path / f"{recipe}.json"
    options = ["--pass-option", "adaround.seconds_per_layer=0.5", "--pass-option", "tune-latency.budget_s=2.0"] if recipe == "accurate" else []
    code, _, err = invoke("convert", str(model), "-o", str(out), "--data", str(folder), "--recipe", recipe, "--report", str(report), *options)
    assert code == 0, err
    rep = json.loads(report.read_text())
    assert [p["pass"] for p in rep["passes"]] == [s["pass"] for s in load_recipe(recipe)]
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    outputs(onnx.load(str(out)), HELD_OUT[:1])
