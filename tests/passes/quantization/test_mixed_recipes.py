"""Mixed recipes are pipelines (TOML), not flags: they run end to end and keep accuracy."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from models import build
from onnxq import ir
from onnxq.api import convert
from tests.helpers import checked, cosine, op_count, random_feeds, run

INT4_LARGE_MATMULS = """
# int4 weight-only for large MatMuls, fp32 elsewhere
[[passes]]
pass = "cleanup"

[[passes]]
pass = "quantize-weights-blockwise"
bits = 4
block_size = 32
min_k = 128
min_n = 128
scale_search = "mse"
"""

DYNAMIC_PLUS_FP16_STORAGE = """
# dynamic int8 projections + fp16 storage of the remaining float weights
[[passes]]
pass = "cleanup"

[[passes]]
pass = "quantize-dynamic"
min_weight_elements = 0

[[passes]]
pass = "convert-float16"
storage_only = true
"""


@pytest.mark.parametrize("recipe, marker", [(INT4_LARGE_MATMULS, "MatMulNBits"), (DYNAMIC_PLUS_FP16_STORAGE, "DynamicQuantizeMatMul")])
def test_recipe(tmp_path: Path, recipe: str, marker: str) -> None:
    src = build("transformer", hidden=128, layers=2, vocab=500)
    path = tmp_path / "recipe.toml"
    path.write_text(recipe)
    res = convert(src, mode="dynamic", recipe=path)
    model = checked(res.model)
    assert op_count(model, marker) > 0
    assert res.report.to_dict()["bytes_after"] < 0.6 * res.report.to_dict()["bytes_before"]
    for i in range(2):
        f = random_feeds(src, seed=i, dims={"batch": 2, "seq": 12})
        assert cosine(run(src, f)[0], run(model, f)[0]) > 0.99


def test_int4_recipe_keeps_small_matmuls_float(tmp_path: Path) -> None:
    src = build("mlp", in_features=256, hidden=(256,), num_classes=10)
    path = tmp_path / "recipe.toml"
    path.write_text(INT4_LARGE_MATMULS)
    model = checked(convert(src, mode="weight-only", recipe=path).model)
    assert op_count(model, "MatMulNBits") == 1 and op_count(model, "MatMul") + op_count(model, "Gemm") >= 1  # the 256x10 head stays float
    assert isinstance(ir.to_proto(model), onnx.ModelProto)


PRUNE_THEN_INT8 = """
# prune channels, calibrate the pruned model, quantize
[[passes]]
pass = "cleanup"

[[passes]]
pass = "prune-channels"
ratio = 0.3

[[passes]]
pass = "calibrate"

[[passes]]
pass = "annotate-quantization"

[[passes]]
pass = "insert-qdq"
"""


def test_prune_then_quantize_recipe(tmp_path: Path) -> None:
    from onnxq.inspect import model_flops

    src = build("cnn", width=32)
    path = tmp_path / "recipe.toml"
    path.write_text(PRUNE_THEN_INT8)
    data = [random_feeds(src, seed=i, dims={"N": 1}) for i in range(8)]
    res = convert(src, data, mode="static", recipe=path)
    model = checked(res.model)
    assert op_count(model, "QuantizeLinear") > 5
    assert model_flops(model)["total"] < 0.8 * model_flops(ir.load(src))["total"]
    f = random_feeds(src, seed=20, dims={"N": 1})
    assert run(model, f)[0].shape == run(src, f)[0].shape
