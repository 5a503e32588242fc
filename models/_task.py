"""Models whose int8 failure only a task metric sees: a one-stage detector and a CTC text recogniser.

Both keep a high whole-tensor similarity under plain int8 while the task breaks — the two failure
shapes of the accuracy guard (onnxq's ``tune-latency``) that per-task metrics exist for:

- ``yolo-detector``: one output concatenating pixel boxes (hundreds) and class probabilities (0..1)
  along the channel axis. The boxes dominate the whole tensor's cosine, so the scores can fall apart
  unseen; here two activation-outlier channels in the class branch (as trained detectors have)
  stretch that branch's int8 grid until near-threshold scores flip.
- ``ctc-recognizer``: per-time-step log-probabilities [T, N, C] whose top two classes are close at
  character steps. A 1 % per-step disagreement keeps per-step top-1 agreement above the 0.98 bar
  while about a third of 48-step strings decode differently.

Weights are seeded He-normal draws as everywhere in :mod:`models`, then retouched where the docstring
says (outlier channels, biases); the retouching is what makes plain int8 fail while float works.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from ._common import DEFAULT_OPSET, Dim, GraphBuilder, check_opset, he_normal, require
from ._layers import conv, text_line_lstm

__all__ = ["build_ctc_recognizer", "build_yolo_detector"]


def _retouch(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    """Replace an initializer's values in place (same name, dtype float32)."""
    tensor.CopyFrom(onnx.numpy_helper.from_array(np.asarray(value, np.float32), tensor.name))


def _silu_conv(g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, gain: np.ndarray | None = None) -> str:
    """Conv (He weights; output channel k scaled by ``gain[k]``) → Sigmoid → Mul: SiLU as exporters write it."""
    y = conv(g, x, in_ch, out_ch, kernel, stride=stride)
    if gain is not None:
        weight = g.initializers[-2]  # conv() appends its weight, then its bias
        _retouch(weight, onnx.numpy_helper.to_array(weight) * gain.reshape(-1, 1, 1, 1))
    return g.op("Mul", [y, g.op("Sigmoid", [y], name="sigmoid")], name="silu")


