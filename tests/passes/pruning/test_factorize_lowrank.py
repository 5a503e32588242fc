"""factorize-lowrank: exact on low-rank weights (MatMul, Gemm, 1x1 Conv), rank choice, skips, FLOPs report."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from models import build
from onnxq import ConfigError
from onnxq.passes.pruning.factorize_lowrank import FactorizeLowRankConfig, choose_rank
from tests.helpers import assert_same_outputs, checked, op_count, random_feeds
from tests.passes.pruning._models import init, model_of, run_pass, vi, weight

RNG = np.random.default_rng(0)


def low_rank(k: int, n: int, r: int) -> np.ndarray:
    return (RNG.standard_normal((k, r)) @ RNG.standard_normal((r, n))).astype(np.float32)


def test_matmul_exact_rank() -> None:
    src = model_of([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [vi("x", [2, 5, 32])], [vi("y", [2, 5, 24])], [init("w", low_rank(32, 24, 4))])
    model, modified, stats = run_pass(src, "factorize-lowrank", {"energy": 0.999999})
    assert modified and op_count(model, "MatMul") == 2
    entry = stats["layers"]["fc"]
    assert entry["rank"] == 4 and entry["shape"] == [32, 24] and entry["params_after"] == 4 * (32 + 24)
    assert entry["flops_before"] == 2 * 10 * 32 * 24 and entry["flops_after"] == 2 * 10 * 4 * (32 + 24)
    assert entry["relative_error"] < 1e-5
    assert weight(model, "fc").shape == (4, 24)
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4, rtol=1e-3)
    _, again, again_stats = run_pass(model, "factorize-lowrank", {"energy": 0.999999})
    assert not again and "does not reduce FLOPs" in again_stats["skipped"]["fc"]


@pytest.mark.parametrize("trans_a, trans_b", [(0, 1), (1, 0)])
def test_gemm_keeps_bias_alpha_beta_on_second(trans_a: int, trans_b: int) -> None:
    w = low_rank(32, 16, 3)
    a_shape = [32, 4] if trans_a else [4, 32]
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)
    src = model_of([node], [vi("x", a_shape)], [vi("y", [4, 16])], [init("w", w.T if trans_b else w), init("c", RNG.standard_normal(16).astype(np.float32))])
    model, modified, stats = run_pass(src, "factorize-lowrank", {"rank": 3})
    assert modified and op_count(model, "Gemm") == 2 and stats["layers"]["gemm"]["rank"] == 3
    second = next(n for n in model.graph.nodes if n.name == "gemm")
    assert len(second.inputs) == 3 and second.attrs["alpha"] == 0.5 and second.attrs["beta"] == 2.0
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4, rtol=1e-3)


def test_pointwise_conv_with_stride_and_bias() -> None:
    w = low_rank(24, 32, 2).T.reshape(32, 24, 1, 1)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="pw", strides=[2, 2])
    src = model_of([node], [vi("x", [1, 24, 6, 6])], [vi("y", [1, 32, 3, 3])], [init("w", w), init("b", RNG.standard_normal(32).astype(np.float32))])
    model, modified, stats = run_pass(src, "factorize-lowrank", {"flop_ratio": 0.2})
    assert modified and op_count(model, "Conv") == 2
    r = stats["layers"]["pw"]["rank"]
    assert r == int(0.2 * 24 * 32 / (24 + 32)) and weight(model, "pw").shape == (32, r, 1, 1)
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4, rtol=1e-3)


def test_skips_with_reasons() -> None:
    model, modified, stats = run_pass(build("cnn"), "factorize-lowrank", {"rank": 2})
    assert "only 1x1 Conv" in stats["skipped"]["stem/conv"]
    assert modified == bool(stats["layers"])
    _, modified, stats = run_pass(build("mlp"), "factorize-lowrank", {"rank": 64})
    assert not modified and "does not reduce FLOPs" in stats["skipped"]["layer1/fc/matmul"]


def test_transformer_and_mobilenet_run() -> None:
    for name, dims in (("transformer", {"batch": 2, "seq": 7}), ("mobilenet", {"N": 1})):
        src = build(name)
        model, modified, stats = run_pass(src, "factorize-lowrank", {"energy": 0.9})
        assert modified and stats["factorized"] > 0
        for entry in stats["layers"].values():
            assert entry["rank"] * sum(entry["shape"]) < entry["shape"][0] * entry["shape"][1]
            assert entry["energy_kept"] >= 0.9
        checked(model)
        random_feeds(model, dims=dims)


def test_choose_rank() -> None:
    sigma = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert choose_rank(sigma, 10, 10, FactorizeLowRankConfig(energy=0.7)) == 1
    assert choose_rank(sigma, 10, 10, FactorizeLowRankConfig(energy=0.9)) == 2
    assert choose_rank(sigma, 10, 10, FactorizeLowRankConfig(energy=1.0)) == 4
    assert choose_rank(sigma, 4, 6, FactorizeLowRankConfig(rank=9)) == 4  # capped at min(K, N)
    assert choose_rank(sigma, 100, 100, FactorizeLowRankConfig(flop_ratio=0.04)) == 2


@pytest.mark.parametrize("options", [{}, {"rank": 2, "energy": 0.5}, {"rank": 0}, {"energy": 0.0}, {"flop_ratio": 1.0}])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ConfigError):
        FactorizeLowRankConfig(**options)
