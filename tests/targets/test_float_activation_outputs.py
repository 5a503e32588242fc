"""drop-qdq-before-float-ops: a Conv output only float activations read gets no Q/DQ pair on OpenVINO.

The graph is ``Conv → HardSwish → Conv → Sigmoid`` (PP-LCNet / PP-OCR det shape): OpenVINO runs the
activations in float, fused into the convolution, so a Q/DQ pair between them is only a Convert and
a Subtract. Checked on the pass alone (structure, numerics vs onnxruntime fp32) and through
``--target openvino`` (OpenVINO runs both convolutions int8, matches fp32); onnxruntime targets keep
the pair (QLinearConv needs it).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

from onnxq import ir
from onnxq.api import convert
from onnxq.context import PassContext
from tests.helpers import cosine, run
from tests.passes.quantization._pass_util import load, measured_ranges, parse_with, run_pass, samples, to_qdq

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed (pip install 'onnxq[openvino]')")

CONV_HARDSWISH = parse_with(
    """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 24, 24] x) => (float[1, 16, 24, 24] y) {
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  h = HardSwish (c1)
  c2 = Conv <pads = [1, 1, 1, 1]> (h, w2, b2)
  y = Sigmoid (c2)
}
""",
    {"w1": (16, 8, 3, 3), "b1": (16,), "w2": (16, 16, 3, 3), "b2": (16,)},
)
FEEDS = samples((1, 8, 24, 24), 8, seed=7)


def _readers_of_conv_outputs(model: ir.Model) -> dict[str, list[str]]:
    """Conv name → the op types reading its output."""
    return {n.name: [r.op for r in ir.consumers(n.outputs[0])] for n in model.graph.nodes if n.op == "Conv"}


def test_the_pair_before_float_activations_goes_and_numerics_stay() -> None:
    model, _ = to_qdq(load(CONV_HARDSWISH), measured_ranges(CONV_HARDSWISH, FEEDS))
    before = ir.clone(model)
    assert all(ops == ["QuantizeLinear"] for ops in _readers_of_conv_outputs(before).values())
    result = run_pass("drop-qdq-before-float-ops", model, PassContext())
    assert result.stats["dropped"] == 2
    assert sorted(op for ops in _readers_of_conv_outputs(result.model).values() for op in ops) == ["HardSwish", "Sigmoid"]
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    for feeds in FEEDS[:3]:
        ref = run(CONV_HARDSWISH, feeds)[0]
        assert cosine(ref, run(result.model, feeds)[0]) >= 0.999
        # one rounding fewer: no further from fp32 than with the pair
        assert np.abs(ref - run(result.model, feeds)[0]).max() <= np.abs(ref - run(before, feeds)[0]).max() + 1e-6


def test_an_int8_reader_keeps_the_pair() -> None:
    proto = parse_with(
        """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 12, 12] x) => (float[1, 8, 12, 12] y) {
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  y = Conv <pads = [1, 1, 1, 1]> (c1, w2, b2)
}
""",
        {"w1": (8, 8, 3, 3), "b1": (8,), "w2": (8, 8, 3, 3), "b2": (8,)},
    )
    model, _ = to_qdq(load(proto), measured_ranges(proto, samples((1, 8, 12, 12), 4, seed=1)))
    result = run_pass("drop-qdq-before-float-ops", model, PassContext())
    assert result.stats["dropped"] == 0 and not result.modified


def test_only_targets_with_float_activations_run_it() -> None:
    ov = convert(CONV_HARDSWISH, FEEDS, target="generic", tune=False)
    assert "drop-qdq-before-float-ops" not in [p.name for p in ov.report.passes]
    assert all(ops == ["QuantizeLinear"] for ops in _readers_of_conv_outputs(ov.model).values())


@needs_openvino
def test_openvino_target_runs_both_convolutions_int8_without_the_pair() -> None:
    from onnxq.runtime.openvino import OpenVINOSession, int8_nodes

    result = convert(CONV_HARDSWISH, FEEDS, target="openvino", tune=False)
    record = next(p for p in result.report.passes if p.name == "drop-qdq-before-float-ops")
    assert record.stats["dropped"] == 2
    assert sorted(op for ops in _readers_of_conv_outputs(result.model).values() for op in ops) == ["HardSwish", "Sigmoid"]
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    session = OpenVINOSession(result.model, threads=1, perf_counters=True)
    for feeds in FEEDS[:3]:
        assert cosine(run(CONV_HARDSWISH, feeds)[0], session.run(None, feeds)[0]) >= 0.99
    int8, _ = int8_nodes(session)
    assert len(int8) >= 2, int8  # both convolutions still ran 8-bit kernels


@needs_openvino
def test_the_tuner_times_openvino_candidates_without_the_pairs() -> None:
    """tune-latency builds its candidates as the pipeline ships them: with the target's float activations it drops the pairs too."""
    from onnxq.api import ConversionOptions
    from onnxq.api.pipelines import PipelineInputs, build_steps
    from onnxq.api.targets import adapt_steps
    from onnxq.targets import get_target

    opts = ConversionOptions(target="openvino")
    steps, _ = adapt_steps(opts, get_target("openvino"), build_steps(opts, PipelineInputs(has_data=True, has_ranges=False)))
    names = [s["pass"] for s in steps]
    assert names.index("drop-qdq-before-float-ops") == names.index("close-float-islands") + 1
    tune = next(s for s in steps if s["pass"] == "tune-latency")
    assert "HardSwish" in tune["float_activations"]
    cpu = ConversionOptions(target="ort-cpu")
    generic, _ = adapt_steps(cpu, get_target("ort-cpu"), build_steps(cpu, PipelineInputs(has_data=True, has_ranges=False)))
    assert "drop-qdq-before-float-ops" not in [s["pass"] for s in generic]
    assert next(s for s in generic if s["pass"] == "tune-latency")["float_activations"] == ()


@needs_openvino
def test_pass_options_reach_the_steps_the_target_adds() -> None:
    """The user's pass options apply after the target adapted the pipeline: they may name a pass only the
    target adds (here: only the Sigmoid pair dropped), and they win over what the target set."""
    result = convert(CONV_HARDSWISH, FEEDS, target="openvino", tune=False, pass_options={"drop-qdq-before-float-ops": {"float_ops": ["Sigmoid"]}})
    record = next(p for p in result.report.passes if p.name == "drop-qdq-before-float-ops")
    assert record.stats["dropped"] == 1
    assert sorted(op for ops in _readers_of_conv_outputs(result.model).values() for op in ops) == ["QuantizeLinear", "Sigmoid"]
