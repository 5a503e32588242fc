"""Convolutional classifiers: a small ResNet-like CNN, a very deep stack of it, a MobileNetV3-like net.

These are the bread-and-butter targets of BN folding, Conv quantization (per-channel weights,
depthwise convolutions with few input channels per group) and graph-scaling benchmarks.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto

from ._common import DEFAULT_OPSET, Dim, GraphBuilder, check_opset, require
from ._layers import conv, conv_bn_act, gemm, residual_block

__all__ = [
    "DEEP_CNN_FIXED_NODES",
    "DEEP_CNN_NODES_PER_BLOCK",
    "build_cnn",
    "build_deep_cnn",
    "build_mobilenet_v3_like",
    "deep_cnn_blocks_for",
]

DEEP_CNN_NODES_PER_BLOCK = 7
"""Nodes in one residual block of :func:`build_deep_cnn` (Conv, BN, Relu, Conv, BN, Add, Relu)."""

DEEP_CNN_FIXED_NODES = 6
"""Nodes of :func:`build_deep_cnn` outside the blocks (stem Conv/BN/Relu, GAP, Flatten, Gemm)."""


def _classifier_tail(g: GraphBuilder, x: str, channels: int, num_classes: int, batch: Dim) -> str:
    """GlobalAveragePool → Flatten → Gemm(transB=1) → graph output ``logits`` [batch, num_classes]."""
    with g.scope("head"):
        y = g.op("GlobalAveragePool", [x], name="gap")
        y = g.op("Flatten", [y], name="flatten", axis=1)
        y = gemm(g, y, channels, num_classes, name="fc", out="logits")
    return g.output(y, "logits", [batch, num_classes])


def build_cnn(
    *, seed: int = 0, width: int = 16, blocks: int = 2, input_size: int = 32, num_classes: int = 10,
    batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A small ResNet-style image classifier (the baseline for BN folding and Conv quantization).

    Structure: input ``input`` float32 [batch, 3, input_size, input_size]; stem Conv+BN+Relu; stage 1
    with ``blocks`` residual blocks at ``width`` channels; a stride-2 Conv+BN+Relu to ``2*width``;
    stage 2 with ``blocks`` residual blocks; a depthwise 3x3 Conv (group = channels)+BN+Relu; MaxPool
    2x2; GlobalAveragePool; Flatten; Gemm(transB=1) → ``logits`` [batch, num_classes].
    Node count: 13 + 14 * blocks. Realistic benchmark size: ``width=64, blocks=3, input_size=224``.

    Failure class: the depthwise Conv has one input channel per group, where per-tensor weight
    quantization loses most accuracy; BN statistics are non-trivial so a wrong fold changes outputs.
    """
    check_opset(opset, 13, "build_cnn")
    require(width >= 1 and blocks >= 0 and num_classes >= 1, "build_cnn: width, num_classes >= 1, blocks >= 0")
    require(input_size >= 4 and input_size % 4 == 0, f"build_cnn: input_size must be a multiple of 4, got {input_size}")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])
    with g.scope("stem"):
        x = conv_bn_act(g, x, 3, width, 3)
    for i in range(blocks):
        with g.scope(f"stage1/block{i + 1}"):
            x = residual_block(g, x, width)
    with g.scope("stage2/downsample"):
        x = conv_bn_act(g, x, width, 2 * width, 3, stride=2)
    for i in range(blocks):
        with g.scope(f"stage2/block{i + 1}"):
            x = residual_block(g, x, 2 * width)
    with g.scope("head/depthwise"):
        x = conv_bn_act(g, x, 2 * width, 2 * width, 3, group=2 * width)
    x = g.op("MaxPool", [x], name="head/maxpool", kernel_shape=[2, 2], strides=[2, 2])
    _classifier_tail(g, x, 2 * width, num_classes, batch)
    return g.model("cnn", doc="onnxq.models.build_cnn")


def deep_cnn_blocks_for(nodes: int) -> int:
    """Number of ``blocks`` for which :func:`build_deep_cnn` has about ``nodes`` nodes (at least 1)."""
    return max(1, round((nodes - DEEP_CNN_FIXED_NODES) / DEEP_CNN_NODES_PER_BLOCK))


