"""The two failure shapes of a task-blind guard, end to end on the builders, with the task metric computed here.

- ``yolo-detector``: one output concatenating pixel boxes and probabilities. The old guard (whole-
  tensor cosine ≥ 0.97) accepts a plan whose detections disagree with float (F1 ≈ 0.67); the default
  guard (worst-segment SQNR ≥ 30 dB) floats the two class-branch Convs and F1 comes back above 0.95.
- ``ctc-recognizer``: log-probabilities [T, N, C]. The old guard (per-step top-1 ≥ 0.98) accepts a
  plan under which a third of the decoded strings change; the default guard (whole-sequence
  agreement ≥ 0.98) refuses it, and since no partial plan keeps the strings the report says so.

Timing is replaced by a fixed verdict (int8 faster than float, no glue class worth floating), so
only accuracy decides and the outcome does not depend on this machine's load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxq.passes.quantization.tune_latency as tl
from models import build
from onnxq import ConfigError, ir
from onnxq.api import ConversionOptions, ConversionResult, quantize_static
from onnxq.metrics import SequenceAgreement, Top1, WorstSliceSQNR, choose_guards, default_guard
from onnxq.metrics._slices import WorstSliceCosine
from onnxq.metrics._tensor import Cosine
from tests.helpers import cosine, invoke, parse, random_feeds, session

Feeds = dict[str, np.ndarray]


@pytest.fixture(autouse=True)
def int8_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 always beats float and floating a glue class never pays: only accuracy decides."""
    monkeypatch.setattr(tl.LatencyTrials, "time", lambda self, a, b: (2.0, 1.0) if a is self.float_session else (1.0, 1.0))


def _outputs(model: object, feeds: list[Feeds]) -> list[np.ndarray]:
    sess = session(model)
    return [sess.run(None, f)[0] for f in feeds]


def _kept(res: ConversionResult) -> dict[str, str]:
    return {d["node"]: d["reason"] for d in res.report.to_dict()["float_nodes"] if d["reason"].startswith("kept float:")}


# -- the default guard is a function of the output's shape and producers --------------------------------
@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("yolo-detector", WorstSliceSQNR(axis=1, split=(4, 4))),
        ("detector", WorstSliceSQNR(axis=2, split=(4, 4))),  # boxes and scores concatenated on the last axis
        ("ctc-recognizer", SequenceAgreement(batch_axis=1)),  # [T, N, C]: the batch is axis 1
        ("cnn-lstm", SequenceAgreement(batch_axis=1)),
        ("cnn", Top1()),
        ("lstm", Top1()),  # scores from the last state: no position axis left
        ("transformer", Cosine()),  # hidden states, not scores
    ],
)
def test_default_guard_per_builder(name: str, metric: object) -> None:
    model = ir.load(build(name))
    assert default_guard(model, model.graph.outputs[0])[0] == metric


def _concat_of_convs(scale: float) -> onnx.ModelProto:
    w = ", ".join(["0.5"] * 4)
    return parse(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 1, 4, 4] x) => (float[1, 2, 4, 4] y) {{
            wa = Constant <value = float[1, 1, 2, 2] {{{w}}}> ()
            wb = Constant <value = float[1, 1, 2, 2] {{{w}}}> ()
            sb = Constant <value = float {{{scale}}}> ()
            a = Conv <pads = [0, 0, 1, 1]> (x, wa)
            c = Conv <pads = [0, 0, 1, 1]> (x, wb)
            b = Mul (c, sb)
            y = Concat <axis = 1> (a, b)
        }}
        """
    )


def test_concat_of_alike_inputs_is_cosine_unless_ranges_are_apart() -> None:
    model = ir.load(_concat_of_convs(100.0))
    out = model.graph.outputs[0]
    assert default_guard(model, out)[0] == Cosine()  # two unbounded producers: one kind

    class R:
        def __init__(self, lo: float, hi: float) -> None:
            self.min, self.max = lo, hi

    ranges = {"a": R(-2, 2), "b": R(-200, 200)}
    metric, why = default_guard(model, out, ranges)
    assert metric == WorstSliceSQNR(axis=1, split=(1, 1)) and "ranges more than 10x apart" in why


def test_softmax_over_a_symbolic_position_axis_is_a_sequence() -> None:
    """[N, T, C] token scores with T symbolic and no recurrent op: whole-sequence agreement, batch axis 0."""
    proto = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, T, 8] x) => (float[N, T, 5] y) {
            w = Constant <value = float[8, 5] {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7,
                                               1.8, 1.9, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1, 3.2, 3.3, 3.4,
                                               3.5, 3.6, 3.7, 3.8, 3.9, 4.0}> ()
            h = MatMul (x, w)
            y = Softmax <axis = -1> (h)
        }
        """
    )
    model = ir.load(proto)
    assert default_guard(model, model.graph.outputs[0])[0] == SequenceAgreement(batch_axis=0)


