"""Each failure class of the incumbent static quantizer, reproduced on a small model of that shape.

Numerics are compared with onnxruntime fp32 on the same inputs; tolerances are stated per test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import build
from onnxq import CalibrationDataError, CalibrationError, PreconditionError, ir
from onnxq.api import quantize_static
from onnxq.data import open_source
from onnxq.passes.quantization.insert_qdq import guard_bias_overflow
from tests.helpers import checked, cosine, optimized_ops, random_feeds, run, sqnr_db


def _synthetic(proto: onnx.ModelProto, n: int, seed: int = 0, **dims: int) -> list[dict[str, np.ndarray]]:
    return [random_feeds(proto, seed=seed + i, dims=dims) for i in range(n)]


def _decisions(result) -> dict[str, dict]:
    return {d["node"]: d for d in result.report.to_dict().get("float_nodes", [])}


def _paddle_like(opset: int = 11) -> onnx.ModelProto:
    """Conv weights in Constant nodes, BatchNorm as Mul/Add, opset 11 — like Paddle2ONNX exports."""
    rng = np.random.default_rng(0)
    nodes = []
    x = "x"
    for i, (cin, cout) in enumerate([(3, 8), (8, 8)]):
        w = (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32)
        nodes += [
            helper.make_node("Constant", [], [f"w{i}"], value=numpy_helper.from_array(w)),
            helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Constant", [], [f"s{i}"], value=numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, cout, 1, 1)).astype(np.float32))),
            helper.make_node("Mul", [f"c{i}", f"s{i}"], [f"m{i}"]),
            helper.make_node("Constant", [], [f"t{i}"], value=numpy_helper.from_array(rng.standard_normal((1, cout, 1, 1)).astype(np.float32))),
            helper.make_node("Add", [f"m{i}", f"t{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"]))
    g = helper.make_graph(
        nodes,
        "paddle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    onnx.checker.check_model(m, full_check=True)
    return m


def test_old_opset_constant_weights_load_and_stay_accurate() -> None:
    src = _paddle_like(11)
    res = quantize_static(src, _synthetic(src, 16), tune=False)
    model = checked(res.model)
    assert model.opset >= 13 and any("opset upgraded from 11" in n for n in res.report.to_dict()["notes"])
    convs = [n for n in ir.iter_nodes(model.graph) if n.op == "Conv"]
    for conv in convs:  # weights are int8 initializers behind per-channel DequantizeLinear
        dq = ir.producer(conv.inputs[1])
        assert dq is not None and dq.op == "DequantizeLinear" and ir.const_value(dq.inputs[0]).dtype == np.int8
        assert dq.attrs.get("axis") == 0 and ir.const_value(dq.inputs[1]).size == conv.inputs[1].shape[0]
    for feeds in _synthetic(src, 4, seed=100):
        assert sqnr_db(run(src, feeds)[0], run(model, feeds)[0]) > 25


def test_opset_upgrade_failure_falls_back_to_per_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxq.passes.cleanup.upgrade_opset as up

    def refuse(model, target):
        raise PreconditionError("converter cannot handle this model")

    monkeypatch.setattr(up, "upgrade_opset", refuse)
    src = _paddle_like(11)
    res = quantize_static(src, _synthetic(src, 8), tune=False)
    model = checked(res.model)
    assert model.opset == 11 and any("per-tensor" in n for n in res.report.to_dict()["notes"])
    assert all("axis" not in n.attrs for n in ir.iter_nodes(model.graph) if n.op == "DequantizeLinear")


def test_no_temp_files_and_no_symbolic_shape_inference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = build("cnn")
    quantize_static(src, _synthetic(src, 4, N=1), tune=False)
    assert list(tmp_path.iterdir()) == []


def test_detector_concat_of_disparate_ranges_keeps_probabilities() -> None:
    src = build("detector")
    calib = _synthetic(src, 16, N=1)
    res = quantize_static(src, calib, tune=False)
    model = checked(res.model)
    concat = next(n for n in ir.load(src).graph.nodes if n.op == "Concat")
    assert "disparate ranges" in _decisions(res)[concat.name]["reason"]
    for feeds in _synthetic(src, 4, seed=50, N=1):
        ref = run(src, feeds)[0]
        got = run(model, feeds)[0]
        probs_ref, probs_got = ref[..., 4:], got[..., 4:]
        assert np.abs(probs_got - probs_ref).max() < 0.05  # probabilities survive (not crushed to 0)
        assert cosine(ref[..., :4], got[..., :4]) > 0.999


def test_attention_mask_stays_float_and_embeddings_accurate() -> None:
    src = build("transformer", hidden=64, layers=2)
    calib = []
    for i in range(8):
        f = random_feeds(src, seed=i, dims={"batch": 2, "seq": 16})
        f["attention_mask"][:, 10:] = 0
        calib.append(f)
    res = quantize_static(src, calib, tune=False)
    model = checked(res.model)
    reasons = {d["node"]: d["reason"] for d in res.report.to_dict()["float_nodes"]}
    softmaxes = [n.name for n in ir.load(src).graph.nodes if n.op == "Softmax"]
    assert softmaxes and all(n in reasons for n in softmaxes)
    assert res.report.to_dict()["quantized_nodes"] > 0
    for i in range(3):
        f = random_feeds(src, seed=100 + i, dims={"batch": 2, "seq": 16})
        f["attention_mask"][:, 12:] = 0
        ref, got = run(src, f)[0], run(model, f)[0]
        keep = f["attention_mask"].astype(bool)
        assert cosine(ref[keep], got[keep]) > 0.99


def test_decomposed_layernorm_kept_float() -> None:
    src = build("layernorm-classifier")
    res = quantize_static(src, _synthetic(src, 16, N=2), tune=False)
    model = checked(res.model)
    reasons = [d["reason"] for d in res.report.to_dict()["float_nodes"]]
    assert sum("decomposed LayerNorm" in r for r in reasons) >= 7
    agree = []
    for feeds in _synthetic(src, 8, seed=40, N=4):
        ref, got = run(src, feeds)[0], run(model, feeds)[0]
        agree.append(np.mean(ref.argmax(-1) == got.argmax(-1)))
        assert cosine(ref, got) > 0.99
    assert np.mean(agree) >= 0.95


def test_bias_overflow_guard_is_vectorized() -> None:
    bias = np.array([1e6, 1.0, -3e6], np.float32)
    s_w = np.array([1e-9, 1e-3, 1e-9])
    raised, n = guard_bias_overflow(bias, 1e-3, s_w)
    assert n == 2 and raised[1] == 1e-3
    assert np.all(np.abs(bias / (1e-3 * raised)) <= 2**31 - 1)


def test_bias_overflow_handled_end_to_end() -> None:
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((4, 3, 1, 1)) * 1e-6).astype(np.float32)
    w[1] = 0.5
    b = np.array([5e3, 0.1, -4e3, 1.0], np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2")],
    )
    src = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    src.ir_version = 8
    res = quantize_static(src, _synthetic(src, 8), tune=False)
    model = checked(res.model)
    stats = next(p for p in res.report.to_dict()["passes"] if p["pass"] == "insert-qdq")["stats"]
    assert stats["bias_overflow_channels"] >= 2
    for feeds in _synthetic(src, 3, seed=9):
        assert cosine(run(src, feeds)[0], run(model, feeds)[0]) > 0.999


def test_if_branches_are_quantized() -> None:
    src = build("if-model")
    calib = []
    for i in range(8):
        f = random_feeds(src, seed=i)
        if i % 2:
            f["input"] = -np.abs(f["input"])
        else:
            f["input"] = np.abs(f["input"])
        calib.append(f)
    res = quantize_static(src, calib, tune=False)
    model = checked(res.model)
    inner = [n for g in list(ir.iter_graphs(model.graph))[1:] for n in g.nodes if n.op == "DequantizeLinear"]
    assert len(inner) >= 4, "Q/DQ must be placed inside the If branches"
    for f in calib[:4]:
        assert cosine(run(src, f)[0], run(model, f)[0]) > 0.99


def test_int8_slower_than_float_keeps_float(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxq.passes.quantization.tune_latency as tl

    def float_wins(self, a, b):
        return (1.0, 2.0) if a is self.float_session else (2.0, 2.0)

    monkeypatch.setattr(tl.LatencyTrials, "time", float_wins)
    src = build("mobilenet")
    res = quantize_static(src, _synthetic(src, 4, N=1), tune=True)
    assert res.report.to_dict()["quantized_nodes"] == 0
    steps = res.report.to_dict()["latency"]["steps"]
    assert steps[-1]["step"] == "whole model float"
    assert all(
        "int8" in d["reason"] or "not between" in d["reason"] or "no quantizer" in d["reason"] or "arithmetic" in d["reason"]
        for d in res.report.to_dict()["float_nodes"]
    )


def test_accuracy_guard_returns_classes_to_float(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxq.passes.quantization.tune_latency as tl

    monkeypatch.setattr(tl.LatencyTrials, "time", lambda self, a, b: (2.0, 1.0))  # int8 always faster
    calls = []

    def accuracy(self, session):
        calls.append(session)
        return {"agreement": 1.0, "cosine": 0.95 if len(calls) == 1 else 0.999}

    monkeypatch.setattr(tl.LatencyTrials, "accuracy", accuracy)
    src = build("mobilenet")
    res = quantize_static(src, _synthetic(src, 4, N=1), tune=True)
    steps = [s["step"] for s in res.report.to_dict()["latency"]["steps"]]
    assert "accuracy check" in steps and any(s.endswith("(accuracy)") for s in steps)
    assert any("cost too much accuracy" in d["reason"] for d in res.report.to_dict()["float_nodes"])


def test_replay_reproduces_a_tuned_conversion(tmp_path: Path) -> None:
    import json

    src = build("cnn")
    data = _synthetic(src, 4, N=1)
    first = quantize_static(src, data, tune=True)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(first.report.to_dict()))
    a = quantize_static(src, data, tune=True, replay=str(report))
    b = quantize_static(src, data, tune=True, replay=str(report))
    assert ir.to_proto(a.model).SerializeToString() == ir.to_proto(b.model).SerializeToString()
    kept = sorted(d["node"] for d in first.report.to_dict()["float_nodes"] if d["reason"].startswith("kept float:"))
    assert sorted(d["node"] for d in a.report.to_dict()["float_nodes"] if d["reason"].startswith("kept float:")) == kept


def test_tuner_records_measurements() -> None:
    src = build("cnn", width=16, input_size=32)
    res = quantize_static(src, _synthetic(src, 4, N=1), tune=True, threads=1)
    steps = res.report.to_dict()["latency"]["steps"]
    assert steps[0]["step"] == "accuracy check" and "agreement" in steps[0]  # accuracy first (deterministic)
    full = next(s for s in steps if s["step"] == "full plan")
    assert full["float_ms"] > 0 and full["int8_ms"] > 0
    checked(res.model)


def test_unknown_op_left_float_with_reason() -> None:
    src = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 8, 8] x) => (float[1, 4, 8, 8] y) {
            c = Conv(x, w)
            e = Erf(c)
            y = Conv(e, w2)
        }
        """
    )
    rng = np.random.default_rng(0)
    src.graph.initializer.extend(
        [
            numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w2"),
        ]
    )
    res = quantize_static(src, _synthetic(src, 4), tune=False)
    checked(res.model)
    erf = next(d for d in res.report.to_dict()["float_nodes"] if d["op"] == "Erf")
    assert erf["reason"] == "no quantizer for Erf"
    assert res.report.to_dict()["quantized_nodes"] == 2


