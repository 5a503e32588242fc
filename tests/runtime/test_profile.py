"""onnxruntime's per-node profile, grouped: structure, sums and definitions, never timing order."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.parser
import pytest

import onnxq
from models import build
from onnxq import ir
from onnxq.errors import CalibrationDataError, CalibrationError, ConfigError, InvalidModelError
from onnxq.runtime import ProfileReport, profile_models
from onnxq.runtime._profile_trace import node_times
from onnxq.runtime.profile import CATEGORIES, FLOAT_ISLAND_GOAL, ModelProfile, categorize

RUNS = {"runs": 3, "warmup": 1}


def _feeds(shape: tuple[int, ...], name: str = "input") -> dict[str, np.ndarray]:
    return {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


@pytest.fixture(scope="module")
def cnn_pair() -> tuple[onnx.ModelProto, ir.Model]:
    fp32 = build("cnn")
    # tune=False: the tuner could measure int8 slower and keep the model float; defaults otherwise
    # (reduce_range as onnxq chooses it for this machine).
    return fp32, onnxq.quantize_static(fp32, "synthetic:8", tune=False).model


@pytest.fixture(scope="module")
def report(cnn_pair: tuple[onnx.ModelProto, ir.Model]) -> ProfileReport:
    return profile_models(list(cnn_pair), _feeds((1, 3, 32, 32)), labels=["fp32", "int8"], **RUNS)


def _assert_sums(m: ModelProfile) -> None:
    assert m.nodes and m.runs == RUNS["runs"]
    assert all(n.ms >= 0 for n in m.nodes) and m.run_ms > 0
    assert set(m.categories()) == set(CATEGORIES)
    assert sum(m.categories().values()) == pytest.approx(m.total_ms, abs=1e-9)
    assert sum(ms for _, _, ms in m.op_types().values()) == pytest.approx(m.total_ms, abs=1e-9)
    d = m.as_dict()
    assert sum(c["ms"] for c in d["categories"].values()) == pytest.approx(d["total_ms"], abs=5 * 1e-4)
    assert sum(c["share"] for c in d["categories"].values()) == pytest.approx(1.0, abs=5 * 1e-4)


def test_categories_sum_to_the_total(report: ProfileReport) -> None:
    for m in report.models:
        _assert_sums(m)


def test_float_model_has_no_int8_share(report: ProfileReport) -> None:
    fp32 = report.models[0]
    cats = fp32.categories()
    assert cats["int8_compute"] == 0 and cats["conversions"] == 0 and cats["float_compute"] > 0
    assert fp32.islands is None and fp32.nhwc is None  # no islands or NHWC check without int8 kernels


def test_qdq_model_runs_int8_kernels_and_conversions(report: ProfileReport) -> None:
    int8 = report.models[1]
    cats = int8.categories()
    assert cats["int8_compute"] > 0 and cats["conversions"] > 0
    assert {"QLinearConv", "QuantizeLinear"} <= set(int8.op_types())
    assert int8.islands is not None and int8.island_ms is not None and int8.island_ms >= 0
    nhwc = int8.nhwc
    assert nhwc is not None and nhwc["qlinear_conv"] == 11 and 0 <= nhwc["channels_last"] <= 11
    assert nhwc["applied"] == (nhwc["channels_last"] == nhwc["qlinear_conv"])
    assert any("NHWC transformer did not convert" in n for n in int8.notes) == (not nhwc["applied"])


def test_two_models_delta_has_the_op_types_of_both(report: ProfileReport) -> None:
    a, b = report.models
    rows = report.op_type_delta()
    assert {r["op_type"] for r in rows} == set(a.op_types()) | set(b.op_types())
    for r in rows:
        for ms, m in zip(r["ms"], (a, b)):
            assert ms == pytest.approx(m.op_types()[r["op_type"]][2], abs=1e-4) if r["op_type"] in m.op_types() else ms == 0.0
        assert min(r["ms"]) >= 0 and r["delta_ms"] == pytest.approx(r["ms"][1] - r["ms"][0], abs=2e-4)
    assert [r["category"] for r in report.category_delta()] == list(CATEGORIES)


def test_json_schema(report: ProfileReport) -> None:
    d = json.loads(json.dumps(report.as_dict(top=3)))
    assert set(d) == {"threads", "runs", "warmup", "inputs", "models", "delta"}
    assert d["inputs"] == {"input": [1, 3, 32, 32]} and d["threads"] == 1 and d["runs"] == RUNS["runs"]
    for m in d["models"]:
        assert set(m) == {"model", "total_ms", "run_ms", "runs", "categories", "op_types", "top_nodes", "float_islands", "nhwc", "notes"}
        assert len(m["top_nodes"]) == 3 and set(m["top_nodes"][0]) == {"node", "op_type", "category", "ms", "share"}
        assert set(m["op_types"][0]) == {"op_type", "category", "nodes", "ms", "share"}
    assert [m["model"] for m in d["models"]] == ["fp32", "int8"] == d["delta"]["models"]
    assert set(d["models"][1]["float_islands"]) == {"ms", "share", "count", "goal_share", "islands"}
    assert set(d["delta"]) == {"models", "categories", "op_types"}
    assert "delta" not in ProfileReport(report.models[:1], 1, 3, 1, {}).as_dict()


def test_nhwc_check_says_when_the_transformer_did_not_run(cnn_pair: tuple[onnx.ModelProto, ir.Model]) -> None:
    # Level "extended" fuses QDQ into QLinearConv but leaves out the NHWC layout transformer.
    m = profile_models([cnn_pair[1]], _feeds((1, 3, 32, 32)), optimization="extended", **RUNS).models[0]
    assert m.nhwc is not None and m.nhwc["channels_last"] == 0 and not m.nhwc["applied"]
    assert any("NHWC transformer did not convert 11 of 11 QLinearConv" in n for n in m.notes)


def _conv_erf_conv() -> onnx.ModelProto:
    """Conv → Erf → Conv → Conv: Erf has no int8 kernel, so the int8 model keeps DQ → Erf → Q."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,8,16,16] input) => (float[1,8,16,16] y) {
            a = Conv<pads=[1,1,1,1]>(input, w1)
            t = Erf(a)
            b = Conv<pads=[1,1,1,1]>(t, w2)
            y = Conv<pads=[1,1,1,1]>(b, w3)
        }""")
    rng = np.random.default_rng(0)
    for name in ("w1", "w2", "w3"):
        model.graph.initializer.append(onnx.numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), name))
    return model


def test_float_island_between_int8_convs() -> None:
    int8 = onnxq.quantize_static(_conv_erf_conv(), "synthetic:4", tune=False).model
    m = profile_models([int8], _feeds((1, 8, 16, 16)), **RUNS).models[0]
    _assert_sums(m)
    assert m.islands is not None and len(m.islands) == 1
    ops = {n.name: n.op_type for n in m.nodes}
    assert sorted(ops[n] for n in m.islands[0].nodes) == ["DequantizeLinear", "Erf", "QuantizeLinear"]
    assert m.island_ms == pytest.approx(sum(n.ms for n in m.nodes if n.name in m.islands[0].nodes))
    share = (m.island_ms or 0) / m.total_ms
    assert any(n.startswith("float islands take") for n in m.notes) == (share >= FLOAT_ISLAND_GOAL)


@pytest.mark.parametrize(
    ("op", "dtype", "category"),
    [("QLinearConv", "uint8", "int8_compute"), ("NhwcMaxPool", "uint8", "int8_compute"), ("MaxPool", "float", "float_compute"),
     ("MatMulIntegerToFloat", "uint8", "int8_compute"), ("DequantizeLinear", "uint8", "conversions"), ("Cast", "float", "conversions"),
     ("Transpose", "uint8", "layout"), ("Concat", "float", "layout"), ("ReorderInput", "float", "layout"), ("Shape", "float", "rest"),
     ("Loop", "int64", "rest"), ("Add", "int64", "rest"), ("Sigmoid", "float16", "float_compute"), ("Resize", "float", "float_compute")],
)  # fmt: skip
def test_categorize(op: str, dtype: str, category: str) -> None:
    assert categorize(op, dtype) == category


def _event(name: str, op: str, ts: int, dur: int, cat: str = "Node") -> dict:
    args = {"op_name": op, "input_type_shape": [{"float": [1]}], "output_type_shape": [{"float": [1]}]}
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_warmup_runs_are_cut_and_control_flow_counts_only_its_own_time() -> None:
    trace = []
    for run, start in enumerate((0, 1000, 2000)):  # run 0 is the warm-up
        trace.append(_event("model_run", "", start, 500, cat="Session"))
        trace.append(_event("loop_kernel_time", "Loop", start + 10, 300))
        trace.append(_event("body/add_kernel_time", "Add", start + 20, 100 + run))  # inside the loop, twice
        trace.append(_event("body/add_kernel_time", "Add", start + 130, 100 + run))
        trace.append(_event("after_kernel_time", "Relu", start + 320, 50))
    nodes, run_ms, runs = node_times(trace, warmup=1)
    times = {n.name: n.ms for n in nodes}
    assert runs == 2 and run_ms == pytest.approx(0.5)
    assert times["body/add"] == pytest.approx((202 + 204) / 2 / 1000)  # summed per run, median over runs 1 and 2
    assert times["loop"] == pytest.approx((300 - (202 + 204) / 2) / 1000)  # its own time only
    assert times["after"] == pytest.approx(0.05)
    assert {n.name: n.category for n in nodes}["loop"] == "rest"


def test_bad_inputs(cnn_pair: tuple[onnx.ModelProto, ir.Model]) -> None:
    fp32 = cnn_pair[0]
    with pytest.raises(CalibrationDataError, match=r"model #1: input 'input' has no data; the inputs given are 'x'"):
        profile_models([fp32], {"x": np.zeros((1, 3, 32, 32), np.float32)}, **RUNS)
    with pytest.raises(CalibrationError, match=r"model #1: onnxruntime failed"):
        profile_models([fp32], _feeds((1, 3, 8, 8)), **RUNS)
    with pytest.raises(InvalidModelError, match=r"broken: onnxruntime cannot load"):
        profile_models([b"not a model"], _feeds((1, 3, 32, 32)), labels=["broken"], **RUNS)
    with pytest.raises(ConfigError, match="one or two models"):
        profile_models([fp32] * 3, _feeds((1, 3, 32, 32)))
    with pytest.raises(ConfigError, match="optimization 'fast'"):
        profile_models([fp32], _feeds((1, 3, 32, 32)), optimization="fast")
