"""A MobileNetV2-like classifier: inverted residuals, depthwise convs and ReLU6.

MobileNetV2 (Sandler et al., 2018) is the network per-channel int8 was made for: its depthwise
weights differ by orders of magnitude between channels, and ReLU6 (exported by torch as
``Clip(x, 0, 6)``) bounds every activation but the linear bottleneck outputs. This builder keeps
its block table and channel rule; the weights are seeded He-normal draws and every Conv is followed
by an inference-mode BatchNormalization (random, non-identity statistics, as the other builders in
:mod:`models` have), so BN folding and the depthwise/pointwise pairs are exercised as in a real
export.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ._common import DEFAULT_OPSET, Dim, GraphBuilder, check_opset, require
from ._layers import batch_norm, conv, gemm

__all__ = ["build_mobilenet_v2_like"]

#: (expansion t, output channels c at width 1, repeats n, first stride s), MobileNetV2's Table 2.
_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of ``divisor``, never below 90% of ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _conv_bn_relu6(g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, group: int = 1,
                   relu6: bool = True, gamma_scale: float = 1.0, index: str = "") -> str:
    """Conv (no bias) + BatchNormalization (+ ``Clip(0, 6)``, ReLU6 as torch exports it)."""
    y = conv(g, x, in_ch, out_ch, kernel, stride=stride, group=group, bias=False, name=f"conv{index}")
    y = batch_norm(g, y, out_ch, gamma_scale=gamma_scale, name=f"bn{index}")
    if not relu6:
        return y
    return g.op("Clip", [y, g.scalar(f"relu6{index}/min", 0.0), g.scalar(f"relu6{index}/max", 6.0)], name=f"relu6{index}")


def _inverted_residual(g: GraphBuilder, x: str, in_ch: int, out_ch: int, expand: int, stride: int) -> str:
    """1x1 expand Conv+BN+ReLU6 (omitted when ``expand == 1``) → 3x3 depthwise Conv+BN+ReLU6 →
    1x1 linear project Conv+BN (+ residual Add when stride 1 and the widths match)."""
    hidden = in_ch * expand
    y = x
    if expand != 1:
        y = _conv_bn_relu6(g, y, in_ch, hidden, 1, index="_expand")
    y = _conv_bn_relu6(g, y, hidden, hidden, 3, stride=stride, group=hidden, index="_dw")
    residual = stride == 1 and in_ch == out_ch
    # A residual branch's last BN starts small (the zero-init-residual trick): the sum stays near the
    # identity's scale over the repeated blocks instead of growing block after block.
    y = _conv_bn_relu6(g, y, hidden, out_ch, 1, relu6=False, gamma_scale=0.5 if residual else 1.0, index="_project")
    return g.op("Add", [y, x], name="residual") if residual else y


def build_mobilenet_v2_like(
    *, seed: int = 0, width_mult: float = 0.5, input_size: int = 32, num_classes: int = 10, last_channels: int = 1280,
    batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A MobileNetV2-like classifier (inverted residuals, depthwise 3x3 convs, ReLU6 as Clip).

    Structure: input ``input`` float32 [batch, 3, input_size, input_size]; stem 3x3 Conv(stride 2)
    +BN+ReLU6 to 32·``width_mult`` channels; the 17 inverted-residual blocks of MobileNetV2's table
    (expansion 1 then 6; widths 16/24/32/64/96/160/320 · ``width_mult``, rounded to multiples of 8;
    strides 1/2/2/2/1/2/1; residual Add where stride 1 and the widths match: 10 of them); 1x1
    Conv+BN+ReLU6 to ``last_channels`` (scaled only when ``width_mult`` > 1, as torchvision does);
    GlobalAveragePool, Flatten, Gemm → ``logits`` [batch, num_classes]. ``input_size`` must be a
    multiple of 32. Realistic benchmark sizes: ``input_size=128`` or ``224``.

    Failure class: depthwise convs whose per-channel weight ranges differ widely (per-tensor weights
    lose the small channels) and ReLU6-bounded activations next to unbounded linear bottlenecks.
    """
    check_opset(opset, 13, "build_mobilenet_v2_like")
    require(width_mult > 0 and num_classes >= 1 and last_channels >= 1,
            "build_mobilenet_v2_like: width_mult > 0, num_classes >= 1 and last_channels >= 1")
    require(input_size >= 32 and input_size % 32 == 0,
            f"build_mobilenet_v2_like: input_size must be a multiple of 32, got {input_size}")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])
    in_ch = _make_divisible(32 * width_mult)
    with g.scope("stem"):
        x = _conv_bn_relu6(g, x, 3, in_ch, 3, stride=2)
    index = 0
    for expand, channels, repeats, first_stride in _BLOCKS:
        out_ch = _make_divisible(channels * width_mult)
        for r in range(repeats):
            index += 1
            with g.scope(f"block{index:02d}"):
                x = _inverted_residual(g, x, in_ch, out_ch, expand, first_stride if r == 0 else 1)
            in_ch = out_ch
    last = _make_divisible(last_channels * max(1.0, width_mult))
    with g.scope("head/last"):
        x = _conv_bn_relu6(g, x, in_ch, last, 1)
    with g.scope("head"):
        y = g.op("GlobalAveragePool", [x], name="gap")
        y = g.op("Flatten", [y], name="flatten", axis=1)
        y = gemm(g, y, last, num_classes, name="fc", out="logits")
    g.output(y, "logits", [batch, num_classes])
    return g.model("mobilenet_v2_like", doc="onnxq.models.build_mobilenet_v2_like")

