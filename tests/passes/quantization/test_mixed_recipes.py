"""Mixed recipes are pipelines (TOML), not flags: they run end to end and keep accuracy."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from models import build
from onnxq import ir
from onnxq.api import convert
from tests.helpers import checked, cosine, op_count, random_feeds, run

#: The recipes are TOML files, as a user writes them.
RECIPES = Path(__file__).parent / "recipes"

INT4_LARGE_MATMULS = RECIPES / "int4_large_matmuls.toml"

DYNAMIC_PLUS_FP16_STORAGE = RECIPES / "dynamic_plus_fp16_storage.toml"


@pytest.mark.parametrize("recipe, marker", [(INT4_LARGE_MATMULS, "MatMulNBits"), (DYNAMIC_PLUS_FP16_STORAGE, "DynamicQuantizeMatMul")])
def test_recipe(recipe: Path, marker: str) -> None:
    src = build("transformer", hidden=128, layers=2, vocab=500)
    res = convert(src, mode="dynamic", recipe=recipe)
    model = checked(res.model)
    assert op_count(model, marker) > 0
    assert res.report.to_dict()["bytes_after"] < 0.6 * res.report.to_dict()["bytes_before"]
    for i in range(2):
        f = random_feeds(src, seed=i, dims={"batch": 2, "seq": 12})
        assert cosine(run(src, f)[0], run(model, f)[0]) > 0.99


def test_int4_recipe_keeps_small_matmuls_float() -> None:
    src = build("mlp", in_features=256, hidden=(256,), num_classes=10)
    model = checked(convert(src, mode="weight-only", recipe=INT4_LARGE_MATMULS).model)
    assert op_count(model, "MatMulNBits") == 1 and op_count(model, "MatMul") + op_count(model, "Gemm") >= 1  # the 256x10 head stays float
    assert isinstance(ir.to_proto(model), onnx.ModelProto)


PRUNE_THEN_INT8 = RECIPES / "prune_then_int8.toml"


def test_prune_then_quantize_recipe() -> None:
    from onnxq.inspect import model_flops

    src = build("cnn", width=32)
    data = [random_feeds(src, seed=i, dims={"N": 1}) for i in range(8)]
    res = convert(src, data, mode="static", recipe=PRUNE_THEN_INT8)
    model = checked(res.model)
    assert op_count(model, "QuantizeLinear") > 5
    assert model_flops(model)["total"] < 0.8 * model_flops(ir.load(src))["total"]
    f = random_feeds(src, seed=20, dims={"N": 1})
    assert run(model, f)[0].shape == run(src, f)[0].shape
