"""choose-weight-range alone and in ``convert``: 7-bit weights only where this CPU's 8-bit products saturate.

The model is the MLP builder (three Gemms, 32 inputs, batch 64) with ranges measured by onnxruntime
on seeded calibration samples. What saturates depends on the CPU: on one whose u8·s8 kernel does
not saturate (VNNI, ARM) the pass has nothing to decide, which the first tests check by faking the
probe; the measured tests need a saturating CPU (x86 without VNNI, like the CI machine) and skip
with that reason elsewhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
import pytest

import onnxq.passes.quantization.choose_weight_range as cwr
from models import build
from onnxq import ir
from onnxq.api import convert
from onnxq.context import PassContext
from onnxq.passes.quantization.annotate import build_plan
from onnxq.passes.quantization.tune_latency import shipped_candidate
from onnxq.runtime.kernels import int8_products_saturate
from tests.helpers import invoke
from tests.passes.quantization._pass_util import annotate, load, measured_ranges, run_pass, samples

SATURATES = int8_products_saturate("uint8", "int8")
needs_saturation = pytest.mark.skipif(not SATURATES, reason="this CPU's u8·s8 kernel does not saturate (VNNI or ARM): nothing to measure")
SHAPE = (64, 32)


@pytest.fixture(scope="module")
def mlp() -> onnx.ModelProto:
    return build("mlp")


def _context(proto: onnx.ModelProto, **cfg: Any) -> tuple[ir.Model, Any]:
    calib = samples(SHAPE, 8, seed=1, name="input")
    model = load(proto)
    run_pass("cleanup", model, PassContext())  # MatMul + Add → Gemm, as in the pipeline
    ctx = annotate(model, measured_ranges(ir.to_proto(model), calib), **cfg)
    ctx.calibration_data = calib
    return model, ctx


def _kernel_sqnr(model: ir.Model | onnx.ModelProto, reference: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    """Output SQNR (dB) of ``model`` on onnxruntime's int8 kernels against the fp32 ``reference``."""
    from tests.helpers import run

    num = den = 0.0
    for feed in feeds:
        ref, got = run(reference, feed)[0].astype(np.float64), run(model, feed)[0].astype(np.float64)
        num += float((ref**2).sum())
        den += float(((ref - got) ** 2).sum())
    return 10 * np.log10(num / den)