def test_already_quantized_model_is_refused() -> None:
    src = build("cnn")
    once = quantize_static(src, _synthetic(src, 4, N=1), tune=False).model
    with pytest.raises(PreconditionError, match="already quantized.*DequantizeLinear"):
        quantize_static(once, _synthetic(src, 4, N=1), tune=False)


def test_dynamic_batch_and_sequence() -> None:
    src = build("transformer")
    calib = [random_feeds(src, seed=i, dims={"batch": 1 + i % 3, "seq": 4 + 5 * i}) for i in range(6)]
    model = checked(quantize_static(src, calib, tune=False).model)
    f = random_feeds(src, seed=77, dims={"batch": 3, "seq": 31})
    assert cosine(run(src, f)[0], run(model, f)[0]) > 0.99


def test_calibration_data_mismatch() -> None:
    src = build("cnn")
    source = open_source("synthetic:2", src, dims={"N": 1})
    bad = [{"wrong_name": np.zeros((1, 3, 32, 32), np.float32)}]
    with pytest.raises(CalibrationDataError):
        from onnxq.data import ReaderSource, input_specs

        class Reader:
            def __init__(self):
                self.it = iter(bad)

            def get_next(self):
                return next(self.it, None)

        quantize_static(src, ReaderSource(Reader(), input_specs(src)), tune=False)
    assert len(list(source)) == 2


