"""cluster-weights: deterministic 1-D k-means, Gather codebooks, the 8-bit DequantizeLinear case, sizes, skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from models import build
from onnxq import ConfigError, ir
from onnxq.passes.compression import is_uniform, kmeans_1d
from tests.helpers import checked, cosine, op_count, random_feeds, run
from tests.passes.pruning._models import init, initializers, model_of, quantized_linear, run_pass, vi

RNG = np.random.default_rng(0)


def test_kmeans_is_deterministic_and_improves_on_its_init() -> None:
    x = RNG.standard_normal(5000)
    c1, i1 = kmeans_1d(x, 16)
    c2, i2 = kmeans_1d(x, 16)
    assert np.array_equal(c1, c2) and np.array_equal(i1, i2)
    assert c1.size == 16 and (np.diff(c1) > 0).all() and i1.max() == 15
    init_only, idx0 = kmeans_1d(x, 16, iterations=1)
    assert np.mean((x - c1[i1]) ** 2) < np.mean((x - init_only[idx0]) ** 2)
    np.testing.assert_array_equal(np.abs(x[:, None] - c1[None, :]).argmin(axis=1), i1)  # nearest centroid


def test_kmeans_is_lossless_with_few_distinct_values() -> None:
    x = np.array([0.5, -1.0, 0.5, 2.0, -1.0])
    codebook, index = kmeans_1d(x, 4)
    np.testing.assert_array_equal(codebook[index], x)


def test_is_uniform() -> None:
    assert is_uniform(np.arange(256) * 0.01 - 1.0, 0.05)
    assert not is_uniform(np.sort(RNG.standard_normal(256)), 0.05)


def test_gather_codebook_on_mlp(tmp_path: Path) -> None:
    src = build("mlp", hidden=(128, 64))
    model, modified, stats = run_pass(src, "cluster-weights", {"bits": 4, "min_params": 0})
    assert modified and stats["clustered"] == 3
    assert op_count(model, "Gather") == 3 and op_count(model, "Cast") == 3
    values = initializers(ir.to_proto(model))
    original = initializers(src)
    for name, entry in stats["layers"].items():
        w = original[name.replace("/matmul", "/weight")]
        idx, book = values[f"{name.replace('/matmul', '/weight')}/indices"], values[f"{name.replace('/matmul', '/weight')}/codebook"]
        assert idx.dtype == np.uint8 and idx.shape == w.shape and book.dtype == np.float32 and book.size <= 16
        assert entry["mode"] == "gather" and entry["bytes_after"] == w.size + 4 * book.size
        recon = book[idx]
        assert entry["rmse"] == pytest.approx(float(np.sqrt(np.mean((w - recon) ** 2))), rel=1e-4)
        assert entry["relative_error"] < 0.15
    feeds = random_feeds(src, dims={"N": 4})
    assert cosine(run(src, feeds)[0], run(checked(model), feeds)[0]) > 0.98
    before = ir.save(ir.load(src), tmp_path / "a.onnx").stat().st_size
    after = ir.save(model, tmp_path / "b.onnx").stat().st_size
    assert after < 0.4 * before


def test_eight_bit_uniform_centroids_become_dequantize_linear() -> None:
    grid = (np.arange(256) - 100) * 0.01  # 256 evenly spaced values, zero included
    w = RNG.permutation(np.tile(grid, 8))[: 64 * 32].reshape(64, 32).astype(np.float32)
    src = model_of([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [vi("x", [3, 64])], [vi("y", [3, 32])], [init("w", w)])
    model, modified, stats = run_pass(src, "cluster-weights", {"bits": 8, "min_params": 0})
    assert modified and stats["layers"]["fc"]["mode"] == "dequantize"
    assert op_count(model, "DequantizeLinear") == 1 and op_count(model, "Gather") == 0
    assert stats["layers"]["fc"]["max_abs_error"] < 1e-6
    feeds = random_feeds(src)
    # onnxruntime fuses DQ(uint8) → MatMul into MatMulNBits, which quantizes activations to int8 at its
    # default accuracy level 4; level 0 keeps float maths, so the expanded weight is exact
    so = ort.SessionOptions()
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    exact = ort.InferenceSession(ir.to_proto(checked(model)).SerializeToString(), so, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(exact.run(None, feeds)[0], run(src, feeds)[0], atol=1e-5, rtol=1e-5)
    assert cosine(run(model, feeds)[0], run(src, feeds)[0]) > 0.999  # default session options
    _, _, gaussian = run_pass(build("mlp", hidden=(128, 64)), "cluster-weights", {"bits": 8, "min_params": 0})
    assert {e["mode"] for e in gaussian["layers"].values()} == {"gather"}  # k-means on Gaussians is not uniform


def test_skips_and_modified_false() -> None:
    _, modified, stats = run_pass(build("mlp"), "cluster-weights", {"bits": 4, "min_params": 100_000})
    assert not modified and "min_params" in stats["skipped"]["layer1/fc/matmul"]
    _, modified, stats = run_pass(quantized_linear(0, False), "cluster-weights", {"min_params": 0})
    assert not modified and "already quantized" in stats["skipped"]["fc"]


@pytest.mark.parametrize("options", [{"bits": 1}, {"bits": 9}, {"min_params": -1}, {"init": "random"}, {"uniform_tolerance": 1.5}])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ConfigError):
        run_pass(build("mlp"), "cluster-weights", options)