def test_user_specs_replace_the_default_guard() -> None:
    model = ir.load(build("yolo-detector", input_size=64, width=8))
    [guard] = choose_guards(model, ["worst_slice_cosine:axis=1,split=4+4>=0.99"])
    assert guard.metric == WorstSliceCosine(axis=1, split=(4, 4)) and guard.threshold == 0.99 and guard.why.startswith("given:")
    [guard] = choose_guards(model, [], min_cosine=0.5)
    assert guard.metric == WorstSliceSQNR(axis=1, split=(4, 4)) and guard.threshold == 30.0


# -- the detector ---------------------------------------------------------------------------------------
def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes a [n, 4] and b [m, 4]."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda z: np.prod(z[:, 2:] - z[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def decode(output: np.ndarray, score: float = 0.25, nms: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Detections of a [N, 4 + C, A] output: best class per anchor above ``score``, then per-class
    greedy NMS at IoU ``nms``. One (boxes [k, 4], classes [k]) per image."""
    found = []
    for image in output:
        boxes, scores = image[:4].T, image[4:]
        cls, conf = scores.argmax(0), scores.max(0)
        order = [int(i) for i in np.argsort(-conf) if conf[i] > score]
        keep: list[int] = []
        for i in order:
            same = [j for j in keep if cls[j] == cls[i]]
            if not same or _iou(boxes[[i]], boxes[same]).max() < nms:
                keep.append(i)
        found.append((boxes[keep], cls[keep]))
    return found


def detection_f1(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """F1 of the candidate's detections against the reference's (same class, IoU ≥ 0.5, greedy by score order)."""
    tp = fp = fn = 0
    for ref_out, cand_out in zip(reference, candidate):
        for (rb, rc), (cb, cc) in zip(decode(ref_out), decode(cand_out)):
            free = np.ones(len(rb), bool)
            for box, c in zip(cb, cc):
                hits = np.flatnonzero(free & (rc == c) & (_iou(box[None], rb)[0] >= 0.5)) if len(rb) else []
                if len(hits):
                    free[hits[0]] = False
                    tp += 1
                else:
                    fp += 1
            fn += int(free.sum())
    return 2 * tp / max(2 * tp + fp + fn, 1)


@pytest.fixture(scope="module")
def detector() -> Iterator[tuple[onnx.ModelProto, list[Feeds], list[Feeds]]]:
    src = build("yolo-detector")
    calib = [random_feeds(src, seed=i, dims={"N": 1}) for i in range(8)]
    held_out = [random_feeds(src, seed=100 + i, dims={"N": 1}) for i in range(24)]
    yield src, calib, held_out


def test_detector_old_guard_lets_broken_detections_through(detector: tuple[onnx.ModelProto, list[Feeds], list[Feeds]]) -> None:
    src, calib, held_out = detector
    old = quantize_static(src, calib, accuracy_metric=("cosine",))  # the whole-tensor guard of before
    assert _kept(old) == {} and old.report.accuracy_guards[0].meets
    ref, got = _outputs(src, held_out), _outputs(old.model, held_out)
    assert cosine(np.stack(ref), np.stack(got)) > 0.9999  # the boxes dominate the whole tensor...
    assert detection_f1(ref, got) < 0.8  # ...while a third of the detections change
    assert WorstSliceSQNR(axis=1, split=(4, 4)).evaluate(zip(ref, got)) < 15  # the score segment is at ~10 dB


def test_detector_default_guard_keeps_the_detections(detector: tuple[onnx.ModelProto, list[Feeds], list[Feeds]]) -> None:
    src, calib, held_out = detector
    res = quantize_static(src, calib)
    [guard] = res.report.accuracy_guards
    assert guard.output == "detections" and guard.metric == "worst_slice_sqnr:split=4+4" and guard.threshold == 30.0
    assert guard.meets and guard.value is not None and guard.value >= 30 and "probabilities beside unbounded values" in guard.why
    ref, got = _outputs(src, held_out), _outputs(res.model, held_out)
    assert detection_f1(ref, got) >= 0.95
    # what it took: the class branch's two Convs float; backbone and box branch stay int8
    assert sorted(_kept(res)) == ["head/cls/conv", "head/cls/pred"]
    assert res.report.quantized_nodes is not None and res.report.quantized_nodes >= 14
    steps = res.report.to_dict()["latency"]["steps"]
    assert steps[0]["step"] == "accuracy check" and steps[0]["worst_slice_sqnr:split=4+4"] < 15 and not steps[0]["meets_targets"]
    assert steps[0]["guards"][0]["worst"] == "segment 1 (indices 4..7 along axis 1)"  # the scores, not the boxes


def test_healthy_detector_is_not_over_guarded() -> None:
    """Without outlier channels int8 keeps every segment above the bar: nothing is floated for accuracy."""
    src = build("yolo-detector", outlier_gain=1.0)
    res = quantize_static(src, [random_feeds(src, seed=i, dims={"N": 1}) for i in range(8)])
    assert _kept(res) == {} and res.report.accuracy_guards[0].meets


# -- the CTC recogniser -------------------------------------------------------------------------------
def greedy_strings(log_probs: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [T, N, C]: arg-max per step, repeats collapsed, blanks (class 0) dropped."""
    strings = []
    for n in range(log_probs.shape[1]):
        best = log_probs[:, n].argmax(-1)
        keep = (best != 0) & np.r_[True, best[1:] != best[:-1]]
        strings.append(tuple(int(c) for c in best[keep]))
    return strings


