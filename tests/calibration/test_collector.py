"""The streaming collector: exact ranges, tensor groups under a memory budget, subgraphs, bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models import build
from onnxq import CalibrationError, InvalidModelError, ir
from onnxq.calibration.collector import collect_ranges, plan_groups
from onnxq.calibration.expose import expose_tensors, float_activations
from onnxq.data import open_source
from tests.helpers import parse, random_feeds


def _feeds(model: onnx.ModelProto, n: int, dims: dict[str, int]) -> list[dict[str, np.ndarray]]:
    return [random_feeds(model, seed=i, dims=dims) for i in range(n)]


def _reference_minmax(model: ir.Model, names: list[str], samples: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    exposed = expose_tensors(model, names)
    outs = list(exposed.output_to_tensor)
    mins: dict[str, float] = {}
    maxs: dict[str, float] = {}
    for s in samples:
        for out, v in zip(outs, _run_named(exposed.model, s, outs)):
            t = exposed.output_to_tensor[out]
            mins[t] = min(mins.get(t, np.inf), float(v.min()))
            maxs[t] = max(maxs.get(t, -np.inf), float(v.max()))
    return {t: (mins[t], maxs[t]) for t in mins}


def _run_named(model: ir.Model, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    from onnxq.runtime import make_session

    sess = make_session(model, optimization="disable")
    return sess.run(names, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})


def test_minmax_is_exact() -> None:
    proto = build("cnn")
    model = ir.load(proto)
    samples = _feeds(proto, 6, {"N": 2})
    ranges, stats = collect_ranges(model, samples, method="minmax")
    assert stats.samples == 6 and stats.groups == 1
    ref = _reference_minmax(ir.load(proto), list(ranges), samples)
    for name, r in ranges.items():
        assert (r.min, r.max) == ref[name]


def test_groups_under_memory_budget_give_identical_ranges() -> None:
    proto = build("cnn")
    samples = _feeds(proto, 4, {"N": 1})
    whole, s1 = collect_ranges(ir.load(proto), samples, method="percentile")
    split, s2 = collect_ranges(ir.load(proto), samples, method="percentile", max_memory_mb=0.05)
    assert s1.groups == 1 and s2.groups > 3
    assert whole.dumps().split('"tensors"')[1] == split.dumps().split('"tensors"')[1]


def test_plan_groups() -> None:
    groups = plan_groups(["a", "b", "c", "d"], {"a": 60, "b": 60, "c": None, "d": 10}, 100)
    assert groups == [["a"], ["b"], ["c", "d"]] or groups == [["a"], ["b"], ["c"], ["d"]]
    assert plan_groups(["a", "b"], {"a": 1, "b": 1}, float("inf")) == [["a", "b"]]


def test_matches_onnxruntime_minmax_calibrator(tmp_path) -> None:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    proto = build("cnn")
    path = tmp_path / "cnn.onnx"
    onnx.save(proto, str(path))
    samples = _feeds(proto, 5, {"N": 1})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(samples)

        def get_next(self):  # type: ignore[override]
            return next(self.it, None)

    cal = create_calibrator(str(path), None, augmented_model_path=str(tmp_path / "aug.onnx"), calibrate_method=CalibrationMethod.MinMax)
    cal.collect_data(Reader())
    theirs = cal.compute_data()
    ours, _ = collect_ranges(ir.load(proto), Reader(), method="minmax")
    common = set(theirs.data) & set(ours)
    assert len(common) >= 20
    for name in common:
        lo, hi = theirs.data[name].range_value
        assert (float(np.ravel(lo)[0]), float(np.ravel(hi)[0])) == (ours[name].min, ours[name].max), name


def test_if_branch_tensors_are_calibrated() -> None:
    proto = build("if-model")
    model = ir.load(proto)
    samples = [{**random_feeds(proto, seed=i)} for i in range(4)]
    ranges, stats = collect_ranges(model, samples)
    branch = [n for n in ranges if n.startswith("branch_")]
    assert branch, "tensors inside If branches must be observed"
    assert all(ranges[n].samples > 0 for n in branch)


def test_nan_activation_names_tensor() -> None:
    proto = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {
            lg = Log(x)
            y = Relu(lg)
        }
        """
    )
    samples = [{"x": np.array([1, 2, -1, 3], np.float32)}]
    with pytest.raises(CalibrationError, match=r"NaN value\(s\) in tensor 'lg'"):
        collect_ranges(ir.load(proto), samples)


def test_constant_and_zero_activations_are_valid() -> None:
    proto = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {
            z = Mul(x, zero)
            y = Add(z, one)
        }
        """.replace("g (float[4] x)", "g (float[4] x, float zero, float one)")
    )
    samples = [{"x": np.arange(4, dtype=np.float32), "zero": np.array(0, np.float32), "one": np.array(1, np.float32)}]
    ranges, _ = collect_ranges(ir.load(proto), samples, method="entropy")
    assert (ranges["z"].min, ranges["z"].max) == (0.0, 0.0)
    assert ranges["y"].data_min == 1.0 and ranges["y"].max == 1.0 and ranges["y"].min <= 1.0


def test_attention_mask_flagged_saturating() -> None:
    proto = build("transformer")
    samples = []
    for i in range(2):
        f = random_feeds(proto, seed=i, dims={"batch": 2, "seq": 8})
        f["attention_mask"][:, -3:] = 0
        samples.append(f)
    ranges, stats = collect_ranges(ir.load(proto), samples, method="entropy")
    assert stats.saturating, "the additive mask (-3.4e38) must be flagged"
    assert all(ranges[n].is_saturating for n in stats.saturating)


def test_dynamic_shapes_vary_per_sample() -> None:
    proto = build("transformer")
    samples = [random_feeds(proto, seed=i, dims={"batch": 1 + i % 2, "seq": 5 + 3 * i}) for i in range(4)]
    ranges, stats = collect_ranges(ir.load(proto), samples, method="percentile")
    assert stats.samples == 4 and len(ranges) > 20


def test_model_onnxruntime_cannot_load() -> None:
    proto = parse(
        """
        <ir_version: 8, opset_import: ["" : 17, "custom.domain" : 1]>
        g (float[4] x) => (float[4] y) {
            y = custom.domain.Mystery(x)
        }
        """
    )
    with pytest.raises(InvalidModelError, match="onnxruntime cannot load the model"):
        collect_ranges(ir.load(proto, check=False), [{"x": np.ones(4, np.float32)}])


def test_no_samples() -> None:
    with pytest.raises(CalibrationError, match="no calibration samples"):
        collect_ranges(ir.load(build("mlp")), [])


def test_reader_protocol_and_synthetic_source() -> None:
    proto = build("mlp")
    source = open_source("synthetic:5", proto, dims={"N": 3})
    ranges, stats = collect_ranges(ir.load(proto), source)
    assert stats.samples == 5 and "logits" in ranges
    model = ir.load(proto)
    ir.infer_shapes(model)
    assert set(float_activations(model)) >= set(ranges)
