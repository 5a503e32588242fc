"""``expand-hardswish``: same numbers as HardSwish in float, and a QLinearMul in onnxruntime's int8 graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models import build
from onnxq import PassManager, ir, make_pass
from onnxq.api import quantize_static
from tests.helpers import assert_same_outputs, checked, cosine, op_count, random_feeds, run


def _hardswish_model() -> ir.Model:
    model = ir.from_proto(build("mobilenet", input_size=32, width=8))
    return PassManager([make_pass("cleanup")], check=True).run(model).model


def test_expansion_matches_float_hardswish() -> None:
    model = _hardswish_model()
    assert op_count(model, "HardSwish") > 0
    res = PassManager([make_pass("expand-hardswish", {"when_no_kernel": False})], check=True).run(ir.clone(model))
    expanded = checked(res.model)
    assert op_count(expanded, "HardSwish") == 0
    assert res.records[0].stats["expanded"] == op_count(model, "HardSwish")
    feeds = random_feeds(model, seed=3, dims={"N": 2})
    assert_same_outputs(model, expanded, feeds, atol=1e-5, rtol=1e-4)


def test_expansion_follows_the_kernel_probe(monkeypatch) -> None:
    import onnxq.passes.quantization.expand_hardswish as eh

    monkeypatch.setattr(eh, "has_cpu_kernel", lambda *a, **k: True)
    res = PassManager([make_pass("expand-hardswish")], check=True).run(_hardswish_model())
    assert not res.records[0].modified and op_count(res.model, "HardSwish") > 0


def test_int8_graph_multiplies_in_int8(tmp_path: Path) -> None:
    """Quantized, every HardSwish becomes HardSigmoid + QLinearMul in onnxruntime's optimized graph."""
    src = build("mobilenet", input_size=32, width=8)
    data = [random_feeds(src, seed=i, dims={"N": 2}) for i in range(4)]
    res = quantize_static(src, data, tune=False)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(ir.to_proto(res.model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    hardswish_in_source = sum(1 for n in src.graph.node if n.op_type == "HardSwish")
    assert hardswish_in_source > 0
    assert "HardSwish" not in ops and "Mul" not in ops
    assert ops.count("QLinearMul") >= hardswish_in_source
    ref, out = run(src, data[0])[0], run(res.model, data[0])[0]
    assert cosine(ref, out) > 0.99
    assert np.isfinite(out).all()


def test_written_out_hardswish_still_narrows_its_input_range() -> None:
    """x · HardSigmoid(x) is 0 below x = -3, like HardSwish: the input's int8 grid need not cover it."""
    from onnx import TensorProto, helper

    from onnxq.passes.quantization._quantizers import saturating_interval

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(
        [
            helper.make_node("HardSigmoid", ["x"], ["g"], name="gate", alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", ["x", "g"], ["y"], name="hardswish"),
            helper.make_node("Mul", ["x", "y"], ["z"], name="plain"),
        ],
        "g",
        [x],
        [y, z],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    nodes = {n.name: n for n in ir.iter_nodes(model.graph)}
    assert saturating_interval(nodes["hardswish"]) == pytest.approx((-3.0, np.inf), rel=1e-6)  # alpha is stored as float32
    assert saturating_interval(nodes["gate"]) == pytest.approx((-3.0, 3.0), rel=1e-6)
    assert saturating_interval(nodes["plain"]) is None
