"""Layer helpers shared by the builders: each appends the nodes of one familiar layer to a builder.

Every helper takes the :class:`GraphBuilder`, the input tensor name and the sizes, and returns the
output tensor name. The node patterns copy what PyTorch's exporter emits (Conv with bias, BN in
inference form, MatMul + Add for ``nn.Linear`` on 3-D inputs, Gemm with ``transB=1`` on 2-D ones),
because those are the patterns onnxq's passes must recognise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto

from ._common import Dim, GraphBuilder, bn_params, he_normal

__all__ = [
    "activation",
    "batch_norm",
    "conv",
    "conv_bn_act",
    "decomposed_layer_norm",
    "gelu_erf",
    "gemm",
    "layer_norm",
    "linear",
    "lstm",
    "residual_block",
]


def conv(
    g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: int | tuple[int, int], *,
    stride: int | tuple[int, int] = 1, group: int = 1, bias: bool = True, pad: bool = True,
    name: str = "conv",
) -> str:
    """Conv with He-normal weights; ``pad=True`` keeps the spatial size at stride 1 ("same")."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    fan_in = (in_ch // group) * kh * kw
    w = g.const(f"{name}/weight", he_normal(g.rng, (out_ch, in_ch // group, kh, kw), fan_in))
    inputs = [x, w]
    if bias:
        inputs.append(g.const(f"{name}/bias", (g.rng.standard_normal(out_ch) * 0.01).astype(np.float32)))
    pads = [kh // 2, kw // 2, kh // 2, kw // 2] if pad else [0, 0, 0, 0]
    return g.op("Conv", inputs, name=name, kernel_shape=[kh, kw], strides=[sh, sw], pads=pads,
                group=group, dilations=[1, 1])


def batch_norm(g: GraphBuilder, x: str, channels: int, *, gamma_scale: float = 1.0, name: str = "bn") -> str:
    """Inference-mode BatchNormalization with seeded, non-identity statistics (see ``bn_params``)."""
    scale, bias, mean, var = bn_params(g.rng, channels, gamma_scale=gamma_scale)
    inputs = [x] + [g.const(f"{name}/{k}", v) for k, v in
                    (("scale", scale), ("bias", bias), ("mean", mean), ("var", var))]
    return g.op("BatchNormalization", inputs, name=name, epsilon=1e-5)


def activation(g: GraphBuilder, x: str, kind: str | None, *, name: str | None = None) -> str:
    """Apply ``relu``, ``hardswish``, ``sigmoid`` or nothing (``None``)."""
    if kind is None:
        return x
    op_type = {"relu": "Relu", "hardswish": "HardSwish", "sigmoid": "Sigmoid"}[kind]
    return g.op(op_type, [x], name=name or kind)


def conv_bn_act(
    g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: int | tuple[int, int], *,
    stride: int | tuple[int, int] = 1, group: int = 1, act: str | None = "relu", pad: bool = True,
    gamma_scale: float = 1.0, index: str = "",
) -> str:
    """Conv (no bias, as before BN in torchvision) + BatchNormalization + activation.

    Nodes are named ``conv<index>``, ``bn<index>``, ``<act><index>`` inside the current scope.
    """
    y = conv(g, x, in_ch, out_ch, kernel, stride=stride, group=group, bias=False, pad=pad,
             name=f"conv{index}")
    y = batch_norm(g, y, out_ch, gamma_scale=gamma_scale, name=f"bn{index}")
    return activation(g, y, act, name=f"{act}{index}" if act else None)


def residual_block(g: GraphBuilder, x: str, channels: int, *, branch_gamma: float = 1.0) -> str:
    """ResNet basic block: Conv+BN+Relu, Conv+BN, Add(identity), Relu — exactly 7 nodes.

    ``branch_gamma`` scales the second BN's gamma; deep stacks pass a small value so the residual
    sum does not grow without bound over thousands of blocks.
    """
    y = conv_bn_act(g, x, channels, channels, 3, index="1")
    y = conv_bn_act(g, y, channels, channels, 3, act=None, gamma_scale=branch_gamma, index="2")
    y = g.op("Add", [y, x], name="add")
    return g.op("Relu", [y], name="relu")


def linear(g: GraphBuilder, x: str, in_f: int, out_f: int, *, std: float | None = None,
           bias: np.ndarray | None = None, name: str = "linear", out: str | None = None) -> str:
    """``nn.Linear`` as exported for N-D inputs: MatMul with a [in, out] weight, then Add bias.

    This unfused pair is what a MatMul+Add→Gemm fusion pass looks for. ``std`` overrides He init
    (BERT uses 0.02); ``bias`` overrides the small random bias.
    """
    w = (g.rng.standard_normal((in_f, out_f)) * std).astype(np.float32) if std is not None \
        else he_normal(g.rng, (in_f, out_f), in_f)
    b = bias if bias is not None else (g.rng.standard_normal(out_f) * 0.01).astype(np.float32)
    y = g.op("MatMul", [x, g.const(f"{name}/weight", w)], name=f"{name}/matmul")
    return g.op("Add", [y, g.const(f"{name}/bias", b)], name=f"{name}/add", out=out)


def gemm(g: GraphBuilder, x: str, in_f: int, out_f: int, *, name: str = "gemm", out: str | None = None) -> str:
    """``nn.Linear`` on a 2-D input as exported: Gemm with a [out, in] weight and ``transB=1``."""
    w = g.const(f"{name}/weight", he_normal(g.rng, (out_f, in_f), in_f))
    b = g.const(f"{name}/bias", (g.rng.standard_normal(out_f) * 0.01).astype(np.float32))
    return g.op("Gemm", [x, w, b], name=name, out=out, alpha=1.0, beta=1.0, transB=1)


def _ln_params(g: GraphBuilder, features: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-trivial LayerNorm gamma/beta (trained models drift away from 1 and 0)."""
    gamma = (1.0 + g.rng.standard_normal(features) * 0.1).astype(np.float32)
    beta = (g.rng.standard_normal(features) * 0.05).astype(np.float32)
    return gamma, beta


def layer_norm(g: GraphBuilder, x: str, features: int, *, epsilon: float = 1e-12,
               name: str = "layernorm", out: str | None = None) -> str:
    """The opset-17 LayerNormalization op over the last axis (what torch exports at opset >= 17)."""
    gamma, beta = _ln_params(g, features)
    return g.op("LayerNormalization", [x, g.const(f"{name}/scale", gamma), g.const(f"{name}/bias", beta)],
                name=name, out=out, axis=-1, epsilon=epsilon)


def decomposed_layer_norm(g: GraphBuilder, x: str, features: int, *, epsilon: float = 1e-5,
                          name: str = "layernorm") -> str:
    """LayerNorm spelled out the way torch exports it below opset 17 (nine nodes).

    ``(x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta`` as ReduceMean, Sub, Pow, ReduceMean,
    Add, Sqrt, Div, Mul, Add.
    """
    gamma, beta = _ln_params(g, features)
    with g.scope(name):
        mean = g.reduce("ReduceMean", x, [-1], keepdims=True, name="mean")
        d = g.op("Sub", [x, mean], name="sub")
        sq = g.op("Pow", [d, g.scalar("two", 2.0)], name="pow")
        var = g.reduce("ReduceMean", sq, [-1], keepdims=True, name="var")
        std = g.op("Sqrt", [g.op("Add", [var, g.scalar("eps", epsilon)], name="add_eps")], name="sqrt")
        y = g.op("Div", [d, std], name="div")
        y = g.op("Mul", [y, g.const("gamma", gamma)], name="mul_gamma")
        return g.op("Add", [y, g.const("beta", beta)], name="add_beta")


def gelu_erf(g: GraphBuilder, x: str, *, name: str = "gelu") -> str:
    """Exact GELU as torch exports it: ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (Div, Erf, Add, Mul, Mul)."""
    with g.scope(name):
        e = g.op("Erf", [g.op("Div", [x, g.scalar("sqrt2", float(np.sqrt(2.0)))], name="div")], name="erf")
        e = g.op("Add", [e, g.scalar("one", 1.0)], name="add")
        y = g.op("Mul", [x, e], name="mul")
        return g.op("Mul", [y, g.scalar("half", 0.5)], name="mul_half")


def lstm(g: GraphBuilder, x: str, input_size: int, hidden: int, *, bidirectional: bool,
         want_y: bool, name: str = "lstm") -> tuple[str, str]:
    """ONNX LSTM with W/R/B initializers; returns ``(Y, Y_h)`` names ("" for an output not wanted).

    Weights follow PyTorch's LSTM init, uniform in ±1/sqrt(hidden); gate order is ONNX's i, o, f, c.
    Leaving ``Y`` unnamed reproduces exporters' empty optional outputs, which IR code must tolerate.
    """
    dirs = 2 if bidirectional else 1
    k = 1.0 / np.sqrt(hidden)
    w = g.rng.uniform(-k, k, (dirs, 4 * hidden, input_size)).astype(np.float32)
    r = g.rng.uniform(-k, k, (dirs, 4 * hidden, hidden)).astype(np.float32)
    b = g.rng.uniform(-k, k, (dirs, 8 * hidden)).astype(np.float32)
    inputs = [x, g.const(f"{name}/W", w), g.const(f"{name}/R", r), g.const(f"{name}/B", b)]
    y, y_h = g.op_multi("LSTM", inputs, 2, name=name, suffixes=["Y" if want_y else "", "Y_h"],
                        hidden_size=hidden, direction="bidirectional" if bidirectional else "forward")
    return y, y_h


def text_line_lstm(
    g: GraphBuilder, height: int, input_width: Dim, batch: Dim, channels: list[int], stage: Callable[[GraphBuilder, str, int, int, int], str],
    collapse: Callable[[GraphBuilder, str, int, int, tuple[int, int]], str], hidden: int, *, bidirectional: bool,
) -> str:
    """The CRNN front of a text-line recogniser: graph input ``input`` float32 [batch, 1, height,
    input_width] (a grey text line) → LSTM ``Y`` [T = input_width/4, dirs, batch, hidden].

    Three ``stage`` Conv blocks ``(g, x, in_ch, out_ch, kernel) -> y`` (kernel 3, ``channels[i] →
    channels[i + 1]``), each followed by a MaxPool 2x2, 2x2, (2, 1); ``collapse`` with a kernel
    (height/8, 1) spanning the remaining height (the block must not pad); Squeeze → Transpose to
    [T, N, C]; an LSTM of ``hidden`` units.
    """
    x = g.input("input", TensorProto.FLOAT, [batch, 1, height, input_width])
    for i, pool in enumerate([(2, 2), (2, 2), (2, 1)]):
        with g.scope(f"features/stage{i + 1}"):
            x = stage(g, x, channels[i], channels[i + 1], 3)
            x = g.op("MaxPool", [x], name="maxpool", kernel_shape=list(pool), strides=list(pool))
    c = channels[-1]
    with g.scope("features/collapse"):  # height → 1
        x = collapse(g, x, c, c, (height // 8, 1))
    with g.scope("sequence"):
        x = g.op("Transpose", [g.squeeze(x, [2])], name="transpose", perm=[2, 0, 1])  # [N, C, T] → [T, N, C]
    return lstm(g, x, c, hidden, bidirectional=bidirectional, want_y=True, name="sequence/lstm")[0]
