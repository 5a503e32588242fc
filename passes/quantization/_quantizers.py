"""Per-op quantizers: op type → a function describing how a node is quantized (or why not).

A quantizer never edits the graph. It returns a :class:`NodeQuant` (roles of inputs/outputs) or
a string: the reason the node stays float. Registering a new op is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxq import ir
from onnxq.ir import Node

from ._roles import Act, Bias, Fixed, NodeQuant, OptionalAct, Role, Shared, Weight

__all__ = ["QUANTIZERS", "quantizer", "describe_node", "saturating_interval", "ANCHOR_OPS", "ABSORBABLE_ACTIVATIONS"]

Quantizer = Callable[[Node], "NodeQuant | str"]
QUANTIZERS: dict[str, Quantizer] = {}

#: Compute ops whose int8 kernels carry the speedup; everything else is glue around them.
ANCHOR_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
#: Activations onnxruntime folds into the preceding op's requantization (Relu/Clip + Q fusion).
ABSORBABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})


def quantizer(*ops: str) -> Callable[[Quantizer], Quantizer]:
    """Register a quantizer for ``ops``."""

    def deco(fn: Quantizer) -> Quantizer:
        for op in ops:
            QUANTIZERS[op] = fn
        return fn

    return deco


def describe_node(node: Node) -> NodeQuant | str:
    """The quantizer's description of ``node``, or the reason it stays float."""
    if node.domain not in (None, "", "ai.onnx"):
        return f"custom-domain op {node.domain}.{node.op}"
    fn = QUANTIZERS.get(node.op)
    if fn is None:
        return f"no quantizer for {node.op}"
    return fn(node)


def _is_float_activation(t: ir.Tensor) -> bool:
    if ir.is_constant(t) or t.dtype is None:
        return False
    try:
        return np.dtype(t.dtype).kind == "f"
    except TypeError:
        return False


def _float_weight(t: ir.Tensor) -> bool:
    v = ir.constant_array(t)
    return v is not None and v.dtype.kind == "f" and v.size > 0


def _rank(t: ir.Tensor) -> int | None:
    return len(t.shape) if isinstance(t.shape, (list, tuple)) else None


def _with_weight_and_bias(node: Node, weight_axis: int) -> NodeQuant | str:
    """Conv / ConvTranspose: activation in and out, the weight per channel along ``weight_axis`` (its
    output channels), the optional bias int32 (scale of input 0 times that of the weight)."""
    inputs: dict[int, Role] = {0: Act(), 1: Weight(axis=weight_axis)}
    if len(node.inputs) > 2 and node.inputs[2].name:
        if not _float_weight(node.inputs[2]):
            return "bias is not a float constant"
        inputs[2] = Bias(0, 1)
    return NodeQuant(inputs, {0: Act()}, anchor=True)


@quantizer("Conv")
def _conv(node: Node) -> NodeQuant | str:
    if len(node.inputs) < 2 or not _float_weight(node.inputs[1]):
        return "weight is not a float constant"
    if not _is_float_activation(node.inputs[0]):
        return "input is not a float activation"
    return _with_weight_and_bias(node, weight_axis=0)


@quantizer("ConvTranspose")
def _conv_transpose(node: Node) -> NodeQuant | str:
    if len(node.inputs) < 2 or not _float_weight(node.inputs[1]):
        return "weight is not a float constant"
    if int(node.attrs.get("group", 1)) != 1:
        return "grouped ConvTranspose (per-channel axis would span groups)"
    return _with_weight_and_bias(node, weight_axis=1)


@quantizer("MatMul")
def _matmul(node: Node) -> NodeQuant | str:
    a, b = node.inputs[0], node.inputs[1]
    if not _is_float_activation(a):
        return "input is not a float activation"
    if _float_weight(b):
        rank = ir.constant_array(b).ndim  # type: ignore[union-attr]
        if rank < 2:
            return "1-D weight"
        # Per column only for a 2-D B: onnxruntime fuses DQ → MatMul into MatMulIntegerToFloat,
        # whose B zero point must then be a scalar or one per column of a 2-D B; the 1-D per-axis
        # zero point of a batched [B, K, N] weight makes it fail at run time ("b zero point is
        # not valid"), so batched weights go per tensor (fuzz regression
        # test_batched_matmul_weight_quantizes_per_tensor).
        return NodeQuant({0: Act(), 1: Weight(axis=1 if rank == 2 else None)}, {0: OptionalAct()}, anchor=True)
    if _is_float_activation(b):
        return "activation × activation MatMul"
    return "weight is not a float constant"


@quantizer("Gemm")
def _gemm(node: Node) -> NodeQuant | str:
    if node.attrs.get("transA", 0):
        return "transA=1"
    if not _float_weight(node.inputs[1]):
        return "weight is not a float constant"
    w = ir.constant_array(node.inputs[1])
    if w.ndim != 2:  # type: ignore[union-attr]
        return "weight is not 2-D"
    axis = 0 if node.attrs.get("transB", 0) else 1
    inputs: dict[int, object] = {0: Act(), 1: Weight(axis=axis)}
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = ir.constant_array(node.inputs[2])
        n_out = w.shape[axis]  # type: ignore[union-attr]
        if c is None or c.dtype.kind != "f" or c.size != n_out or float(node.attrs.get("beta", 1.0)) != 1.0:
            return "C is not a per-output float bias with beta=1"
        inputs[2] = Bias(0, 1)
    if float(node.attrs.get("alpha", 1.0)) != 1.0:
        return "alpha != 1"
    return NodeQuant(inputs, {0: OptionalAct()}, anchor=True)  # type: ignore[arg-type]


