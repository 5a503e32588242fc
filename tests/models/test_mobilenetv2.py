"""Tests of the MobileNetV2-like builder (``models/_mobilenetv2.py``, registered as ``mobilenetv2``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from models import BUILDERS, ModelArgumentError, build, build_mobilenet_v2_like


def _run(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> np.ndarray:
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_registered_under_its_short_name() -> None:
    assert BUILDERS["mobilenetv2"] is build_mobilenet_v2_like


@pytest.mark.parametrize("kwargs", [{}, {"input_size": 64, "width_mult": 1.0, "num_classes": 7}])
def test_builds_passes_full_checker_and_runs_with_finite_outputs(kwargs: dict[str, object]) -> None:
    model = build("mobilenetv2", **kwargs)
    onnx.checker.check_model(model, full_check=True)
    logits = _run(model)
    assert logits.shape == (2, kwargs.get("num_classes", 10))
    assert np.isfinite(logits).all()
    assert logits.std() > 0  # not collapsed to a constant


def test_structure_is_mobilenet_v2() -> None:
    model = build("mobilenetv2")
    ops = Counter(n.op_type for n in model.graph.node)
    depthwise = [n for n in model.graph.node if n.op_type == "Conv" and next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(depthwise) == 17  # one per inverted-residual block
    assert ops["Add"] == 10  # residuals where stride 1 and the widths match
    assert ops["Clip"] == ops["Conv"] - 17  # ReLU6 after every Conv but the 17 linear projections
    assert ops["BatchNormalization"] == ops["Conv"] and ops["Gemm"] == 1
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    bounds = {t.name: float(numpy_helper.to_array(t)) for t in model.graph.initializer if t.name in clip.input[1:]}
    assert sorted(bounds.values()) == [0.0, 6.0]


def test_same_seed_gives_identical_bytes_and_another_seed_changes_weights() -> None:
    first = build("mobilenetv2", seed=5).SerializeToString()
    assert build("mobilenetv2", seed=5).SerializeToString() == first
    assert build("mobilenetv2", seed=6).SerializeToString() != first


def test_width_multiplier_scales_the_channels() -> None:
    def widths(model: onnx.ModelProto) -> list[int]:
        return [t.dims[0] for t in model.graph.initializer if t.name.endswith("conv_dw/weight")]

    half, full = widths(build("mobilenetv2", width_mult=0.5)), widths(build("mobilenetv2", width_mult=1.0))
    assert len(half) == len(full) == 17
    assert all(h <= f for h, f in zip(half, full)) and sum(half) < sum(full)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ModelArgumentError, match="multiple of 32"):
        build("mobilenetv2", input_size=48)
    with pytest.raises(ModelArgumentError, match="width_mult > 0"):
        build("mobilenetv2", width_mult=0.0)
