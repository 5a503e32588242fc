"""``smooth-activations alpha_grid=[...]``: alpha chosen per LayerNorm group by the int8 error of its MatMuls."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxq.errors import ConfigError
from onnxq.pass_base import make_pass
from onnxq.passes.quantization._smooth_search import int8_matmul_error
from onnxq.passes.quantization.smooth_activations import smoothing_scales
from tests.passes.quantization._compensation_util import outputs, run_steps, sqnr_db
from tests.passes.quantization._pass_util import parse_with

TWO_GROUPS = """
<ir_version: 8, opset_import: ["" : 17]>
ln (float[1,16,32] x) => (float[1,16,24] y) {
  [ln1] a = LayerNormalization <axis=-1> (x, g1, b1)
  [mm1] h = MatMul (a, w1)
  [ln2] c = LayerNormalization <axis=-1> (h, g2, b2)
  [mm2] y = MatMul (c, w2)
}
"""
WEIGHTS = {"g1": (32,), "b1": (32,), "w1": (32, 48), "g2": (48,), "b2": (48,), "w2": (48, 24)}
GRID = [0.1, 0.3, 0.5, 0.7, 0.9]


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    """Group 1 has activation outlier channels (LN scale x40 on 3 channels), group 2 weight outlier rows (x25)."""
    proto = parse_with(TWO_GROUPS, WEIGHTS, seed=4)
    inits = {t.name: t for t in proto.graph.initializer}

    def scaled(name: str, factor: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array((numpy_helper.to_array(inits[name]) * factor).astype(np.float32), name))

    g1 = np.ones(32)
    g1[[3, 11, 27]] = 40.0
    scaled("g1", g1)
    w2 = np.ones((48, 1))
    w2[[5, 30]] = 25.0
    scaled("w2", w2)
    return proto


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(n)]


def test_search_matches_the_best_fixed_alpha(model: onnx.ModelProto) -> None:
    calib, held_out = _feeds(16, 0), _feeds(8, 1)
    smoothed, _, recs = run_steps(model, [{"pass": "smooth-activations", "alpha_grid": GRID}], calib)
    alphas = recs["smooth-activations"].stats["alphas"]
    assert set(alphas) == {"ln1", "ln2"} and all(a in GRID for a in alphas.values())
    ref = outputs(model, held_out)
    assert sqnr_db(ref, outputs(smoothed, held_out)) > 80  # smoothing itself is exact
    quant = [{"pass": "calibrate", "method": "minmax"}, {"pass": "annotate-quantization"}, {"pass": "insert-qdq"}]

    def sqnr(smooth: dict) -> float:
        converted, _, _ = run_steps(model, [{"pass": "smooth-activations", **smooth}, *quant], calib)
        return sqnr_db(ref, outputs(converted, held_out))

    fixed = {a: sqnr({"alpha": a}) for a in GRID}  # measured 28.4 / 31.9 / 34.6 / 34.4 / 28.8 dB
    searched = sqnr({"alpha_grid": GRID})
    assert searched >= max(fixed.values()) - 0.5 and searched > min(fixed.values()) + 3.0, (fixed, searched)


def test_error_model_prefers_smoothing_outliers_away() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 32))
    x[:, 5] *= 50.0
    w = rng.standard_normal((32, 16))
    lo, hi = x.min(axis=0), x.max(axis=0)
    act, wmax = np.maximum(-lo, hi), np.abs(w).max(axis=1)
    none = int8_matmul_error(x, lo, hi, [w], np.ones(32))
    assert int8_matmul_error(x, lo, hi, [w], smoothing_scales(act, wmax, 0.5)) < 0.5 * none


def test_grid_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="alpha_grid"):
        make_pass("smooth-activations", {"alpha_grid": [0.5, 1.5]})


def test_no_layernorm_no_change() -> None:
    text = '<ir_version: 8, opset_import: ["" : 17]>\nc (float[1,4,8,8] x) => (float[1,8,8,8] y) {\n  [conv] y = Conv (x, w)\n}\n'
    conv = parse_with(text, {"w": (8, 4, 1, 1)})
    _, _, recs = run_steps(conv, [{"pass": "smooth-activations", "alpha_grid": GRID}], [{"x": np.ones((1, 4, 8, 8), np.float32)}])
    assert not recs["smooth-activations"].modified and recs["smooth-activations"].stats == {"smoothed": 0}


def test_search_seconds_bound_the_search_and_the_stats_say_so(model: onnx.ModelProto) -> None:
    calib = _feeds(4, 0)
    _, _, free = run_steps(model, [{"pass": "smooth-activations", "alpha_grid": GRID}], calib)
    assert free["smooth-activations"].stats["search_cut_short"] is False and free["smooth-activations"].stats["search_seconds"] >= 0
    _, _, cut = run_steps(model, [{"pass": "smooth-activations", "alpha_grid": GRID, "alpha": 0.42, "search_seconds": 1e-9}], calib)
    stats = cut["smooth-activations"].stats
    assert stats["search_cut_short"] is True and stats["smoothed"] == 2
    assert set(stats["alphas"].values()) == {0.42}  # out of time before any candidate: every group takes the fixed alpha


def test_search_seconds_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="search_seconds"):
        make_pass("smooth-activations", {"alpha_grid": GRID, "search_seconds": 0})
