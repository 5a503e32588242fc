"""The metrics registry: each metric on hand-made arrays with known answers, specs, user metrics, bad input."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxq import ConfigError
from onnxq.metrics import (
    CallableMetric,
    Cosine,
    Guard,
    GuardSet,
    Metric,
    SequenceAgreement,
    Top1,
    WorstSliceSQNR,
    choose_guards,
    make_metric,
    metric_names,
    parse_guard,
    parse_params,
    register_metric,
)
from onnxq.metrics._base import REGISTRY
from onnxq.runtime.evaluate import compare_outputs, metrics_per_output


def _value(spec: str | Metric, *pairs: tuple[object, object]) -> float | None:
    return make_metric(spec).evaluate((np.asarray(r, np.float32), np.asarray(c, np.float32)) for r, c in pairs)


# -- each metric, known answers ---------------------------------------------------------------------
def test_whole_tensor_metrics() -> None:
    assert _value("cosine", ([1, 0], [0, 1])) == 0.0
    assert _value("cosine", ([1, 2], [2, 4])) == pytest.approx(1.0)
    assert _value("cosine", ([0, 0], [0, 0])) == 1.0  # both all-zero: identical
    assert _value("sqnr", ([3, 4], [3.5, 4])) == pytest.approx(20.0)  # 25 / 0.25 = 100
    assert _value("sqnr", ([3, 4], [3, 4])) == math.inf
    assert _value("max_abs", ([0, 0], [1, -3])) == 3.0
    assert _value("mean_abs", ([0, 0], [1, -3])) == 2.0


def test_accumulators_stream_over_samples() -> None:
    """Two samples accumulate to the value of their concatenation (sums, not per-sample means)."""
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((2, 5)).astype(np.float32) for _ in range(2)]
    cand = [r + rng.standard_normal(r.shape).astype(np.float32) * s for r, s in zip(ref, (0.01, 0.3))]
    for spec in ("cosine", "sqnr", "max_abs", "mean_abs"):
        assert _value(spec, *zip(ref, cand)) == pytest.approx(_value(spec, (np.concatenate(ref), np.concatenate(cand))))


def test_top1_rows_along_the_class_axis() -> None:
    ref = [[1, 2, 3], [3, 2, 1]]
    assert _value("top1", (ref, [[1, 3, 2], [3, 2, 1]])) == 0.5
    assert _value("top1:axis=0", (ref, ref)) == 1.0
    assert _value("top1", ([[1], [2]], [[2], [1]])) is None  # a class axis of size 1 is no class axis
    assert make_metric("top1").evaluate([(np.array([1, 2]), np.array([2, 1]))]) is None  # integer outputs


def test_sequence_agreement_needs_every_position() -> None:
    """[T=4, N=2, C=3]: sequence 0 agrees everywhere, sequence 1 flips one step → 0.5 (per step 7/8)."""
    ref = np.zeros((4, 2, 3), np.float32)
    ref[..., 1] = 1.0
    cand = ref.copy()
    cand[2, 1, 2] = 2.0
    assert _value("top1", (ref, cand)) == pytest.approx(7 / 8)
    assert _value("sequence_agreement:batch_axis=1", (ref, cand)) == 0.5
    assert _value("sequence_agreement:batch_axis=none", (ref, cand)) == 0.0  # the whole sample is one sequence
    assert _value("sequence_agreement", (ref, cand)) == 0.75  # batch axis 0: four "sequences" of 2 positions
    with pytest.raises(ConfigError, match="batch_axis -1 must be another axis"):
        _value("sequence_agreement:batch_axis=-1", (ref, cand))


def test_topk_and_threshold_agreement() -> None:
    assert _value("topk:k=2", ([[4, 3, 2, 1]], [[4, 1, 3, 2]])) == 0.5  # {0, 1} vs {0, 2}
    assert _value("topk:k=9", ([[4, 3, 2, 1]], [[1, 2, 3, 4]])) == 1.0  # k clamped to the class count
    # above 0.5: R = {0, 1}, C = {0, 2} → |R∩C| / |R∪C| = 1/3
    assert _value("threshold:t=0.5", ([0.9, 0.6, 0.1, 0.2], [0.9, 0.4, 0.6, 0.1])) == pytest.approx(1 / 3)
    assert _value("threshold:t=0.5", ([0.1, 0.2], [0.3, 0.4])) == 1.0  # nothing detected by either


def _boxes_and_scores() -> tuple[np.ndarray, np.ndarray]:
    """[1, 2, 64]: channel 0 pixel values (~300, nearly exact in the candidate), channel 1
    probabilities (~0.5) with noise of 0.2 — the detector-head shape."""
    rng = np.random.default_rng(1)
    ref = np.stack([rng.uniform(100, 500, 64), rng.uniform(0.2, 0.8, 64)])[None].astype(np.float64)
    cand = ref + np.stack([rng.standard_normal(64) * 0.5, rng.standard_normal(64) * 0.2])[None]
    return ref, cand


def test_worst_slice_sees_what_the_whole_tensor_hides() -> None:
    ref, cand = _boxes_and_scores()
    whole = _value("cosine", (ref, cand))
    assert whole is not None and whole > 0.99999
    noise = ((ref - cand) ** 2).sum(axis=(0, 2))
    expected = 10 * np.log10((ref**2).sum(axis=(0, 2)) / noise)
    worst = _value("worst_slice_sqnr", (ref, cand))  # default: axis 1, every index a slice
    assert worst == pytest.approx(expected[1]) and worst is not None and worst < 12
    assert _value("worst_slice_sqnr:axis=1,split=1+1", (ref, cand)) == pytest.approx(expected[1])
    assert _value("sqnr", (ref, cand)) == pytest.approx(10 * np.log10((ref**2).sum() / noise.sum()))
    dot, rr, cc = (ref * cand).sum(axis=(0, 2)), (ref**2).sum(axis=(0, 2)), (cand**2).sum(axis=(0, 2))
    assert _value("worst_slice_cosine", (ref, cand)) == pytest.approx(float(min(dot / np.sqrt(rr * cc))))


def test_worst_slice_segments_and_zero_slices() -> None:
    ref = np.ones((1, 6, 2))
    cand = ref.copy()
    cand[0, 5] += 0.1  # one channel of the second segment is off
    acc = WorstSliceSQNR(axis=1, split=(2, 4)).accumulator()
    acc.update(ref, cand)
    assert acc.result() == pytest.approx(10 * np.log10(8 / (2 * 0.01)))  # segment 1: 4 channels x 2 elements
    assert acc.detail() == "segment 1 (indices 2..5 along axis 1)"
    ref[0, 0] = 0.0  # an all-zero slice has no signal to compare with: skipped, not -inf
    assert _value("worst_slice_sqnr", (ref, ref + 0.01)) == pytest.approx(40.0)
    with pytest.raises(ConfigError, match="covers 5 of the 6 indices"):
        _value("worst_slice_sqnr:split=1+4", (ref, ref))
    with pytest.raises(ConfigError, match="axis 3 is out of range"):
        _value("worst_slice_sqnr:axis=3", (ref, ref))


# -- specs and the registry -------------------------------------------------------------------------
def test_spec_parameters_parse_and_round_trip() -> None:
    assert parse_params("axis=1,split=4+80,t=0.25,batch_axis=none,name=x", "w") == {
        "axis": 1, "split": (4, 80), "t": 0.25, "batch_axis": None, "name": "x"}
    m = make_metric("worst_slice_sqnr:axis=2,split=4+80")
    assert m == WorstSliceSQNR(axis=2, split=(4, 80)) and m.spec == "worst_slice_sqnr:axis=2,split=4+80"
    assert make_metric(m.spec) == m and make_metric("topk:k=3").spec == "topk:k=3" and make_metric("topk:k=5").spec == "topk"
    assert make_metric("worst_slice_sqnr:split=4").split == (4,)  # one item is a list of one
    assert make_metric("threshold:t=1").t == 1.0  # ints are accepted for floats
    assert set(metric_names()) >= {"cosine", "sqnr", "max_abs", "mean_abs", "top1", "worst_slice_sqnr", "worst_slice_cosine",
                                   "sequence_agreement", "topk", "threshold"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch", r"unknown metric 'nosuch'; valid: cosine, max_abs, .*worst_slice_sqnr \(or module:function\)"),
        ("topk:j=3", r"metric 'topk:j=3': unknown parameter\(s\) j; valid: k, axis"),
        ("topk:k", "parameters are KEY=VALUE"),
        ("topk:k=abc", "option 'k' must be an integer"),
        ("topk:k=0", "k must be >= 1"),
        ("topk:k=1,k=2", "parameter 'k' given twice"),
        ("worst_slice_sqnr:split=4+x", "option 'split'"),
        ("worst_slice_sqnr:split=0+4", "split sizes must be >= 1"),
        ("cosine:axis=1", r"unknown parameter\(s\) axis; valid: \(none\)"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_metric(spec)


@pytest.fixture
def clean_registry() -> object:
    """Whatever a test registers is gone afterwards."""
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


def test_registering_metrics_and_functions(clean_registry: object) -> None:
    with pytest.raises(ConfigError, match="metric 'cosine' is already registered"):
        register_metric("cosine")(Cosine)
    with pytest.raises(ConfigError, match="must be an identifier"):
        register_metric("my-metric")
    register_metric("mean_gap", direction="lower")(lambda r, c: float(np.abs(r - c).mean()))
    m = make_metric("mean_gap")
    assert isinstance(m, CallableMetric) and m.direction == "lower" and m.spec == "mean_gap:direction=lower"
    assert m.evaluate([(np.zeros(2), np.ones(2)), (np.zeros(2), np.full(2, 3.0))]) == 2.0  # mean over samples


# -- user metrics ----------------------------------------------------------------------------------
def test_callable_metric_is_the_mean_over_samples() -> None:
    def f1(ref: np.ndarray, cand: np.ndarray) -> float:
        return float((ref > 0).sum() == (cand > 0).sum())

    m = make_metric(f1)
    assert m.spec.endswith(":test_callable_metric_is_the_mean_over_samples.<locals>.f1") and m.direction == "higher"
    assert m.evaluate([(np.ones(2), np.ones(2)), (np.ones(2), -np.ones(2))]) == 0.5


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``onnxq_user_metrics_test`` on sys.path with a good, a raising and a broken metric."""
    (tmp_path / "onnxq_user_metrics_test.py").write_text(
        "import numpy as np\n"
        "def agree(ref, cand):\n    return float(np.mean(np.sign(ref) == np.sign(cand)))\n"
        "def boom(ref, cand):\n    raise ValueError('no detections to match')\n"
        "def words(ref, cand):\n    return 'many'\n"
        "def nan(ref, cand):\n    return float('nan')\n"
        "NOT_A_FUNCTION = 3\n"
    )
    (tmp_path / "onnxq_broken_metrics_test.py").write_text("raise RuntimeError('import-time failure')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "onnxq_user_metrics_test"
    for name in ("onnxq_user_metrics_test", "onnxq_broken_metrics_test"):
        sys.modules.pop(name, None)


def test_module_function_metrics(user_module: str) -> None:
    m = make_metric(f"{user_module}:agree")
    assert m.spec == f"{user_module}:agree" and m.evaluate([(np.array([1.0, -1.0]), np.array([1.0, 1.0]))]) == 0.5
    assert make_metric(f"{user_module}:agree:direction=lower").direction == "lower"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{m}:boom", r"metric '{m}:boom' raised ValueError: no detections to match"),
        ("{m}:words", r"metric '{m}:words' must return a number, returned str 'many'"),
        ("{m}:nan", r"metric '{m}:nan' returned nan, not a finite number"),
        ("{m}:missing", r"metric '{m}:missing': module '{m}' has no attribute 'missing'"),
        ("{m}:NOT_A_FUNCTION", r"'{m}:NOT_A_FUNCTION' is a int, not a function"),
        ("{m}:agree:speed=1", r"unknown parameter\(s\) speed; valid: direction"),
        ("no_such_module_xyz:f", r"cannot import module 'no_such_module_xyz': ModuleNotFoundError"),
        ("onnxq_broken_metrics_test:f", r"cannot import module 'onnxq_broken_metrics_test': RuntimeError: import-time failure"),
        ("a b:f", "expected a registered metric name or module:function"),
    ],
)
def test_user_metric_errors_name_the_spec(user_module: str, spec: str, message: str) -> None:
    spec, message = spec.format(m=user_module), message.format(m=user_module)
    with pytest.raises(ConfigError, match=message):
        make_metric(spec).evaluate([(np.ones(2), np.ones(2))])