def _anchor_points(grid: int, stride: int) -> np.ndarray:
    """Anchor centres in pixels, as [1, 4, A] ``(cx, cy, cx, cy)`` for ltrb distances (A = grid²)."""
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    cx, cy = (xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride
    return np.stack([cx, cy, cx, cy])[None].astype(np.float32)


def build_yolo_detector(
    *, seed: int = 0, input_size: int = 256, width: int = 32, num_classes: int = 4, outlier_gain: float = 120.0,
    score_bias: float = -2.0, batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A YOLOv8-style one-stage anchor-free detector with one ``[N, 4 + C, A]`` output.

    Input ``input`` float32 [batch, 3, input_size, input_size] (a multiple of 16). Backbone: four
    stride-2 3x3 Conv+SiLU layers (SiLU written Conv → Sigmoid → Mul) with ``width``, 2x, 2x, 2x
    channels → grid G = input_size/16, A = G² anchors (stride s = 16). Box branch: 3x3 Conv+SiLU,
    1x1 Conv to 4 → Reshape [N, 4, A] → Sigmoid → Mul by (-s, -s, s, s) → Add the anchor box
    (cx - 2s, cy - 2s, cx + 2s, cy + 2s) = ``(x1, y1, x2, y2)`` in pixels (-40..296 at the default
    size; boxes 64-96 px wide, so neighbouring anchors overlap as a trained detector's do). Class
    branch: 3x3 Conv+SiLU whose first two output channels are scaled by ``outlier_gain``
    (activation outliers in the hundreds, read by the class 1x1 Conv with weights ~0) → 1x1 Conv to
    C (bias ``score_bias``: about 15 % of anchors score above 0.25) → Reshape [N, C, A] → Sigmoid.
    One ``Concat(axis=1)`` → ``detections`` [batch, 4 + num_classes, A]. Node count: 27.

    Failure class: whole-tensor cosine stays above 0.9999 (the boxes dominate it) while the outlier
    channels stretch the class branch's int8 grid: score SQNR falls to about 10 dB and detection F1
    against float (score > 0.25, NMS at IoU 0.5, match at IoU 0.5) to about 0.67. With the class
    branch float it is 34 dB and 0.97; ``outlier_gain=1`` gives a detector plain int8 keeps at
    33 dB and 0.97 (10: 28 dB and 0.94, 40: 17 dB and 0.82).
    """
    check_opset(opset, 13, "build_yolo_detector")
    require(input_size >= 16 and input_size % 16 == 0, f"build_yolo_detector: input_size must be a multiple of 16, got {input_size}")
    require(min(width, num_classes) >= 1 and outlier_gain > 0, "build_yolo_detector: width, num_classes >= 1 and outlier_gain > 0")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])
    chans = [3, width, 2 * width, 2 * width, 2 * width]
    for i in range(4):
        with g.scope(f"backbone/layer{i + 1}"):
            x = _silu_conv(g, x, chans[i], chans[i + 1], 3, stride=2)
    feat, grid, stride = chans[-1], input_size // 16, 16
    anchors = grid * grid
    with g.scope("head/box"):
        b = _silu_conv(g, x, feat, feat, 3)
        b = conv(g, b, feat, 4, 1, name="pred")
        b = g.op("Sigmoid", [g.op("Reshape", [b, g.ints("shape", [0, 4, -1])], name="reshape")], name="sigmoid")
        sign = np.array([-1, -1, 1, 1], np.float32).reshape(1, 4, 1)
        b = g.op("Mul", [b, g.const("reach", sign * stride)], name="to_pixels")
        boxes = g.op("Add", [b, g.const("anchor_box", _anchor_points(grid, stride) + 2 * stride * sign)], name="decode")
    with g.scope("head/cls"):
        gain = np.ones(feat, np.float32)
        gain[:2] = outlier_gain
        c = _silu_conv(g, x, feat, feat, 3, gain=gain)
        c = conv(g, c, feat, num_classes, 1, name="pred")
        weight, bias = g.initializers[-2:]
        w = onnx.numpy_helper.to_array(weight).copy()
        w[:, gain != 1] *= 1e-3  # the outlier channels barely reach the scores
        _retouch(weight, w)
        _retouch(bias, np.full(num_classes, score_bias))
        scores = g.op("Sigmoid", [g.op("Reshape", [c, g.ints("shape", [0, num_classes, -1])], name="reshape")], name="sigmoid")
    det = g.op("Concat", [boxes, scores], name="head/concat", out="detections", axis=1)
    g.output(det, "detections", [batch, 4 + num_classes, anchors])
    return g.model("yolo_detector", doc="onnxq.models.build_yolo_detector")


def _unpadded_conv_relu(g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: tuple[int, int]) -> str:
    return g.op("Relu", [conv(g, x, in_ch, out_ch, kernel, pad=False)], name="relu")


def build_ctc_recognizer(
    *, seed: int = 0, height: int = 32, input_width: Dim = "W", width: int = 16, hidden: int = 32, num_classes: int = 12,
    blank_bias: float = 0.6, batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A CNN+LSTM CTC text recogniser: per-column log-probabilities ``[T, N, C]`` (class 0 = blank).

    Input ``input`` float32 [batch, 1, height, input_width] (``height`` a multiple of 8; the width,
    symbolic ``"W"``, a multiple of 4 at run time). Features: three Conv 3x3+SiLU stages (SiLU as
    Conv → Sigmoid → Mul) with MaxPool 2x2, 2x2, (2, 1) and ``width``, 2x, 2x channels; a Conv+Relu
    whose kernel spans the remaining height → [N, C, 1, W/4]; Squeeze, Transpose to [T = W/4, N, C];
    a forward LSTM (``hidden`` units); MatMul+Add to ``num_classes`` logits (He weights, the blank's
    bias ``blank_bias``); LogSoftmax → ``log_probs`` [T, batch, num_classes], the layout CTC losses
    and greedy decoders read. Node count: 21.

    Failure class: the head is unsure — its top two classes are close at many character steps —
    while ``blank_bias`` makes about nine steps in ten confident blanks, as in a trained recogniser.
    int8 noise from anywhere in the network flips about 1 step in 100: per-step top-1 agreement
    stays above 0.98 while about a third of 48-step strings (W = 192) decode differently — with
    the Convs or the head alone int8 too, so a guard reading whole strings keeps it float.
    """
    check_opset(opset, 13, "build_ctc_recognizer")
    require(height >= 8 and height % 8 == 0, f"build_ctc_recognizer: height must be a multiple of 8, got {height}")
    require(min(width, hidden, num_classes) >= 2, "build_ctc_recognizer: width, hidden and num_classes must be >= 2")
    g = GraphBuilder(seed, opset)
    y = text_line_lstm(g, height, input_width, batch, [1, width, 2 * width, 2 * width], _silu_conv, _unpadded_conv_relu, hidden, bidirectional=False)
    y = g.squeeze(y, [1], name="sequence/squeeze_dirs")  # [T, 1, N, H] → [T, N, H]
    with g.scope("head"):
        w = he_normal(g.rng, (hidden, num_classes), hidden)
        y = g.op("MatMul", [y, g.const("fc/weight", w)], name="fc/matmul")
        bias = np.zeros(num_classes, np.float32)
        bias[0] = blank_bias
        y = g.op("Add", [y, g.const("fc/bias", bias)], name="fc/add")
        y = g.op("LogSoftmax", [y], name="log_softmax", out="log_probs", axis=-1)
    g.output(y, "log_probs", ["T", batch, num_classes])
    return g.model("ctc_recognizer", doc="onnxq.models.build_ctc_recognizer")