def string_agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    pairs = [(r, c) for ref, cand in zip(reference, candidate) for r, c in zip(greedy_strings(ref), greedy_strings(cand))]
    return sum(r == c for r, c in pairs) / len(pairs)


@pytest.fixture(scope="module")
def recognizer() -> Iterator[tuple[onnx.ModelProto, list[Feeds], list[Feeds]]]:
    """8 calibration batches of 8 text lines (64 sequences for the guard), 48 steps each (W = 192)."""
    src = build("ctc-recognizer")
    calib = [random_feeds(src, seed=i, dims={"N": 8, "W": 192}) for i in range(8)]
    held_out = [random_feeds(src, seed=100 + i, dims={"N": 8, "W": 192}) for i in range(6)]
    yield src, calib, held_out


def test_recognizer_old_guard_lets_flipped_strings_through(recognizer: tuple[onnx.ModelProto, list[Feeds], list[Feeds]]) -> None:
    src, calib, held_out = recognizer
    # 7-bit weights everywhere (not measured per node): the plan under which int8 flips strings, which is what the guards are tested on
    old = quantize_static(src, calib, accuracy_metric=("top1",), reduce_range=True)  # per-step top-1, the guard of before
    [guard] = old.report.accuracy_guards
    assert _kept(old) == {} and guard.meets and guard.value is not None and guard.value >= 0.98
    ref, got = _outputs(src, held_out), _outputs(old.model, held_out)
    assert Top1().evaluate(zip(ref, got)) >= 0.98  # per step it looks fine on unseen lines too...
    assert string_agreement(ref, got) < 0.8  # ...but a third of the strings decode differently


