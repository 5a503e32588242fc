"""The ranking finds a broken layer, and the two engines measure the same thing."""

from __future__ import annotations

import numpy as np
import pytest

import onnxq
from onnxq import ir
from onnxq.api import ConversionOptions
from onnxq.api.sensitivity_analysis import _prepare
from onnxq.metrics import choose_guards
from onnxq.passes.quantization.sensitivity import Evaluation, Evaluator, PlanIndex, fusion_units
from tests.sensitivity._util import BAD_LAYER, bad_layer, cnn, samples


def test_a_layer_with_its_weight_scale_times_50_ranks_first_and_floating_it_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = onnxq.sensitivity(cnn(), samples(), metric="sqnr", use_cache=False)
    with bad_layer(monkeypatch):
        report = onnxq.sensitivity(cnn(), samples(), metric="sqnr", use_cache=False)
        default = onnxq.sensitivity(cnn(), samples(), use_cache=False)  # top-1: ties on these samples, SQNR decides
    assert clean.units[0].name != BAD_LAYER
    for rep in (report, default):
        assert rep.units[0].name == BAD_LAYER and rep.units[0].ops == ("Conv", "Relu")
    first, second = report.units[:2]
    assert first.damage > second.damage + 0.5  # 0.5 = 5 dB: SQNR's unit is 10 dB
    assert first.only_quantized.worst_sqnr_db < second.only_quantized.worst_sqnr_db - 5
    # the broken layer drags the whole plan down; keeping it alone float gives the clean plan back
    assert report.int8_values.worst_sqnr_db < clean.int8_values.worst_sqnr_db - 3
    assert first.only_float.values[0] == pytest.approx(clean.int8_values.values[0], abs=1.0)
    assert first.recovery == max(u.recovery for u in report.units) > 0.3


def test_every_quantized_node_is_in_one_unit_and_conv_relu_is_one() -> None:
    prepared = _prepare(ir.load(cnn()), samples(), ConversionOptions(), False)
    units = fusion_units(prepared.model, prepared.plan)
    names = [n for u in units for n in u.nodes]
    assert sorted(names) == sorted(prepared.plan.quantized_nodes) and len(set(names)) == len(names)
    assert any(u.ops == ("Conv", "Relu") for u in units)
    index = PlanIndex(prepared.model, prepared.plan)
    full = index.select(Evaluation("only-float", ()))
    assert full.activations == frozenset(prepared.plan.activations) and len(full.weights) == len(prepared.plan.weights)
    nothing = index.select(Evaluation("only-quantized", ()))
    assert not nothing.activations and not nothing.weights


def test_switch_and_rebuild_engines_agree() -> None:
    """The switchable model (one session, QDQ semantics) against real int8 sessions built per plan.

    On only-quantized evaluations and the full plan. (Only-float of a Conv between quantized tensors
    differs by design: onnxruntime's WeightBiasQuantization quantizes that float Conv's weights itself.)
    """
    prepared = _prepare(ir.load(cnn()), samples(), ConversionOptions(), False)
    guards = choose_guards(prepared.model, ["sqnr"])
    evaluators = [Evaluator(prepared.model, prepared.plan, prepared.ranges, samples(4), guards, engine=e) for e in ("switch", "rebuild")]
    units = fusion_units(prepared.model, prepared.plan)
    wanted = [Evaluation("only-float", ()), *(u.evaluations()[0] for u in units[::2])]
    for ev in wanted:
        switch, rebuild = (e.evaluate(ev) for e in evaluators)
        assert switch.values[0] == pytest.approx(rebuild.values[0], abs=1.0), ev  # dB: int8 kernels round a little differently
    shared = evaluators[1].shared
    assert evaluators[0].sessions == 1 and evaluators[1].sessions == len(wanted) - shared + 1  # + the float reference


def test_the_float_evaluation_is_perfect_and_costs_no_run() -> None:
    prepared = _prepare(ir.load(cnn()), samples(), ConversionOptions(), False)
    evaluator = Evaluator(prepared.model, prepared.plan, prepared.ranges, samples(2), choose_guards(prepared.model, ["cosine"]))
    result = evaluator.evaluate(Evaluation("only-quantized", ()))
    assert result.values == (1.0,) and result.sqnr_db == (np.inf,)