def build_deep_cnn(
    *, seed: int = 0, blocks: int = 4, channels: int = 8, input_size: int = 8, num_classes: int = 10,
    batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A very deep stack of ResNet basic blocks, for scaling benchmarks of graph passes.

    Structure: stem Conv+BN+Relu (3 → ``channels``), ``blocks`` residual blocks of 7 nodes each,
    GlobalAveragePool, Flatten, Gemm → ``logits``. Node count is exactly
    ``DEEP_CNN_FIXED_NODES + DEEP_CNN_NODES_PER_BLOCK * blocks`` (6 + 7 * blocks); use
    :func:`deep_cnn_blocks_for` to target a count — ``blocks=1428`` gives 10,002 nodes. Channels and
    spatial size stay small (8 and 8x8) so even that depth runs in well under a second.

    The second BN of every block has gamma scaled by 1/sqrt(blocks) (the "zero-init residual"
    idea), otherwise activations grow with depth and overflow to inf past a few hundred blocks.

    Failure class: passes that are quadratic in the node count (rescanning consumers, re-running
    toposort or the checker per rewrite) become unusable on graphs of this size.
    """
    check_opset(opset, 13, "build_deep_cnn")
    require(blocks >= 1 and channels >= 1 and input_size >= 1, "build_deep_cnn: blocks, channels, input_size >= 1")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])
    with g.scope("stem"):
        x = conv_bn_act(g, x, 3, channels, 3)
    branch_gamma = 1.0 / math.sqrt(blocks)
    digits = len(str(blocks))
    for i in range(blocks):
        with g.scope(f"block{i + 1:0{digits}d}"):
            x = residual_block(g, x, channels, branch_gamma=branch_gamma)
    _classifier_tail(g, x, channels, num_classes, batch)
    return g.model("deep_cnn", doc="onnxq.models.build_deep_cnn")


def _make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, never below 90% of ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _squeeze_excite(g: GraphBuilder, x: str, channels: int) -> str:
    """SE: GAP → 1x1 Conv → Relu → 1x1 Conv → HardSigmoid(1/6, 0.5) → Mul with the feature map."""
    squeeze = _make_divisible(channels / 4)
    with g.scope("se"):
        s = g.op("GlobalAveragePool", [x], name="gap")
        s = g.op("Relu", [conv(g, s, channels, squeeze, 1, name="fc1")], name="relu")
        s = conv(g, s, squeeze, channels, 1, name="fc2")
        # torch's hardsigmoid is relu6(x + 3) / 6, i.e. alpha = 1/6 (ONNX's default alpha is 0.2).
        s = g.op("HardSigmoid", [s], name="hardsigmoid", alpha=1.0 / 6.0, beta=0.5)
        return g.op("Mul", [x, s], name="scale")


def _inverted_residual(g: GraphBuilder, x: str, in_ch: int, cfg: tuple[int, int, int, bool, str, int]) -> str:
    """MobileNetV3 block: [1x1 expand] → depthwise kxk → [SE] → 1x1 project (+ residual Add)."""
    kernel, exp, out, use_se, act, stride = cfg
    y = x
    if exp != in_ch:  # MobileNetV3 omits the expand conv when it would not change the width
        y = conv_bn_act(g, y, in_ch, exp, 1, act=act, index="_expand")
    y = conv_bn_act(g, y, exp, exp, kernel, stride=stride, group=exp, act=act, index="_dw")
    if use_se:
        y = _squeeze_excite(g, y, exp)
    y = conv_bn_act(g, y, exp, out, 1, act=None, index="_project")
    if stride == 1 and in_ch == out:
        y = g.op("Add", [y, x], name="residual")
    return y


def build_mobilenet_v3_like(
    *, seed: int = 0, width: int = 16, input_size: int = 64, num_classes: int = 10, batch: Dim = "N",
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A MobileNetV3-Small-like classifier (HardSwish, squeeze-excite, depthwise convs).

    Structure: stem Conv(stride 2)+BN+HardSwish to ``width`` channels; five inverted-residual blocks
    (1x1 expand Conv+BN+act, depthwise kxk Conv+BN+act, optional squeeze-excite GAP → 1x1 Conv → Relu
    → 1x1 Conv → HardSigmoid → Mul, 1x1 project Conv+BN, residual Add when stride 1 and widths match);
    1x1 Conv+BN+HardSwish to 6x the last width; GlobalAveragePool, Flatten, Gemm → ``logits``.
    Channel widths scale with ``width`` as in MobileNetV3-Small (16 → 72/24/88/24/96/40/240/40).
    ``input_size`` must be a multiple of 16. Realistic benchmark size: ``input_size=224``.

    Failure class: depthwise convs, HardSwish/HardSigmoid (no QLinear kernels in some runtimes) and
    the SE Mul, whose two inputs have very different ranges, are where mobile-net quantization breaks.
    """
    check_opset(opset, 14, "build_mobilenet_v3_like")  # HardSwish appeared in opset 14
    require(width >= 1 and num_classes >= 1, "build_mobilenet_v3_like: width and num_classes >= 1")
    require(input_size >= 16 and input_size % 16 == 0,
            f"build_mobilenet_v3_like: input_size must be a multiple of 16, got {input_size}")
    c = lambda factor: _make_divisible(factor * width)  # noqa: E731 - channel rule local to this net
    cfgs = [  # kernel, expanded, out, SE, activation, stride
        (3, c(1), c(1), True, "relu", 2),
        (3, c(4.5), c(1.5), False, "relu", 2),
        (3, c(5.5), c(1.5), False, "relu", 1),
        (5, c(6), c(2.5), True, "hardswish", 2),
        (5, c(15), c(2.5), True, "hardswish", 1),
    ]
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])
    with g.scope("stem"):
        x = conv_bn_act(g, x, 3, c(1), 3, stride=2, act="hardswish")
    in_ch = c(1)
    for i, cfg in enumerate(cfgs):
        with g.scope(f"block{i + 1}"):
            x = _inverted_residual(g, x, in_ch, cfg)
        in_ch = cfg[2]
    with g.scope("head/last"):
        x = conv_bn_act(g, x, in_ch, 6 * in_ch, 1, act="hardswish")
    _classifier_tail(g, x, 6 * in_ch, num_classes, batch)
    return g.model("mobilenet_v3_like", doc="onnxq.models.build_mobilenet_v3_like")
