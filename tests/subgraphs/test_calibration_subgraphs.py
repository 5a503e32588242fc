"""Calibration inside control flow: If branches per branch taken, Loop/Scan bodies over every iteration.

References are computed without the code under test: the body runs as a model of its own in
onnxruntime (see ``_cases``), once per Loop step / Scan time step, or on the samples that take an
If branch. Min/max ranges must match exactly; full-tensor observers must see the same data extremes.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import build
from onnxq import ir
from onnxq.calibration._groups import tensor_nbytes
from onnxq.calibration.collector import collect_ranges
from onnxq.calibration.expose import expose_tensors
from tests.subgraphs._cases import body, feeds, float_outputs, inferred, minmax, run_named, samples, standalone, with_outputs


def _main_input(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    return next(vi for vi in model.graph.input if vi.name == name)


# -- If: per branch taken -------------------------------------------------------------------------------


def _branch_reference(attr: str, data: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    model = inferred("streaming-if")
    branch = body(model, attr)
    names = float_outputs(branch)
    alone = standalone(model, branch, [_main_input(model, n) for n in ("features", "h0", "c0")], names)
    return minmax(run_named(alone, f, names) for f in data)


def test_if_branches_are_calibrated_only_on_the_samples_that_take_them() -> None:
    data = samples("streaming-if", 8)
    wide = [f for f in data if int(f["sample_rate"]) > 12000]
    narrow = [f for f in data if int(f["sample_rate"]) <= 12000]
    assert len(wide) == len(narrow) == 4
    ranges, stats = collect_ranges(ir.load(build("streaming-if")), data, method="minmax")
    assert stats.unreachable == {}
    for attr, taken in (("then_branch", wide), ("else_branch", narrow)):
        ref = _branch_reference(attr, taken)
        assert ref
        for name, (lo, hi) in ref.items():
            assert (ranges[name].min, ranges[name].max) == (lo, hi), name
            assert ranges[name].samples == len(taken), name


def test_full_tensor_observers_see_only_the_branch_taken() -> None:
    data = samples("streaming-if", 6)
    ranges, _ = collect_ranges(ir.load(build("streaming-if")), data, method="percentile")
    ref = _branch_reference("then_branch", [f for f in data if int(f["sample_rate"]) > 12000])
    for name, (lo, hi) in ref.items():
        assert (ranges[name].data_min, ranges[name].data_max) == (lo, hi), name
        assert ranges[name].samples == 3


def test_a_branch_no_sample_takes_is_reported_unreachable() -> None:
    data = [feeds("streaming-if", s, wideband=False) for s in range(3)]
    ranges, stats = collect_ranges(ir.load(build("streaming-if")), data, method="minmax")
    wide = [n for n in stats.unreachable if n.startswith("wideband/")]
    assert "wideband/conv1/out" in wide and not any(n in ranges for n in wide)
    assert all("not computed on any sample" in stats.unreachable[n] for n in wide)
    assert "narrowband/conv1/out" in ranges


# -- Loop / Scan: every iteration, merged ---------------------------------------------------------------


def _loop_reference(data: list[dict[str, np.ndarray]], steps: int = 6) -> dict[str, tuple[float, float]]:
    model = inferred("loop-decoder")
    step = body(model, "body")
    names = float_outputs(step)
    memory = "encoder/tanh/out"
    alone = standalone(model, step, [helper.make_tensor_value_info(memory, TensorProto.FLOAT, ["N", 64])], names)
    state_in, state_out = step.input[2].name, step.output[1].name

    def unrolled():
        for f in data:
            mem = run_named(with_outputs(model, [memory]), f, [memory])[memory]
            state = mem
            for i in range(steps):
                step_in = {"decoder/step/iteration": np.array(i, np.int64), "decoder/step/cond_in": np.array(True), state_in: state, memory: mem}
                values = run_named(alone, step_in)
                yield {**values, state_in: state}
                state = values[state_out]

    return minmax(unrolled())


def _scan_reference(data: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    model = inferred("scan-rnn")
    cell = body(model, "body")
    names = float_outputs(cell)
    alone = standalone(model, cell, [], names)
    h_in, x_in, h_out = cell.input[0].name, cell.input[1].name, cell.output[0].name

    def unrolled():
        for f in data:
            h = f["h0"]
            for x_t in f["x"]:
                values = run_named(alone, {h_in: h, x_in: x_t})
                yield {**values, h_in: h, x_in: x_t}
                h = values[h_out]

    return minmax(unrolled())


@pytest.mark.parametrize("name", ["loop-decoder", "scan-rnn"])
def test_loop_and_scan_bodies_are_calibrated_over_every_iteration(name: str) -> None:
    data = samples(name, 4)
    ranges, stats = collect_ranges(ir.load(build(name)), data, method="minmax")
    ref = _loop_reference(data) if name == "loop-decoder" else _scan_reference(data)
    assert len(ref) >= 6 and stats.unreachable == {}
    for tensor, (lo, hi) in ref.items():
        assert (ranges[tensor].min, ranges[tensor].max) == (lo, hi), tensor
        assert ranges[tensor].samples == len(data), tensor  # every iteration of a sample is one observation


@pytest.mark.parametrize("method", ["percentile", "moving-average", "entropy"])
def test_other_observers_merge_every_iteration(method: str) -> None:
    data = samples("scan-rnn", 3)
    ranges, _ = collect_ranges(ir.load(build("scan-rnn")), data, method=method)
    ref = _scan_reference(data)
    for tensor, (lo, hi) in ref.items():
        r = ranges[tensor]
        if method == "moving-average":  # the average of per-sample extremes lies within the extremes
            assert lo <= r.min <= r.max <= hi, tensor
        else:
            assert (r.data_min, r.data_max) == (lo, hi), tensor


def test_per_channel_ranges_of_body_tensors_use_the_body_tensors_axis() -> None:
    data = samples("scan-rnn", 2)
    ranges, _ = collect_ranges(ir.load(build("scan-rnn")), data, method="minmax", per_channel_axis=-1)
    r = ranges["rnn/cell/add_bias/out"]  # [N, H] per step, stacked [T, N, H] by the Scan
    model = inferred("scan-rnn")
    cell = body(model, "body")
    h_in, x_in, h_out = cell.input[0].name, cell.input[1].name, cell.output[0].name
    alone = standalone(model, cell, [], ["rnn/cell/add_bias/out", h_out])
    steps = []
    for f in data:
        h = f["h0"]
        for x_t in f["x"]:
            values = run_named(alone, {h_in: h, x_in: x_t})
            steps.append(values["rnn/cell/add_bias/out"])
            h = values[h_out]
    stacked = np.stack(steps)
    assert len(r.channel_min) == 64
    np.testing.assert_array_equal(np.array(r.channel_min), stacked.min(axis=(0, 1)))
    np.testing.assert_array_equal(np.array(r.channel_max), stacked.max(axis=(0, 1)))


# -- exposure, nesting, memory ---------------------------------------------------------------------------


def test_exposure_names_its_outputs_and_their_iteration_axes() -> None:
    model = ir.load(build("loop-decoder"))
    ir.infer_shapes(model)
    names = ["encoder/tanh/out", "decoder/step/tanh/out", "decoder/step/state"]
    plain = expose_tensors(model, names)
    assert set(plain.unreachable) == {"decoder/step/tanh/out", "decoder/step/state"}
    assert "inside a Loop body" in plain.unreachable["decoder/step/tanh/out"]
    exposed = expose_tensors(model, names, loops=True)
    assert exposed.unreachable == {}
    depth = {exposed.output_to_tensor[o]: exposed.output_depth[o] for o in exposed.output_to_tensor}
    assert depth == {"encoder/tanh/out": 0, "decoder/step/tanh/out": 1, "decoder/step/state": 1}
    values = run_named(ir.to_proto(exposed.model), feeds("loop-decoder", 0), list(exposed.output_to_tensor))
    shapes = {exposed.output_to_tensor[o]: v.shape for o, v in values.items()}
    assert shapes["decoder/step/tanh/out"] == (6, 2, 64) and shapes["encoder/tanh/out"] == (2, 64)


def _nested(outer: str) -> onnx.ModelProto:
    """A Loop whose body holds an If (``outer="Loop"``) or an If whose branch holds a Loop.

    Loop: 4 steps of ``s' = If(i even) then s * 2 + 1 else -s``; the If variant runs that Loop in
    its then-branch and ``Neg(x)`` in the else-branch.
    """
    two, one = numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1.0, np.float32), "one")
    then_b = helper.make_graph(
        [helper.make_node("Mul", ["s", "two"], ["doubled"]), helper.make_node("Add", ["doubled", "one"], ["grown"])],
        "grow", [], [helper.make_tensor_value_info("grown", TensorProto.FLOAT, [3])],
    )
    else_b = helper.make_graph([helper.make_node("Neg", ["s"], ["flipped"])], "flip", [], [helper.make_tensor_value_info("flipped", TensorProto.FLOAT, [3])])
    step = helper.make_graph(
        [
            helper.make_node("Mod", ["i", "two_i"], ["parity"]),
            helper.make_node("Equal", ["parity", "zero_i"], ["even"]),
            helper.make_node("If", ["even"], ["s_next"], then_branch=then_b, else_branch=else_b),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "step",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("s_next", TensorProto.FLOAT, [3])],
        initializer=[numpy_helper.from_array(np.array(2, np.int64), "two_i"), numpy_helper.from_array(np.array(0, np.int64), "zero_i")],
    )
    loop = helper.make_node("Loop", ["steps", "", "x"], ["y_loop"], body=step)
    inits = [two, one, numpy_helper.from_array(np.array(4, np.int64), "steps")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])]
    if outer == "Loop":
        nodes, out = [loop], "y_loop"
    else:
        branch = helper.make_graph([loop], "looping", [], [helper.make_tensor_value_info("y_loop", TensorProto.FLOAT, [3])])
        other = helper.make_graph([helper.make_node("Neg", ["x"], ["y_neg"])], "negate", [], [helper.make_tensor_value_info("y_neg", TensorProto.FLOAT, [3])])
        nodes, out = [helper.make_node("If", ["go"], ["y"], then_branch=branch, else_branch=other)], "y"
        inputs.append(helper.make_tensor_value_info("go", TensorProto.BOOL, []))
    m = helper.make_model(helper.make_graph(nodes, "nested", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, [3])], inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _unrolled(x: np.ndarray) -> dict[str, list[np.ndarray]]:
    seen: dict[str, list[np.ndarray]] = {"s": [], "doubled": [], "grown": [], "flipped": [], "s_next": []}
    s = x
    for i in range(4):
        seen["s"].append(s)
        if i % 2 == 0:
            seen["doubled"].append(s * 2)
            s = s * 2 + 1
            seen["grown"].append(s)
        else:
            s = -s
            seen["flipped"].append(s)
        seen["s_next"].append(s)
    return seen


def test_an_if_inside_a_loop_is_calibrated_per_iteration_with_summaries() -> None:
    xs = [np.array([0.5, -1.0, 2.0], np.float32), np.array([-3.0, 0.25, 1.5], np.float32)]
    ranges, stats = collect_ranges(ir.load(_nested("Loop")), [{"x": x} for x in xs], method="minmax")
    for name in ("doubled", "grown", "flipped", "s_next", "s"):
        values = np.concatenate([np.ravel(v) for x in xs for v in _unrolled(x)[name]])
        assert (ranges[name].min, ranges[name].max) == (float(values.min()), float(values.max())), name
    # full tensors of an If inside a Loop cannot be stacked (the untaken branch's placeholder is empty)
    _, full = collect_ranges(ir.load(_nested("Loop")), [{"x": x} for x in xs], method="percentile")
    assert "inside an If within a Loop body" in full.unreachable["grown"]


def test_a_loop_inside_an_if_is_calibrated_at_every_depth() -> None:
    xs = [np.array([0.5, -1.0, 2.0], np.float32), np.array([-3.0, 0.25, 1.5], np.float32)]
    data = [{"x": xs[0], "go": np.array(True)}, {"x": xs[1], "go": np.array(True)}, {"x": xs[1] * 9, "go": np.array(False)}]
    ranges, stats = collect_ranges(ir.load(_nested("If")), data, method="percentile")
    for name in ("s", "s_next"):  # Loop body tensors, stacked by the Loop, routed out through the If
        values = np.concatenate([np.ravel(v) for x in xs for v in _unrolled(x)[name]])
        assert (ranges[name].data_min, ranges[name].data_max) == (float(values.min()), float(values.max())), name
        assert ranges[name].samples == 2  # the sample taking the else branch does not count
    assert ranges["y_neg"].data_min == float((-xs[1] * 9).min()) and ranges["y_neg"].samples == 1
    assert "inside an If within a Loop body" in stats.unreachable["doubled"]  # If → Loop → If: full values
    summarized, _ = collect_ranges(ir.load(_nested("If")), data, method="minmax")
    values = np.concatenate([np.ravel(v) for x in xs for v in _unrolled(x)["doubled"]])
    assert (summarized["doubled"].min, summarized["doubled"].max) == (float(values.min()), float(values.max()))


def test_body_tensor_sizes_count_every_iteration_for_the_memory_budget() -> None:
    model = ir.load(build("loop-decoder"))
    sizes = tensor_nbytes(model, feeds("loop-decoder", 0))
    assert sizes["encoder/tanh/out"] == 2 * 64 * 4
    assert sizes["decoder/step/tanh/out"] == 6 * 2 * 64 * 4  # six steps stacked
    scan = ir.load(build("scan-rnn"))
    assert tensor_nbytes(scan, feeds("scan-rnn", 0))["rnn/cell/tanh/out"] == 12 * 2 * 64 * 4


def test_groups_under_a_memory_budget_give_the_same_body_ranges() -> None:
    data = samples("loop-decoder", 3)
    whole, s1 = collect_ranges(ir.load(build("loop-decoder")), data, method="percentile")
    split, s2 = collect_ranges(ir.load(build("loop-decoder")), data, method="percentile", max_memory_mb=0.004)
    assert s1.groups == 1 and s2.groups > 3
    assert {k: (v.min, v.max) for k, v in whole.items()} == {k: (v.min, v.max) for k, v in split.items()}