def _scalar_constant(t: ir.Tensor) -> bool:
    v = ir.constant_array(t)
    return v is not None and v.size == 1 and v.dtype.kind == "f" and bool(np.isfinite(v).all())


def _binary_elementwise(node: Node) -> NodeQuant | str:
    a, b = node.inputs[0], node.inputs[1]
    for const, act in ((a, b), (b, a)):
        if _scalar_constant(const) and _is_float_activation(act):
            # A scalar scale or offset between int8 convolutions (PP-LCNetV3's learnable affine
            # before a padded depthwise conv): QLinearMul/QLinearAdd keep the tensor int8, where a
            # float island costs a DQ, two float passes and a Q (PP-OCRv4 det: 1.64x -> 1.76x).
            return NodeQuant({0: Act(), 1: Act()}, {0: Act()})
    if ir.is_constant(a) or ir.is_constant(b):
        # Per-channel constants (or several constants) lose most of their precision on one
        # activation scale; they stay float (fold-affine moves most into a neighbouring conv).
        return "arithmetic with a per-element constant (one int8 scale would crush it)"
    if not (_is_float_activation(a) and _is_float_activation(b)):
        return "operand is not a float activation"
    return NodeQuant({0: Act(), 1: Act()}, {0: Act()})


quantizer("Add", "Mul")(_binary_elementwise)


@quantizer("Concat")
def _concat(node: Node) -> NodeQuant | str:
    if not all(_is_float_activation(t) or _float_weight(t) for t in node.inputs):
        return "non-float operand"
    return NodeQuant({i: Shared(0) if i else Act() for i in range(len(node.inputs))}, {0: Shared(0)})


def _shares_input(node: Node) -> NodeQuant | str:
    if not node.inputs or not _is_float_activation(node.inputs[0]):
        return "input is not a float activation"
    return NodeQuant({0: Act()}, {i: Shared(0) for i in range(len(node.outputs))})


def _own_range(node: Node) -> NodeQuant | str:
    if not node.inputs or not _is_float_activation(node.inputs[0]):
        return "input is not a float activation"
    return NodeQuant({0: Act()}, {0: Act()})


quantizer("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Resize", "Pad")(_shares_input)
quantizer("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "AveragePool", "GlobalAveragePool", "ReduceMean")(_own_range)


@quantizer("MaxPool")
def _maxpool(node: Node) -> NodeQuant | str:
    if len([t for t in node.outputs if t.name]) > 1:
        return "MaxPool with indices output"
    return _shares_input(node)


@quantizer("Gather")
def _gather(node: Node) -> NodeQuant | str:
    data = node.inputs[0]
    if not _is_float_activation(data):
        return "data is not a float activation (embedding tables are handled by weight-only quantization)"
    return NodeQuant({0: Act()}, {0: Shared(0)})


@quantizer("Sigmoid")
def _sigmoid(node: Node) -> NodeQuant | str:
    res = _own_range(node)
    return res if isinstance(res, str) else NodeQuant({0: Act()}, {0: Fixed(0.0, 1.0)})


@quantizer("Softmax")
def _softmax(node: Node) -> NodeQuant | str:
    res = _own_range(node)
    return res if isinstance(res, str) else NodeQuant({0: Act()}, {0: Fixed(0.0, 1.0)})


@quantizer("Where")
def _where(node: Node) -> NodeQuant | str:
    if len(node.inputs) != 3 or not all(_is_float_activation(t) or _float_weight(t) for t in node.inputs[1:]):
        return "value operands are not float"
    return NodeQuant({1: Act(), 2: Act()}, {0: Act()})


def _clip_interval(node: Node) -> tuple[float, float] | None:
    lo = node.attrs.get("min")
    hi = node.attrs.get("max")
    if lo is None and len(node.inputs) > 1 and node.inputs[1].name:
        v = ir.constant_array(node.inputs[1])
        lo = None if v is None else float(v.reshape(-1)[0])
    if hi is None and len(node.inputs) > 2 and node.inputs[2].name:
        v = ir.constant_array(node.inputs[2])
        hi = None if v is None else float(v.reshape(-1)[0])
    return (-np.inf if lo is None else float(lo), np.inf if hi is None else float(hi))


def _hardsigmoid_interval(node: Node) -> tuple[float, float] | None:
    alpha = float(node.attrs.get("alpha", 0.2))
    beta = float(node.attrs.get("beta", 0.5))
    if alpha <= 0:
        return None
    return (-beta / alpha, (1 - beta) / alpha)


def _gated_mul_interval(node: Node) -> tuple[float, float] | None:
    """``x · HardSigmoid(x)`` (HardSwish written out) is 0 for every x below the gate's lower bound."""
    if len(node.inputs) != 2:
        return None
    x, gate = node.inputs
    producer = ir.producer(gate)
    if producer is None or producer.op != "HardSigmoid" or producer.inputs[0] is not x:
        return None
    interval = _hardsigmoid_interval(producer)
    return None if interval is None else (interval[0], np.inf)


#: For ops that map every input below / above a bound to the same value, the input interval that
#: matters: quantizing their input beyond it loses nothing (HardSwish(x) = 0 for all x <= -3).
SATURATING_INPUT: dict[str, Callable[[Node], tuple[float, float] | None]] = {
    "Relu": lambda n: (0.0, np.inf),
    "HardSwish": lambda n: (-3.0, np.inf),
    "Clip": _clip_interval,
    "HardSigmoid": _hardsigmoid_interval,
    "Mul": _gated_mul_interval,
}


def saturating_interval(node: Node) -> tuple[float, float] | None:
    """The input interval beyond which ``node``'s output saturates (None if it never does)."""
    fn = SATURATING_INPUT.get(node.op)
    return fn(node) if fn is not None and not (node.domain or "") else None