# -- guard specs, guard sets and evaluation -------------------------------------------------------
def test_guard_specs() -> None:
    g = parse_guard("worst_slice_sqnr:axis=1>=25@detections")
    assert (g.metric, g.threshold, g.output) == (WorstSliceSQNR(axis=1), 25.0, "detections")
    assert parse_guard("top1").threshold is None
    for spec, message in [
        ("max_abs>=0.1", r"lower is better for max_abs; write 'max_abs<=0.1'"),
        ("cosine>=high", "threshold 'high' after '>=' is not a number"),
        ("cosine@", "nothing after '@'"),
        ("cosine>=nan", "threshold is NaN"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_guard(spec)


def test_user_function_guards_take_their_direction_from_the_comparison(user_module: str) -> None:
    assert parse_guard(f"{user_module}:agree<=0.1").metric.direction == "lower"
    assert parse_guard(f"{user_module}:agree>=0.9").metric.direction == "higher"


def test_guard_set_keys_bars_and_gain() -> None:
    class Out:
        def __init__(self, name: str) -> None:
            self.name, self.shape = name, None

    class Graph:
        outputs = [Out("a"), Out("b")]

    class Model:
        graph = Graph()

    guards = choose_guards(Model(), ["top1@a", "worst_slice_sqnr>=25@b", "max_abs<=2@b"], min_agreement=0.9)  # type: ignore[arg-type]
    gs = GuardSet(guards, min_agreement=0.9)
    assert gs.keys == ["agreement", "worst_slice_sqnr", "max_abs"]
    ref = [np.array([[1.0, 2.0]]), np.array([[1.0, 2.0]])]
    reading = gs.read(["a", "b"], [(ref, [np.array([[2.0, 1.0]]), np.array([[1.0, 2.5]])])])
    assert dict(reading) == {"agreement": 0.0, "cosine": 1.0, "worst_slice_sqnr": round(10 * np.log10(4 / 0.25), 4), "max_abs": 0.5}
    assert [r["meets"] for r in reading.records] == [False, False, True]
    assert not gs.meets(reading) and gs.shortfall(reading) == "agreement 0 < 0.9, worst_slice_sqnr 12.0412 < 25"
    better = {**reading, "agreement": 1.0, "worst_slice_sqnr": 32.0412}
    assert gs.meets(better) and gs.gain(reading, better) == pytest.approx(1.0 + 20 / 10)  # dB count per 10
    with pytest.raises(ConfigError, match="the model has no output 'c'; outputs: a, b"):
        choose_guards(Model(), ["cosine@c"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has no default threshold: write 'max_abs<=VALUE'"):
        choose_guards(Model(), ["max_abs"])  # type: ignore[arg-type]


def test_compare_outputs_reports_registry_metrics_and_guards() -> None:
    ref, cand = _boxes_and_scores()
    metrics = metrics_per_output(["det"], ["worst_slice_sqnr:axis=1", "topk:k=3@det"])
    result = compare_outputs(["det"], [([ref], [cand], None)], metrics=metrics, guards=[Guard("det", Cosine(), 0.97, "given")])
    out = result.output("det")
    assert out.cosine > 0.99999 and out.metrics["worst_slice_sqnr"] < 12 and set(out.metrics) == {"worst_slice_sqnr", "topk:k=3"}
    assert out.guards[0]["metric"] == "cosine" and out.guards[0]["meets"] is True
    assert out.top1_agreement == _value(Top1(), (ref, cand))
    with pytest.raises(ConfigError, match="no output 'logits'; outputs: det"):
        metrics_per_output(["det"], ["cosine@logits"])
    with pytest.raises(ConfigError, match=r"output 'det', sample #0: metric '.*boom' raised ZeroDivisionError"):

        def boom(r: np.ndarray, c: np.ndarray) -> float:
            return 1 / 0

        compare_outputs(["det"], [([ref], [cand], None)], metrics={"det": [make_metric(boom)]})


def test_sequence_metric_default_batch_axis_is_the_first() -> None:
    assert SequenceAgreement().batch_axis == 0 and SequenceAgreement(batch_axis=1).spec == "sequence_agreement:batch_axis=1"