def test_nothing_to_decide_where_the_cpu_does_not_saturate(mlp: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> None:
    model, ctx = _context(mlp, reduce_range=True)
    monkeypatch.setattr(cwr, "int8_products_saturate", lambda *types: False)
    before = ctx.plan
    result = run_pass("choose-weight-range", model, ctx)
    assert result.stats == {"skipped": "this CPU's 8-bit products do not saturate"}
    assert ctx.plan is before and ctx.quant_config.reduce_range is True


def test_explicit_full_range_weights_are_left_alone(mlp: onnx.ModelProto) -> None:
    model, ctx = _context(mlp, reduce_range=False)
    result = run_pass("choose-weight-range", model, ctx)
    assert result.stats == {"skipped": "no weight on the 7-bit grid"}
    assert not any(w.reduce_range for w in ctx.plan.weights)


def test_no_samples_keeps_annotates_answer_and_says_so(mlp: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> None:
    model, ctx = _context(mlp, reduce_range=True)
    ctx.calibration_data = None
    monkeypatch.setattr(cwr, "int8_products_saturate", lambda *types: True)
    result = run_pass("choose-weight-range", model, ctx)
    assert result.stats == {"skipped": "no sample inputs"}
    assert any("weight range not measured" in n for n in ctx.notes)


def test_reduce_range_nodes_put_only_matching_weights_on_the_7bit_grid(mlp: onnx.ModelProto, tmp_path: Any) -> None:
    src, out = tmp_path / "mlp.onnx", tmp_path / "mlp.int8.onnx"
    onnx.save(mlp, src)
    code, _, err = invoke("convert", str(src), "-o", str(out), "--data", "synthetic:8", "--dim", "N=64", "--no-tune", "--no-reduce-range",
                          "--reduce-range-nodes", "layer1/.*")
    assert code == 0, err
    quantized = onnx.load(str(out))
    onnx.checker.check_model(quantized, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    weight_of = {n.output[0]: inits[n.input[0]] for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    widest = {  # weighted node -> largest |code| of its 2-D int8 weight
        node.name: int(np.abs(weight_of[i].astype(np.int32)).max())
        for node in quantized.graph.node
        for i in node.input
        if i in weight_of and weight_of[i].dtype == np.int8 and weight_of[i].ndim == 2
    }
    narrowed = {name for name in widest if name.startswith("layer1/")}
    assert narrowed and len(widest) > len(narrowed), widest
    assert all(widest[n] <= 64 for n in narrowed), f"7-bit symmetric weights span [-64, 63]: {widest}"
    assert all(v > 64 for n, v in widest.items() if n not in narrowed), widest


@needs_saturation
def test_found_nodes_saturate_at_8_bits_and_not_at_7(mlp: onnx.ModelProto) -> None:
    model, ctx = _context(mlp, reduce_range=True, per_channel=True)
    calib = list(ctx.calibration_data)
    candidates = {w.node for w in ctx.plan.weights if w.kind == "weight" and w.reduce_range}
    found = cwr.saturating_nodes(model, ctx.plan, ctx.ranges, candidates, calib[:4], cwr.ChooseWeightRangeConfig())
    assert found.saturating, "per-channel MLP weights reach the int16 pair-sum bound on this CPU"
    assert not found.saturating & found.clean
    for narrow, expect_error in ((set(), True), (set(found.saturating), False)):
        shipped = shipped_candidate(model, cwr.with_narrow_weights(ctx.plan, candidates, narrow), ctx.ranges)
        probes = cwr._probes(shipped, found.saturating)
        errors = cwr._code_errors(shipped, sorted({p[1] for p in probes.values()}), calib[:4])
        worst = max(errors[p[1]] for p in probes.values())
        assert (worst >= 3) == expect_error, f"8-bit={not narrow}: kernels vs exact differ by {worst} codes"


@needs_saturation
def test_choice_is_kept_in_the_config_that_later_passes_rebuild_from(mlp: onnx.ModelProto) -> None:
    model, ctx = _context(mlp, reduce_range=True, per_channel=True)
    result = run_pass("choose-weight-range", model, ctx)
    assert result.stats["chosen"] != cwr.ALL_7BIT, result.stats
    assert result.stats["sqnr_db"][result.stats["chosen"]] > result.stats["sqnr_db"][cwr.ALL_7BIT]
    rebuilt = build_plan(model, ctx.ranges, ctx.quant_config)
    assert [dataclasses.astuple(w) for w in rebuilt.weights] == [dataclasses.astuple(w) for w in ctx.plan.weights]
    assert not any(n.startswith("7-bit weights (reduce_range):") for n in ctx.notes)
    assert any(n.startswith("weight range by measurement") for n in ctx.notes)


@needs_saturation
@pytest.mark.parametrize("per_channel", [False, True])
def test_convert_beats_all_7bit_weights_against_fp32(mlp: onnx.ModelProto, per_channel: bool) -> None:
    """Held-out SQNR vs fp32 on onnxruntime's kernels: measured choice >= annotate's all-7-bit answer + 1 dB
    (measured here: +3.6 dB per-tensor, +1.6 dB per-channel), and cosine >= 0.99 vs fp32."""
    calib = samples(SHAPE, 16, seed=1, name="input")
    held_out = samples(SHAPE, 8, seed=2, name="input")
    chosen = convert(mlp, calib, per_channel=per_channel, tune=False)
    all_7bit = convert(mlp, calib, per_channel=per_channel, reduce_range=True, tune=False)
    onnx.checker.check_model(ir.to_proto(chosen.model), full_check=True)
    record = next(p for p in chosen.report.passes if p.name == "choose-weight-range")
    assert record.stats["chosen"] != cwr.ALL_7BIT
    gain = _kernel_sqnr(chosen.model, mlp, held_out) - _kernel_sqnr(all_7bit.model, mlp, held_out)
    assert gain >= 1.0, f"{gain:.2f} dB"
    from tests.helpers import cosine, run

    assert min(cosine(run(mlp, f)[0], run(chosen.model, f)[0]) for f in held_out) >= 0.99


def test_pipeline_runs_the_pass_only_when_reduce_range_is_automatic() -> None:
    from onnxq.api import ConversionOptions
    from onnxq.api.pipelines import PipelineInputs, build_steps

    def passes(**options: Any) -> list[str]:
        return [s["pass"] for s in build_steps(ConversionOptions(**options), PipelineInputs(has_data=True, has_ranges=False))]

    assert passes().index("choose-weight-range") == passes().index("annotate-quantization") + 1
    assert "choose-weight-range" not in passes(reduce_range=True)
    assert "choose-weight-range" not in passes(reduce_range=False)
    no_data = [s["pass"] for s in build_steps(ConversionOptions(), PipelineInputs(has_data=False, has_ranges=True))]
    assert "choose-weight-range" not in no_data
