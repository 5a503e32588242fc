"""Recurrent models: an LSTM sequence classifier and a CRNN-style OCR recogniser (Conv → LSTM)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ._common import DEFAULT_OPSET, Dim, GraphBuilder, check_opset, require
from ._layers import conv_bn_act, gemm, linear, lstm, text_line_lstm

__all__ = ["build_cnn_lstm", "build_lstm"]


def build_lstm(
    *, seed: int = 0, input_size: int = 16, hidden: int = 32, seq: Dim | None = None, num_classes: int = 10,
    bidirectional: bool = False, batch: Dim = "batch", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A sequence classifier: ONNX ``LSTM`` on the last hidden state, then a Gemm classifier.

    Input ``input`` float32 [seq, batch, input_size] (``seq`` symbolic ``"seq"`` unless an int is
    given). LSTM (W, R, B initializers, ``Y`` left unnamed, ``Y_h`` used) → final hidden state
    [dirs, batch, hidden] → Squeeze(0) (forward) or Transpose + Reshape [0, -1] (bidirectional) →
    Gemm(transB=1) → ``logits`` [batch, num_classes]. Node count: 3 (forward) or 4 (bidirectional).
    Realistic benchmark size: ``input_size=128, hidden=512, bidirectional=True`` with seq 100.

    Failure class: the LSTM op keeps its weights as inputs W/R/B that weight passes (quantization,
    pruning) must either handle per gate or leave alone; dynamic quantization targets it.
    """
    check_opset(opset, 13, "build_lstm")
    require(min(input_size, hidden, num_classes) >= 1, "build_lstm: sizes must be >= 1")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, ["seq" if seq is None else seq, batch, input_size])
    _, y_h = lstm(g, x, input_size, hidden, bidirectional=bidirectional, want_y=False, name="lstm")
    with g.scope("last_state"):
        if bidirectional:  # [2, batch, H] → [batch, 2, H] → [batch, 2H]
            h = g.op("Transpose", [y_h], name="transpose", perm=[1, 0, 2])
            h = g.op("Reshape", [h, g.ints("shape", [0, -1])], name="reshape")
        else:
            h = g.squeeze(y_h, [0])
    dirs = 2 if bidirectional else 1
    y = gemm(g, h, dirs * hidden, num_classes, name="head/fc", out="logits")
    g.output(y, "logits", [batch, num_classes])
    return g.model("lstm", doc="onnxq.models.build_lstm")


def _unpadded_conv_bn_act(g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: tuple[int, int]) -> str:
    return conv_bn_act(g, x, in_ch, out_ch, kernel, pad=False)


def build_cnn_lstm(
    *, seed: int = 0, width: int = 16, height: int = 32, input_width: Dim = "W", hidden: int = 32,
    num_classes: int = 37, batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A CRNN-style text-line recogniser (Conv features → bidirectional LSTM → per-column classes).

    Input ``input`` float32 [batch, 1, height, input_width] (a grey text line; ``height`` a multiple of
    8, width symbolic ``"W"``, a multiple of 4 at run time). Three Conv+BN+Relu+MaxPool stages
    (pools 2x2, 2x2, (2,1)) with ``width``, 2x and 4x channels; a Conv+BN+Relu whose kernel spans the
    remaining height collapses it to 1; Squeeze → Transpose to [W/4, batch, C]; bidirectional LSTM;
    Transpose + Reshape to [W/4, batch, 2*hidden]; MatMul+Add; Softmax → ``probs``
    [T = W/4, batch, num_classes] (CTC layout). Node count: 23.
    Realistic benchmark size: ``width=64, hidden=256, num_classes=6625`` on 32x320 inputs.

    Failure class: dynamic quantization turns these Convs into ConvInteger, which onnxruntime runs
    slower than fp32 Conv; the model mixes Conv and LSTM quantization.
    """
    check_opset(opset, 13, "build_cnn_lstm")
    require(height >= 8 and height % 8 == 0, f"build_cnn_lstm: height must be a multiple of 8, got {height}")
    require(min(width, hidden, num_classes) >= 1, "build_cnn_lstm: sizes must be >= 1")
    g = GraphBuilder(seed, opset)
    y = text_line_lstm(g, height, input_width, batch, [1, width, 2 * width, 4 * width], conv_bn_act, _unpadded_conv_bn_act, hidden, bidirectional=True)
    with g.scope("sequence"):
        y = g.op("Transpose", [y], name="lstm_transpose", perm=[0, 2, 1, 3])  # [T, N, 2, H]
        y = g.op("Reshape", [y, g.ints("shape", [0, 0, -1])], name="lstm_reshape")  # [T, N, 2H]
    with g.scope("head"):
        y = linear(g, y, 2 * hidden, num_classes, name="fc")
        y = g.op("Softmax", [y], name="softmax", out="probs", axis=-1)
    g.output(y, "probs", ["T", batch, num_classes])
    return g.model("cnn_lstm", doc="onnxq.models.build_cnn_lstm")
