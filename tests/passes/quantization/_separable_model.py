"""Models whose BatchNormalization statistics look trained, for the compensation passes.

Random builders have per-channel weight ranges within a factor of ~3: per-tensor quantization of
their depthwise convs is harmless and cross-layer equalization has nothing to fix. Trained
MobileNets are different (Nagel et al. 2019, fig. 2: per-channel ranges of a depthwise layer span
two orders of magnitude), because BatchNormalization normalizes each channel by its own running
std. :func:`trained_like_batchnorm` reproduces that mechanism, not its numbers:

- BN ``gamma`` before each depthwise conv is log-uniform over ``[10^-spread, 1]`` (some channels
  nearly switched off, as weight decay leaves them) and its ``beta`` positive (channels mostly
  active); other BNs get ``gamma ~ U(0.5, 1.5)``, ``beta ~ N(0, 0.1)``;
- every BN's running mean/var are *measured* on seeded random inputs, in graph order
  (data-dependent init), so the depthwise BN divides channel ``c`` by a std proportional to
  ``gamma_prev[c]`` and the folded depthwise filters span the same two orders of magnitude.

:func:`build_separable_cnn`: stem Conv 3x3 s2 + BN + Relu → ``blocks`` × [depthwise 3x3 + BN + Relu
→ pointwise 1x1 + BN + Relu] → GlobalAveragePool → Flatten → Gemm ``logits``, with trained-like
statistics (a candidate for ``models/``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models._common import GraphBuilder, bn_params, he_normal
from tests.helpers import session

__all__ = ["build_separable_cnn", "image_samples", "trained_like_batchnorm"]


def image_samples(n: int, seed: int, size: int = 32, batch: int = 1) -> list[dict[str, np.ndarray]]:
    """``n`` seeded standard-normal ``input`` feeds of shape ``[batch, 3, size, size]``."""
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((batch, 3, size, size)).astype(np.float32)} for _ in range(n)]


def _feeds_depthwise(model: onnx.ModelProto, bn: onnx.NodeProto, channels: int) -> bool:
    """Whether ``bn``'s output reaches a depthwise Conv directly or through one activation."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    frontier = list(readers.get(bn.output[0], []))
    frontier += [r for n in frontier if n.op_type in ("Relu", "HardSwish", "Clip") for r in readers.get(n.output[0], [])]
    group = lambda n: next((a.i for a in n.attribute if a.name == "group"), 1)  # noqa: E731
    return any(n.op_type == "Conv" and group(n) == channels > 1 for n in frontier)


def _channel_moments(model: onnx.ModelProto, tensor: str, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    y = session(probe).run(None, feed)[0].astype(np.float64)
    return y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))


def trained_like_batchnorm(model: onnx.ModelProto, *, seed: int = 0, spread: float = 2.0, size: int = 32, batch: int = 16) -> onnx.ModelProto:
    """A copy of ``model`` with trained-like BatchNormalization parameters (see the module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    feed = image_samples(1, seed + 7919, size, batch)[0]
    inits = {t.name: t for t in out.graph.initializer}
    for bn in [n for n in out.graph.node if n.op_type == "BatchNormalization"]:
        channels = numpy_helper.to_array(inits[bn.input[1]]).size
        if _feeds_depthwise(out, bn, channels):
            gamma, beta = 10.0 ** rng.uniform(-spread, 0.0, channels), rng.uniform(0.0, 0.5, channels)
        else:
            gamma, beta = rng.uniform(0.5, 1.5, channels), rng.normal(0.0, 0.1, channels)
        mean, var = _channel_moments(out, bn.input[0], feed)
        for name, value in zip(bn.input[1:5], (gamma, beta, mean, var)):
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    onnx.checker.check_model(out, full_check=True)
    return out


def _conv_bn_relu(g: GraphBuilder, x: str, cin: int, cout: int, k: int, *, stride: int = 1, group: int = 1, name: str) -> str:
    w = g.const(f"{name}/weight", he_normal(g.rng, (cout, cin // group, k, k), (cin // group) * k * k))
    y = g.op("Conv", [x, w], name=f"{name}/conv", kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
    params = bn_params(g.rng, cout)
    inputs = [y] + [g.const(f"{name}/bn_{key}", v) for key, v in zip(("scale", "bias", "mean", "var"), params)]
    y = g.op("BatchNormalization", inputs, name=f"{name}/bn", epsilon=1e-5)
    return g.op("Relu", [y], name=f"{name}/relu")


def build_separable_cnn(
    *, seed: int = 0, width: int = 16, blocks: int = 3, input_size: int = 32, num_classes: int = 10, spread: float = 2.0
) -> onnx.ModelProto:
    """The depthwise-separable CNN of the module docstring (``spread``: decades of the gamma spread)."""
    g = GraphBuilder(seed, 17)
    x = g.input("input", TensorProto.FLOAT, ["N", 3, input_size, input_size])
    x = _conv_bn_relu(g, x, 3, width, 3, stride=2, name="stem")
    channels = width
    for i in range(blocks):
        out, stride = (channels * 2, 2) if i % 2 == 0 else (channels, 1)
        x = _conv_bn_relu(g, x, channels, channels, 3, stride=stride, group=channels, name=f"block{i + 1}/dw")
        x = _conv_bn_relu(g, x, channels, out, 1, name=f"block{i + 1}/pw")
        channels = out
    y = g.op("GlobalAveragePool", [x], name="head/gap")
    y = g.op("Flatten", [y], name="head/flatten", axis=1)
    fc_w = g.const("head/fc/weight", he_normal(g.rng, (num_classes, channels), channels))
    fc_b = g.const("head/fc/bias", np.zeros(num_classes, np.float32))
    g.op("Gemm", [y, fc_w, fc_b], name="head/fc", out="logits", transB=1)
    g.outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes]))
    model = g.model("separable_cnn", doc="tests: depthwise-separable CNN with trained-like BN statistics")
    return trained_like_batchnorm(model, seed=seed, spread=spread, size=input_size)