def test_ranges_for_another_model(tmp_path: Path) -> None:
    from onnxq.calibration.collector import collect_ranges

    other = build("mlp")
    ranges, _ = collect_ranges(ir.load(other), _synthetic(other, 2, N=1))
    path = tmp_path / "ranges.json"
    ranges.save_json(path)
    with pytest.raises(CalibrationError, match="made for another model|lacks"):
        quantize_static(build("cnn"), None, ranges=path, tune=False)


def test_declared_output_shape_mismatch_warns(caplog: pytest.LogCaptureFixture) -> None:
    src = build("mlp")
    src.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # really 10
    with caplog.at_level("WARNING"):
        res = quantize_static(src, _synthetic(src, 4, N=1), tune=False)
    checked(res.model)
    assert any("declared with shape" in r.message for r in caplog.records)


def test_anchor_before_float_head_keeps_its_activation_int8(tmp_path: Path) -> None:
    """Gemm → Relu → float Gemm: the Relu output is quantized so onnxruntime fuses QGemm.

    Left float, onnxruntime fuses Gemm+Relu into a float FusedGemm whose int8 weight is dequantized
    on every run (6x slower than fp32 at batch 1).
    """
    src = build("mlp", in_features=64, hidden=(128, 128))
    data = _synthetic(src, 4, N=16)
    res = quantize_static(src, data, tune=False, keep_last=1)
    decisions = _decisions(res)
    assert "layer2/relu" not in decisions and "head/fc/matmul/gemm" in decisions
    ops = optimized_ops(res.model, tmp_path)
    assert ops.count("QGemm") == 2 and "FusedGemm" not in ops
    feeds = data[0]
    assert cosine(run(src, feeds)[0], run(res.model, feeds)[0]) > 0.999


