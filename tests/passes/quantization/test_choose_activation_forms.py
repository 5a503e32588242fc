"""choose-activation-forms: each form keeps the numbers, has the expected structure, and the
measured choice records its timings.

Models: a Conv → SiLU (Sigmoid · Mul) block and a Conv → HardSwish block, quantized the way the
pipeline does it (expand-hardswish, annotate + insert-qdq on ranges measured with onnxruntime,
close-float-islands).

Tolerances: the activation's step ``s_y`` (its output Q's scale) is the unit (the activation's
codes are exposed as an output). lut is bit-identical to qlinear (its table holds qlinear's
codes); float is within one step of qlinear; against onnxruntime fp32 each form's cosine is
>= 0.99 and its max abs error at most qlinear's plus one step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxq import ir
from onnxq.api.options import ConversionOptions
from onnxq.api.pipelines import PipelineInputs, build_steps
from onnxq.context import PassContext
from onnxq.errors import ConfigError
from onnxq.passes.quantization.choose_activation_forms import ChooseActivationFormsConfig, find_activations
from tests.helpers import cosine, optimized_ops, run
from tests.passes.quantization._pass_util import count, load, measured_ranges, parse_with, run_pass, samples, to_qdq

H17 = '<ir_version: 8, opset_import: ["" : 17]>\n'
SILU = (
    H17
    + """
g (float[1, 4, 16, 16] x) => (float[1, 8, 16, 16] y) {
  c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
  s = Sigmoid (c)
  m = Mul (c, s)
  y = Conv (m, w2, b2)
}
"""
)
HARDSWISH = (
    H17
    + """