def test_recognizer_default_guard_refuses_what_int8_cannot_keep(recognizer: tuple[onnx.ModelProto, list[Feeds], list[Feeds]]) -> None:
    src, calib, held_out = recognizer
    res = quantize_static(src, calib, reduce_range=True)  # the plan of the test above
    [guard] = res.report.accuracy_guards
    assert guard.metric == "sequence_agreement:batch_axis=1" and guard.threshold == 0.98
    assert "after a recurrent op" in guard.why
    ref, got = _outputs(src, held_out), _outputs(res.model, held_out)
    assert string_agreement(ref, got) >= guard.threshold
    # every int8 plan the guard tried changed whole strings (the Convs alone, then the head too):
    # the model stays float and the report says which guard refused it, with the value it measured
    assert res.report.quantized_nodes == 0 and not guard.meets and guard.value is not None and guard.value < 0.8
    steps = [s["step"] for s in res.report.to_dict()["latency"]["steps"]]
    assert steps == ["accuracy check", "keep 4 of 4 Conv/ConvTranspose float (accuracy)", "whole model float (accuracy)"]
    assert _kept(res)["head/fc/matmul"] == f"kept float: int8 missed the accuracy targets (sequence_agreement:batch_axis=1 {guard.value:.4f} < 0.98)"


def test_too_few_sequences_for_the_bar_is_noted() -> None:
    src = build("ctc-recognizer", width=4, hidden=8)
    res = quantize_static(src, [random_feeds(src, seed=i, dims={"N": 1, "W": 32}) for i in range(4)], max_accuracy_trials=4)
    notes = res.report.to_dict()["notes"]
    assert any("compared as whole sequences, but the guard sees only 4; a bar of 0.98 needs 50 or more" in n for n in notes)


# -- options and CLI --------------------------------------------------------------------------------------
def test_bad_guard_specs_fail_before_any_work() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'nosuch'"):
        quantize_static(build("mlp"), "synthetic:2", accuracy_metric=("nosuch",))
    with pytest.raises(ConfigError, match="the model has no output 'boxes'"):
        quantize_static(build("mlp"), "synthetic:2", accuracy_metric=("cosine@boxes",))
    with pytest.raises(ConfigError, match=r"metric 'max_abs' has no default threshold: write 'max_abs<=VALUE'"):
        ConversionOptions(accuracy_metric=("max_abs",))  # refused with the options, before the model is read
    assert ConversionOptions(accuracy_metric="top1@logits").accuracy_metric == ("top1@logits",)


def test_cli_metric_options(tmp_path: Path) -> None:
    src = tmp_path / "det.onnx"
    src.write_bytes(build("yolo-detector", input_size=64, width=8).SerializeToString())
    out, report = tmp_path / "det.int8.onnx", tmp_path / "report.json"
    code, _, err = invoke("convert", str(src), "-o", str(out), "--data", "synthetic:4", "--dim", "N=1", "--no-tune", "--metric", "nosuch")
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "unknown metric 'nosuch'" in err
    code, _, err = invoke("convert", str(src), "-o", str(out), "--data", "synthetic:4", "--dim", "N=1", "--no-tune", "--report", str(report))
    assert code == 0, err
    args = ("eval", str(src), str(out), "--data", "synthetic:2", "--dim", "N=1")
    code, stdout, err = invoke(*args, "--json", "--metric", "topk:k=2", "--metric", "threshold:t=0.25")
    assert code == 0, err
    [o] = json.loads(stdout)["outputs"]
    assert set(o["metrics"]) == {"topk:k=2", "threshold:t=0.25"} and o["guards"][0]["metric"] == "worst_slice_sqnr:split=4+4"
    bad = [("nosuch", "unknown metric 'nosuch'"), ("numpy:mean", "metric 'numpy:mean' raised TypeError"), ("zz_no_module:f", "cannot import module")]
    for spec, message in bad:
        code, _, err = invoke(*args, "--metric", spec)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
