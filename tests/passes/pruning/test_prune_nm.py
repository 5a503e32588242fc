"""prune-nm: the N:M checker, the reduction axis per op, skips, quantized weights, modified both ways."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from models import build
from onnxq import ConfigError, PreconditionError, ir
from onnxq.passes.pruning import check_nm_sparsity, nm_violations
from onnxq.passes.pruning.prune_nm import nm_mask
from tests.helpers import assert_same_outputs, checked, random_feeds, run
from tests.passes.pruning._models import init, initializers, model_of, quantized_linear, run_pass, vi, weight

RNG = np.random.default_rng(0)


def test_checker_and_violations() -> None:
    w = np.zeros((2, 8, 3))
    assert check_nm_sparsity(w, 1, 2, 4)
    w[1, 4:7, 2] = 1.0  # three non-zeros in the group starting at channel 4
    assert not check_nm_sparsity(w, 1, 2, 4)
    np.testing.assert_array_equal(nm_violations(w, 1, 2, 4), [[1, 4, 2]])
    assert check_nm_sparsity(w, 1, 3, 4) and not check_nm_sparsity(w, -2, 2, 4)
    with pytest.raises(ConfigError, match="not a multiple of m=4"):
        check_nm_sparsity(np.ones((3, 6)), 1, 2, 4)


@pytest.mark.parametrize("n, m, axis", [(2, 4, 1), (1, 4, 0), (2, 8, 2), (4, 8, -1)])
def test_mask_makes_weights_nm_sparse_keeping_the_largest(n: int, m: int, axis: int) -> None:
    w = RNG.standard_normal((8, 16, 8))
    mask = nm_mask(w, axis, n, m)
    pruned = np.where(mask, 0, w)
    assert check_nm_sparsity(pruned, axis, n, m)
    assert mask.mean() == pytest.approx((m - n) / m)
    groups = np.moveaxis(np.abs(w), axis, -1).reshape(-1, m)
    kept = np.moveaxis(~mask, axis, -1).reshape(-1, m)
    assert (groups[kept].reshape(-1, n).min(axis=1) >= groups[~kept].reshape(-1, m - n).max(axis=1)).all()


def test_cnn_conv_and_gemm_axes_and_skips() -> None:
    src = build("cnn")
    model, modified, stats = run_pass(src, "prune-nm")
    assert modified and stats["pattern"] == "2:4"
    assert "not a multiple of m=4" in stats["skipped"]["stem/conv"]  # 3 input channels
    assert "not a multiple of m=4" in stats["skipped"]["head/depthwise/conv"]  # 1 channel per group
    for name, entry in stats["layers"].items():
        axis = 1 if entry["op"] in ("Conv", "Gemm") else 0  # Conv W[O, I, kh, kw]; Gemm transB=1 W[N, K]
        assert entry["axis"] == axis
        assert check_nm_sparsity(weight(model, name), axis, 2, 4), name
        assert entry["after"] >= 0.5
    checked(model)
    _, again, _ = run_pass(model, "prune-nm")
    assert not again


def test_matmul_and_gemm_without_trans_use_axis_0() -> None:
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="gemm"), helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm")]
    inits = [init("w1", RNG.standard_normal((8, 12)).astype(np.float32)), init("w2", RNG.standard_normal((12, 3)).astype(np.float32))]
    src = model_of(nodes, [vi("x", [2, 8])], [vi("y", [2, 3])], inits)
    model, modified, stats = run_pass(src, "prune-nm", {"n": 1, "m": 4})
    assert modified and stats["layers"]["gemm"]["axis"] == 0 and stats["layers"]["mm"]["axis"] == 0
    assert check_nm_sparsity(weight(model, "gemm"), 0, 1, 4) and check_nm_sparsity(weight(model, "mm"), 0, 1, 4)
    # numerics: onnxruntime equals numpy with the pruned weights
    feeds = random_feeds(src)
    expected = feeds["x"] @ weight(model, "gemm") @ weight(model, "mm")
    np.testing.assert_allclose(run(checked(model), feeds)[0], expected, atol=1e-5, rtol=1e-4)


def test_transformer_matmuls() -> None:
    model, modified, stats = run_pass(build("transformer"), "prune-nm", {"n": 2, "m": 8})
    assert modified and len(stats["layers"]) == 6
    for name in stats["layers"]:
        assert check_nm_sparsity(weight(model, name), 0, 2, 8)


def test_quantized_with_zero_point() -> None:
    src = quantized_linear(zero_point=5, per_channel=False)
    model, modified, stats = run_pass(src, "prune-nm")
    assert modified and "zero point" in stats["layers"]["fc"]["quantized"]
    q = initializers(ir.to_proto(model))["q"]
    assert check_nm_sparsity(q.astype(np.int32) - 5, 0, 2, 4)
    assert_same_outputs(model, model, random_feeds(src))


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"n": 4, "m": 4}, ConfigError, r"n must be in \[1, m\)"),
        ({"n": 0}, ConfigError, "n must be"),
        ({"m": 1, "n": 1}, ConfigError, "m must be"),
        ({"layers": ["nope"]}, PreconditionError, "layer 'nope' does not exist"),
    ],
)
def test_bad_options(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        run_pass(build("mlp"), "prune-nm", options)