g (float[1, 4, 16, 16] x) => (float[1, 8, 16, 16] y) {
  c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
  m = HardSwish (c)
  y = Conv (m, w2, b2)
}
"""
)
WEIGHTS = {"w": (8, 4, 3, 3), "b": (8,), "w2": (8, 8, 1, 1), "b2": (8,)}


def _quantized(text: str) -> tuple[onnx.ModelProto, ir.Model, list[dict[str, np.ndarray]]]:
    proto = parse_with(text, WEIGHTS, seed=3)
    model = load(proto)
    run_pass("expand-hardswish", model, PassContext())
    data = samples((1, 4, 16, 16), 6, seed=4)
    qdq, _ = to_qdq(model, measured_ranges(ir.to_proto(model), data))
    run_pass("close-float-islands", qdq, PassContext())
    return proto, qdq, data


def _expose_activation(model: ir.Model) -> tuple[str, float, int]:
    """Make the activation's output codes a graph output (every form keeps that tensor); returns
    its name, scale and zero point."""
    (act,) = find_activations(model)
    q = act.nodes[0]
    model.graph.outputs.append(q.outputs[0])
    return q.outputs[0].name, float(ir.constant_array(q.inputs[1])), int(ir.constant_array(q.inputs[2]))


def _codes(model: ir.Model, feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
    names = [t.name for t in model.graph.outputs]
    return run(model, feeds)[names.index(name)].astype(np.int32)


def _fp32_activation(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    exposed.graph.output.append(onnx.helper.make_tensor_value_info("m", onnx.TensorProto.FLOAT, None))
    return run(exposed, feeds)[1]


def _forced(model: ir.Model, form: str) -> tuple[ir.Model, dict]:
    variant = ir.clone(model)
    res = run_pass("choose-activation-forms", variant, PassContext(), form=form)
    onnx.checker.check_model(ir.to_proto(res.model), full_check=True)
    return res.model, res.stats


@pytest.mark.parametrize("text", [SILU, HARDSWISH], ids=["silu", "hardswish"])
def test_lut_is_bit_identical_to_qlinear(text: str) -> None:
    proto, model, data = _quantized(text)
    name, step, zero = _expose_activation(model)
    lut, stats = _forced(model, "lut")
    assert stats["form"] == "lut" and stats["rewritten"] == 1
    for feeds in data:
        old, new = _codes(model, feeds, name), _codes(lut, feeds, name)
        assert np.array_equal(old, new)
        ref = _fp32_activation(proto, feeds)
        assert cosine(ref, step * (new - zero)) >= 0.99
        assert np.array_equal(run(model, feeds)[0], run(lut, feeds)[0])


def test_silu_float_form_is_within_one_step(tmp_path: Path) -> None:
    proto, model, data = _quantized(SILU)
    name, step, zero = _expose_activation(model)
    flt, stats = _forced(model, "float")
    assert stats["rewritten.float.Mul+Sigmoid"] == 1
    assert count(flt, "QuickGelu") == 1 and count(flt, "Sigmoid") == 0 and count(flt, "Mul") == 0
    assert "QuickGelu" in optimized_ops(flt, tmp_path)
    for feeds in data:
        old, new = _codes(model, feeds, name), _codes(flt, feeds, name)
        assert np.abs(new - old).max() <= 1
        ref = _fp32_activation(proto, feeds)
        err_old, err_new = np.abs(step * (old - zero) - ref).max(), np.abs(step * (new - zero) - ref).max()
        assert err_new <= err_old + step * 1.001
        assert cosine(ref, step * (new - zero)) >= 0.99


def test_hardswish_float_form_refused_with_reason() -> None:
    # close-float-islands wrote the gate as an Add clipped by its Q alone: without that Q it is wrong
    _, model, _ = _quantized(HARDSWISH)
    ctx = PassContext()
    res = run_pass("choose-activation-forms", model, ctx, form="float")
    assert not res.modified and res.stats["refused"] == 1
    assert any("output steps from the qlinear form" in s.reason for s in ctx.skips)


def test_forced_forms_have_expected_structure() -> None:
    _, model, _ = _quantized(SILU)
    before = sorted(n.op for n in model.graph.nodes)
    same, stats = _forced(model, "qlinear")
    assert sorted(n.op for n in same.graph.nodes) == before and stats["rewritten"] == 0
    lut, _ = _forced(model, "lut")
    ops = [n.op for n in lut.graph.nodes]
    assert "Sigmoid" not in ops and "Mul" not in ops and ops.count("GatherElements") == 1 and ops.count("Cast") == 1
    # the lookup reads the Conv's quantized output directly: Conv's Q -> Reshape/Cast -> GatherElements
    gather = next(n for n in lut.graph.nodes if n.op == "GatherElements")
    table = ir.constant_array(gather.inputs[0])
    assert table is not None and table.shape == (256,) and table.dtype == np.uint8


def test_forced_form_output_is_deterministic() -> None:
    _, model, _ = _quantized(SILU)
    first = ir.to_proto(_forced(model, "lut")[0]).SerializeToString()
    second = ir.to_proto(_forced(model, "lut")[0]).SerializeToString()
    assert first == second


def test_measurement_picks_a_form_and_records_timings() -> None:
    _, model, data = _quantized(SILU)
    ctx = PassContext(calibration_data=data)
    res = run_pass("choose-activation-forms", model, ctx, budget_s=1.0)
    stats = res.stats
    assert stats["form"] in ("qlinear", "lut", "float")
    assert set(stats["timings_ms"]) == {"qlinear", "lut", "float"} and all(v > 0 for v in stats["timings_ms"].values())
    assert stats["decision"] and any("run as" in n for n in ctx.notes)
    assert res.modified == (stats["form"] != "qlinear")
    best = min(stats["timings_ms"].values())
    # the chosen form is qlinear or a form at least min_gain faster than it
    assert stats["form"] == "qlinear" or stats["timings_ms"][stats["form"]] == best


def test_no_activation_is_a_no_op() -> None:
    proto = parse_with(H17 + "g (float[1, 4, 8, 8] x) => (float[1, 8, 8, 8] y) {\n  y = Conv (x, w, b)\n}\n", {"w": (8, 4, 1, 1), "b": (8,)})
    data = samples((1, 4, 8, 8), 2, seed=0)
    model, _ = to_qdq(load(proto), measured_ranges(proto, data))
    res = run_pass("choose-activation-forms", model, PassContext(calibration_data=data))
    assert not res.modified and res.stats["activations"] == 0


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        ChooseActivationFormsConfig(form="table")
    with pytest.raises(ConfigError):
        ChooseActivationFormsConfig(min_gain=1.5)


def test_static_pipeline_runs_it_after_close_float_islands() -> None:
    names = [s["pass"] for s in build_steps(ConversionOptions(), PipelineInputs(has_data=True, has_ranges=False))]
    assert names.index("choose-activation-forms") == names.index("close-float-islands") + 1
    untuned = build_steps(ConversionOptions(tune=False), PipelineInputs(has_data=True, has_ranges=False))
    assert next(s for s in untuned if s["pass"] == "choose-activation-forms")["form"] == "qlinear"


def test_replay_applies_the_recorded_form_without_timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--replay REPORT``: the form a report recorded is applied as is (timing would raise), byte-identical to forcing it."""
    import json

    import onnxq.passes.quantization.choose_activation_forms as caf

    _, model, data = _quantized(SILU)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"passes": [{"pass": "choose-activation-forms", "stats": {"form": "lut"}}]}), encoding="utf-8")

    def no_timing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a replay must not time")

    monkeypatch.setattr(caf.ChooseActivationForms, "_measure", no_timing)
    replayed = run_pass("choose-activation-forms", ir.clone(model), PassContext(calibration_data=data), replay=str(report))
    assert replayed.stats["form"] == "lut" and replayed.stats["decision"].startswith("replayed from")
    assert ir.to_proto(replayed.model).SerializeToString() == ir.to_proto(_forced(model, "lut")[0]).SerializeToString()
    report.write_text(json.dumps({"passes": [{"pass": "choose-activation-forms", "stats": {"form": "table"}}]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="records form 'table'"):
        run_pass("choose-activation-forms", ir.clone(model), PassContext(calibration_data=data), replay=str(report))
    steps = build_steps(ConversionOptions(replay=str(report)), PipelineInputs(has_data=True, has_ranges=False))
    assert next(s for s in steps if s["pass"] == "choose-activation-forms")["replay"] == str(report)
