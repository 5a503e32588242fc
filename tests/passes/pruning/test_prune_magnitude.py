"""prune-magnitude: per-layer / global / threshold modes, layer selection, quantized weights, bad options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import build
from onnxq import ConfigError, PreconditionError, ir
from onnxq.inspect import weight_sparsity
from tests.helpers import assert_same_outputs, checked, random_feeds, run
from tests.passes.pruning._models import initializers, quantized_linear, run_pass, weight

MLP_LAYERS = ["layer1/fc/matmul", "layer2/fc/matmul", "head/fc/matmul"]


def _mlp_weights(model: ir.Model) -> dict[str, np.ndarray]:
    return {name: weight(model, name) for name in MLP_LAYERS}


def test_per_layer_sparsity_zeroes_exactly_the_smallest() -> None:
    src = build("mlp")
    before = _mlp_weights(ir.load(src))
    model, modified, stats = run_pass(src, "prune-magnitude", {"sparsity": 0.3})
    assert modified and stats["pruned_layers"] == 3
    for name, w in _mlp_weights(model).items():
        original = before[name]
        k = math.floor(0.3 * original.size)
        expected = original.copy().ravel()
        expected[np.argsort(np.abs(original).ravel(), kind="stable")[:k]] = 0
        np.testing.assert_array_equal(w.ravel(), expected)
        assert stats["layers"][name] == {"op": "MatMul", "params": original.size, "before": 0.0, "after": round(k / original.size, 4)}
    # numerics: onnxruntime on the pruned model equals numpy with the same weights
    feeds = random_feeds(src, seed=2, dims={"N": 3})
    x = feeds["input"]
    weights = initializers(ir.to_proto(model))
    for i, name in enumerate(["layer1/fc", "layer2/fc", "head/fc"]):
        x = x @ weights[f"{name}/weight"] + weights[f"{name}/bias"]
        x = np.maximum(x, 0) if i < 2 else x
    np.testing.assert_allclose(run(checked(model), feeds)[0], x, atol=1e-5, rtol=1e-4)


def test_modified_is_truthful() -> None:
    model, modified, _ = run_pass(build("mlp"), "prune-magnitude", {"sparsity": 0.5})
    assert modified
    _, again, _ = run_pass(model, "prune-magnitude", {"sparsity": 0.5})
    assert not again  # already 50% zeros: nothing to change
    _, zero, stats = run_pass(build("mlp"), "prune-magnitude", {"sparsity": 0.0})
    assert not zero and stats["sparsity_after"] == 0.0
    _, lower, _ = run_pass(model, "prune-magnitude", {"sparsity": 0.2})
    assert not lower


@pytest.mark.parametrize("normalize", ["none", "l2", "mean"])
def test_global_sparsity_hits_the_total(normalize: str) -> None:
    model, modified, stats = run_pass(build("cnn"), "prune-magnitude", {"global_sparsity": 0.6, "normalize": normalize})
    assert modified
    total = stats["params"]
    zeros = sum(round(e["after"] * e["params"]) for e in stats["layers"].values())
    assert abs(zeros - math.floor(0.6 * total)) <= len(stats["layers"])  # per-layer fractions are rounded
    assert abs(weight_sparsity(model)["overall"] - 0.6) < 0.01
    per_layer = [e["after"] for e in stats["layers"].values()]
    if normalize != "mean":  # raw (or L2-normalized) He-init magnitudes differ by layer: uneven pruning
        assert max(per_layer) - min(per_layer) > 0.05
    else:  # |w| / mean|w| puts Gaussian layers on one scale: every layer near the global fraction
        assert max(per_layer) - min(per_layer) < 0.05


def test_global_normalization_changes_the_ranking() -> None:
    src = build("cnn")
    a = run_pass(src, "prune-magnitude", {"global_sparsity": 0.5})[2]["layers"]
    b = run_pass(src, "prune-magnitude", {"global_sparsity": 0.5, "normalize": "mean"})[2]["layers"]
    assert any(a[k]["after"] != b[k]["after"] for k in a)


def test_threshold() -> None:
    src = build("mlp")
    before = _mlp_weights(ir.load(src))
    model, modified, stats = run_pass(src, "prune-magnitude", {"threshold": 0.05})
    assert modified and stats["mode"] == "threshold"
    for name, w in _mlp_weights(model).items():
        small = np.abs(before[name]) < 0.05
        assert (w[small] == 0).all() and np.array_equal(w[~small], before[name][~small])


def test_layer_selection() -> None:
    src = build("mlp")
    _, _, stats = run_pass(src, "prune-magnitude", {"sparsity": 0.5, "skip_first_last": True})
    assert list(stats["layers"]) == ["layer2/fc/matmul"]
    assert "first/last" in stats["skipped"]["layer1/fc/matmul"] and "first/last" in stats["skipped"]["head/fc/matmul"]
    _, _, stats = run_pass(src, "prune-magnitude", {"sparsity": 0.5, "exclude_names": ["^head/"]})
    assert list(stats["layers"]) == MLP_LAYERS[:2] and "exclude pattern '^head/'" in stats["skipped"]["head/fc/matmul"]
    _, _, stats = run_pass(src, "prune-magnitude", {"sparsity": 0.5, "layers": ["layer2/fc/matmul"]})
    assert list(stats["layers"]) == ["layer2/fc/matmul"]
    _, _, stats = run_pass(build("cnn"), "prune-magnitude", {"sparsity": 0.5, "exclude_ops": ["Gemm"]})
    assert "head/fc" not in stats["layers"] and "op Gemm is excluded" in stats["skipped"]["head/fc"]


def test_unknown_layer_name_is_refused_with_valid_names() -> None:
    with pytest.raises(PreconditionError, match=r"layer 'layer9/fc' does not exist.*'layer1/fc/matmul'"):
        run_pass(build("mlp"), "prune-magnitude", {"sparsity": 0.5, "layers": ["layer9/fc"]})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
        ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\)"),
        ({"sparsity": float("nan")}, r"sparsity must be in \[0, 1\)"),
        ({"global_sparsity": 1.5}, r"global_sparsity must be in \[0, 1\)"),
        ({}, "exactly one of"),
        ({"sparsity": 0.5, "threshold": 0.1}, "exactly one of"),
        ({"threshold": -1.0}, "threshold must be"),
        ({"sparsity": 0.5, "normalize": "l2"}, "normalize only applies"),
        ({"sparsity": 0.5, "normalize": "max"}, "must be one of"),
        ({"sparsity": 0.5, "exclude_names": ["("]}, "not a valid regular expression"),
        ({"sparsity": 0.5, "exclude_ops": ["Relu"]}, "not layer ops"),
        ({"sparsity": 0.5, "bogus": 1}, "unknown option"),
    ],
)
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_pass(build("mlp"), "prune-magnitude", options)


@pytest.mark.parametrize("zero_point, per_channel", [(0, False), (7, False), (-3, True)])
def test_quantized_weights_pruned_to_the_zero_point(zero_point: int, per_channel: bool) -> None:
    src = quantized_linear(zero_point, per_channel)
    q = initializers(src)["q"]
    model, modified, stats = run_pass(src, "prune-magnitude", {"sparsity": 0.5})
    assert modified and "zero point" in stats["layers"]["fc"]["quantized"]
    new_q = initializers(ir.to_proto(model))["q"]
    assert new_q.dtype == np.int8 and stats["layers"]["fc"]["after"] == 0.5
    pruned = new_q != q
    assert (new_q[pruned] == zero_point).all() and (new_q == zero_point).mean() >= 0.5
    assert_same_outputs(model, model, random_feeds(src))  # runs in onnxruntime
    # the dequantized weight is exactly zero where pruned, unchanged elsewhere
    scale = initializers(src)["scale"]
    deq_before = (q.astype(np.float32) - zero_point) * scale
    deq_after = (new_q.astype(np.float32) - zero_point) * scale
    assert (deq_after[pruned] == 0).all() and np.array_equal(deq_after[~pruned], deq_before[~pruned])
    _, skipped_mod, stats = run_pass(src, "prune-magnitude", {"sparsity": 0.5, "quantized": "skip"})
    assert not skipped_mod and "quantized" in stats["skipped"]["fc"]