def test_accuracy_guard_floats_the_fewest_matmuls(monkeypatch: pytest.MonkeyPatch) -> None:
    """When only the head is too sensitive, the guard returns that one Gemm to float, not all four."""
    import onnxq.passes.quantization.tune_latency as tl

    monkeypatch.setattr(tl.LatencyTrials, "time", lambda self, a, b: (2.0, 1.0))  # int8 always faster

    def accuracy(self, session):
        self.trials_left -= 1
        head_float = not session.plan.decisions["head/fc/matmul/gemm"].quantized
        return {"agreement": 1.0 if head_float else 0.9, "cosine": 1.0}

    real_build = tl.LatencyTrials.build

    def build_keeping_plan(self, forced):
        session, plan = real_build(self, forced)
        session.plan = plan
        return session, plan

    monkeypatch.setattr(tl.LatencyTrials, "build", build_keeping_plan)
    monkeypatch.setattr(tl.LatencyTrials, "accuracy", accuracy)
    src = build("mlp", in_features=64, hidden=(128, 128, 128))
    res = quantize_static(src, _synthetic(src, 4, N=16), tune=True)
    kept = [d["node"] for d in res.report.to_dict()["float_nodes"] if "cost too much accuracy" in d["reason"]]
    assert kept == ["head/fc/matmul/gemm"]
    assert res.report.to_dict()["quantized_nodes"] >= 3
