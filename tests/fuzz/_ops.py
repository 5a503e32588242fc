"""The fuzz op catalog: for every op, when it applies, how its parameters are drawn, the shape it
produces and how it is written at the model's opset.

An op is a small class with four methods:

- ``applies(ctx, shape)``: whether it is well-formed on a tensor of ``shape`` (rank, which dims
  must be concrete) at ``ctx.opset``;
- ``draw(draw, ctx, shape) -> params``: plain data (ints, strings, lists, nested op specs), so a
  drawn model prints as a :class:`~tests.fuzz._graphs.ModelSpec` that rebuilds it exactly;
- ``shape(shape, params)``: the output shape (symbolic dims carried through), which the graph
  declares on its outputs so the full checker's strict shape inference verifies this arithmetic;
- ``emit(em, x, shape, params) -> name``: the nodes, in the spelling of ``em.opset``.

With ``ctx.keep`` an op must return its input shape (If branches, Loop bodies, fork sides).
Composite ops (fork, split, If, Loop) draw sub-chains with :func:`draw_chain`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from hypothesis import strategies as st
from onnx import TensorProto, helper

from ._emit import Emitter, Shape, concrete, numel

__all__ = ["Ctx", "Spec", "OPS", "draw_chain", "apply_chain", "chain_shape", "MAX_ELEMENTS"]

Spec = tuple[str, dict[str, Any]]
Draw = Callable[[st.SearchStrategy[Any]], Any]

#: Largest tensor a fuzz graph holds (symbolic dims counted at their feed value).
MAX_ELEMENTS = 10_000
#: Nesting of forks / subgraphs.
MAX_DEPTH = 2
INT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Ctx:
    """What an op may assume while drawing: the opset, whether the shape must be kept, nesting."""

    opset: int
    keep: bool = False
    depth: int = 0
    budget: list[int] | None = None  # nodes left (shared by the whole model)
    boost: tuple[tuple[str, int], ...] = ()  # (op, weight) overriding Op.weight: steer towards some ops
    in_subgraph: bool = False  # inside an If branch / Loop body (no graph outputs from here)
    min_width: int = 1  # narrowest Conv / MatMul / Gemm output drawn (lossy pipelines: no 1-wide layers)

    def inner(self, keep: bool = True, subgraph: bool = False) -> Ctx:
        return replace(self, keep=keep, depth=self.depth + 1, in_subgraph=self.in_subgraph or subgraph)


class Op:
    """Base of catalog entries; see the module docstring."""

    min_opset: ClassVar[int] = 11
    keeps: ClassVar[bool] = False  # can be drawn under ctx.keep (then draw must keep the shape)
    composite: ClassVar[bool] = False
    cost: ClassVar[int] = 1  # nodes, roughly
    weight: ClassVar[int] = 1  # how often it is drawn, relative to the others

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return True

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        return shape

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        raise NotImplementedError


OPS: dict[str, Op] = {}


def _register(name: str) -> Callable[[type[Op]], type[Op]]:
    def deco(cls: type[Op]) -> type[Op]:
        OPS[name] = cls()
        return cls

    return deco


def _axis_ok(shape: Shape, axis: int, low: int = 1) -> bool:
    d = shape[axis]
    return isinstance(d, int) and d >= low


def _broadcast(a: Shape, b: Shape) -> Shape | None:
    """numpy broadcasting of two shapes (symbolic dims broadcast only with themselves or 1)."""
    r = max(len(a), len(b))
    a = (1,) * (r - len(a)) + tuple(a)
    b = (1,) * (r - len(b)) + tuple(b)
    out: list[Any] = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# elementwise


class _Unary(Op):
    keeps = True
    op_type: ClassVar[str] = ""

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        return em.op(self.op_type, x, **p)


@dataclass(frozen=True)
class _TableUnary(_Unary):
    """A unary op from :data:`_UNARY`: its op type, first opset and attribute choices."""

    name: str = ""
    onnx_op: str = ""
    opset: int = 11
    choices: tuple[dict[str, Any], ...] = ({},)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return dict(draw(st.sampled_from(self.choices))) if len(self.choices) > 1 else dict(self.choices[0])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        return em.op(self.onnx_op, x, **p)

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_opset", self.opset)


#: name → (op type, first opset, attribute choices)
_UNARY: dict[str, tuple[str, int, tuple[dict[str, Any], ...]]] = {
    "relu": ("Relu", 11, ({},)),
    "sigmoid": ("Sigmoid", 11, ({},)),
    "tanh": ("Tanh", 11, ({},)),
    "leaky_relu": ("LeakyRelu", 11, tuple({"alpha": a} for a in (0.01, 0.1, 0.3))),
    "hard_sigmoid": ("HardSigmoid", 11, ({}, {"alpha": 1.0 / 6, "beta": 0.5})),
    "hard_swish": ("HardSwish", 14, ({},)),
    "gelu": ("Gelu", 20, ({}, {"approximate": "tanh"})),
    "identity": ("Identity", 11, ({},)),
    "dropout": ("Dropout", 11, ({},)),
}
for _name, (_op, _opset, _choices) in _UNARY.items():
    OPS[_name] = _TableUnary(name=_name, onnx_op=_op, opset=_opset, choices=_choices)


@_register("clip")
class Clip(Op):
    keeps = True

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"range": draw(st.sampled_from([[0.0, 6.0], [-1.0, 1.0], [0.0, None], [None, 0.5]]))}

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        low, high = p["range"]
        return em.clip(x, low, high)


@_register("softmax")
class Softmax(Op):
    """Softmax over the last axis: the same maths before opset 13 (coerced to 2-D at axis r-1)."""

    keeps = True

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 1

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        return em.op("Softmax", x, axis=len(shape) - 1 if em.opset < 13 else -1)


@_register("cast_roundtrip")
class CastRoundtrip(Op):
    """float32 → float16 / double → float32 (exporters' mixed-precision glue); the float16 trip is
    clipped to ±60000 first, as fp16-safe exports do (else the fp32 reference itself holds inf)."""

    keeps = True

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"via": draw(st.sampled_from(["float16", "double"]))}

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        if p["via"] == "float16":
            return em.op("Cast", em.op("Cast", em.clip(x, -60000.0, 60000.0), to=TensorProto.FLOAT16), to=TensorProto.FLOAT)
        return em.op("Cast", em.op("Cast", x, to=TensorProto.DOUBLE), to=TensorProto.FLOAT)


_VALUE_RANGES = {"Add": None, "Sub": None, "Mul": (0.5, 1.5), "Div": (0.5, 2.0), "Max": None, "Min": None}


@_register("binary_const")
class BinaryConst(Op):
    """x ∘ c: c a scalar, a per-last-axis vector, a per-channel [C,1,..] or a full tensor.

    Divisors are ``±[0.5, 2)``, factors ``±[0.5, 1.5)``: never near 0, so int8 stays meaningful.
    """

    weight = 3
    keeps = True

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        forms = ["scalar"] + (["last"] if shape and concrete(shape[-1]) else []) + (["channel"] if len(shape) >= 3 and concrete(shape[1]) else [])
        forms += ["full"]
        op = draw(st.sampled_from(list(_VALUE_RANGES)))
        p = {"op": op, "form": draw(st.sampled_from(forms)), "const_first": op != "Div" and draw(st.booleans())}
        if op == "Mul" and draw(st.integers(0, 7)) == 7:
            p["zero"] = True  # everything downstream is constant: zero ranges, constant folding
        elif op in ("Mul", "Add") and draw(st.integers(0, 4)) == 4:
            p["magnitude"] = draw(st.sampled_from([100.0, 0.01]))  # ranges far apart from the rest
        return p

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        form = p["form"]
        if form == "scalar":
            cshape: list[int] = []
        elif form == "last":
            cshape = [int(shape[-1])]
        elif form == "channel":
            cshape = [int(shape[1])] + [1] * (len(shape) - 2)
        else:
            cshape = [d if isinstance(d, int) else 1 for d in shape]
        bounds = _VALUE_RANGES[p["op"]]
        if p.get("zero"):
            c = em.const(np.zeros(cshape, np.float32), hint="zero")
        elif bounds is None:
            c = em.const((em.rng.standard_normal(cshape) * 0.5).astype(np.float32), hint="b")
        else:
            c = em.values(cshape, *bounds, signed=True, hint="s")
        if "magnitude" in p:
            c = em.op("Mul", c, em.const(p["magnitude"], hint="magnitude"))  # folded by cleanup
        ins = (c, x) if p["const_first"] else (x, c)
        return em.op(p["op"], *ins)


@_register("layer_norm")
class LayerNorm(Op):
    keeps = True
    min_opset = 17

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2 and _axis_ok(shape, -1, 2)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"bias": draw(st.booleans()), "epsilon": draw(st.sampled_from([1e-5, 1e-3]))}

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        d = int(shape[-1])
        ins = [x, em.values([d], 0.5, 1.5, hint="gamma")]
        if p["bias"]:
            ins.append(em.const((em.rng.standard_normal(d) * 0.1).astype(np.float32), hint="beta"))
        return em.op("LayerNormalization", *ins, axis=-1, epsilon=p["epsilon"])


@_register("batch_norm")
class BatchNorm(Op):
    keeps = True

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) in (3, 4) and _axis_ok(shape, 1)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        c = int(shape[1])
        scale = em.values([c], 0.5, 1.5, hint="bn_scale")
        bias = em.const((em.rng.standard_normal(c) * 0.1).astype(np.float32), hint="bn_bias")
        mean = em.const((em.rng.standard_normal(c) * 0.2).astype(np.float32), hint="bn_mean")
        var = em.values([c], 0.5, 2.0, hint="bn_var")
        return em.op("BatchNormalization", x, scale, bias, mean, var, epsilon=1e-5)


@_register("reduce")
class Reduce(Op):
    """ReduceMean / ReduceSum / ReduceMax over one axis, keepdims=1 (axes attribute or input by opset)."""

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"op": draw(st.sampled_from(["ReduceMean", "ReduceSum", "ReduceMax"])), "axis": draw(st.integers(1, len(shape) - 1)) - len(shape)}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        out = list(shape)
        out[p["axis"]] = 1
        return tuple(out)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        return em.reduce(p["op"], x, [p["axis"]], keepdims=1)


# ---------------------------------------------------------------------------------------------
# convolution, pooling, resize, pad


def _conv_out(size: int, k: int, s: int, pad: int, d: int) -> int:
    return (size + 2 * pad - d * (k - 1) - 1) // s + 1


class _Convolution(Op):
    """Conv and ConvTranspose: known channels and spatial sizes, one group or depthwise, optional bias."""

    keeps = True
    cost = 2

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) in (3, 4) and concrete(*shape[1:])

    @staticmethod
    def group(draw: Draw, c: int) -> str:
        return draw(st.sampled_from(["one", "depthwise"])) if c > 1 else "one"

    @staticmethod
    def node(em: Emitter, op: str, x: str, w: str, p: dict[str, Any], bias_hint: str, attrs: dict[str, Any]) -> str:
        """``op(x, w[, bias])``, the bias drawn when ``p["bias"]``."""
        ins = [x, w]
        if p["bias"]:
            ins.append(em.const((em.rng.standard_normal(p["out"]) * 0.1).astype(np.float32), hint=bias_hint))
        return em.op(op, *ins, **attrs)


@_register("conv")
class Conv(_Convolution):
    """1-D or 2-D Conv: kernel 1-3, stride, dilation, explicit or SAME_UPPER pads, groups (depthwise), bias."""

    weight = 3

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        c = int(shape[1])
        spatial = [int(s) for s in shape[2:]]
        group = self.group(draw, c)
        if ctx.keep:
            k = draw(st.sampled_from([1, 3]))
            return {"out": c, "k": k, "stride": 1, "pad": "same", "dilation": 1, "group": group, "bias": draw(st.booleans())}
        out = c * draw(st.integers(1, 2)) if group == "depthwise" else draw(st.integers(ctx.min_width, 8))
        k = draw(st.sampled_from([1, 2, 3]))
        dilation = draw(st.sampled_from([1, 2])) if k > 1 else 1
        pad = draw(st.sampled_from(["same", "valid", "auto"]))
        if pad == "same" and k % 2 == 0:
            pad = "auto"
        if pad == "valid" and min(spatial) < dilation * (k - 1) + 1:
            pad = "auto"
        if pad == "auto":
            dilation = 1  # onnxruntime: "Dilation not supported for AutoPadType::SAME_UPPER"
        return {"out": out, "k": k, "stride": draw(st.sampled_from([1, 2])), "pad": pad, "dilation": dilation, "group": group, "bias": draw(st.booleans())}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        k, s, d = p["k"], p["stride"], p["dilation"]
        if p["pad"] == "auto":
            spatial = [-(-int(n) // s) for n in shape[2:]]
        else:
            pad = d * (k - 1) // 2 if p["pad"] == "same" else 0
            spatial = [_conv_out(int(n), k, s, pad, d) for n in shape[2:]]
        return (shape[0], p["out"], *spatial)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        c, r = int(shape[1]), len(shape) - 2
        k, d = p["k"], p["dilation"]
        groups = c if p["group"] == "depthwise" else 1
        w = em.weight([p["out"], c // groups] + [k] * r, fan_in=(c // groups) * k**r, gain=1.4, hint="conv_w")
        attrs: dict[str, Any] = {"kernel_shape": [k] * r, "strides": [p["stride"]] * r, "group": groups}
        if d > 1:
            attrs["dilations"] = [d] * r
        if p["pad"] == "auto":
            attrs["auto_pad"] = "SAME_UPPER"
        else:
            pad = d * (k - 1) // 2 if p["pad"] == "same" else 0
            attrs["pads"] = [pad] * (2 * r)
        return self.node(em, "Conv", x, w, p, "conv_b", attrs)


@_register("conv_transpose")
class ConvTranspose(_Convolution):
    """1-D / 2-D ConvTranspose (weight [C, out/groups, k...]: output channels on axis 1), stride,
    pads, output_padding, depthwise groups, bias."""

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        c = int(shape[1])
        group = self.group(draw, c)
        if ctx.keep:
            return {"out": c, "k": 3, "stride": 1, "pad": 1, "output_padding": 0, "group": group, "bias": draw(st.booleans())}
        k = draw(st.sampled_from([1, 2, 3]))
        stride = draw(st.sampled_from([1, 2]))
        return {
            "out": c if group == "depthwise" else draw(st.integers(ctx.min_width, 8)),
            "k": k,
            "stride": stride,
            "pad": draw(st.integers(0, (k - 1) // 2)),
            "output_padding": draw(st.integers(0, stride - 1)),
            "group": group,
            "bias": draw(st.booleans()),
        }

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        spatial = [(int(n) - 1) * p["stride"] - 2 * p["pad"] + p["k"] + p["output_padding"] for n in shape[2:]]
        return (shape[0], p["out"], *spatial)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        c, r, k = int(shape[1]), len(shape) - 2, p["k"]
        groups = c if p["group"] == "depthwise" else 1
        w = em.weight([c, p["out"] // groups] + [k] * r, fan_in=max(c * k**r // (p["stride"] ** r), 1), gain=1.4, hint="convt_w")
        attrs: dict[str, Any] = {"kernel_shape": [k] * r, "strides": [p["stride"]] * r, "pads": [p["pad"]] * (2 * r), "group": groups}
        if p["output_padding"]:
            attrs["output_padding"] = [p["output_padding"]] * r
        return self.node(em, "ConvTranspose", x, w, p, "convt_b", attrs)


@_register("concat_const")
class ConcatConst(Op):
    """Concat a constant block on a non-batch axis (constant inputs of a shared-scale Concat), its
    values of the activation's magnitude or 50x larger."""

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2 and concrete(*shape)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        axis, size = draw(st.integers(1, len(shape) - 1)), draw(st.integers(1, 3))
        return {"axis": axis, "size": size, "scale": draw(st.sampled_from([1.0, 50.0])), "first": draw(st.booleans())}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        out = list(shape)
        out[p["axis"]] = int(shape[p["axis"]]) + p["size"]
        return tuple(out)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        cshape = [int(d) for d in shape]
        cshape[p["axis"]] = p["size"]
        c = em.const((em.rng.standard_normal(cshape) * p["scale"]).astype(np.float32), hint="block")
        return em.op("Concat", *((c, x) if p["first"] else (x, c)), axis=p["axis"])


def _pool_out(size: int, k: int, s: int, pad: int, ceil: bool) -> int:
    span = size + 2 * pad - k
    return (-(-span // s) if ceil else span // s) + 1


@_register("pool")
class Pool(Op):
    """MaxPool / AveragePool (pads, strides, ceil_mode where the last window starts inside the input,
    count_include_pad) and GlobalAverage/MaxPool."""

    weight = 2
    keeps = True

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) in (3, 4) and concrete(*shape[2:])

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        kind = draw(st.sampled_from(["MaxPool", "AveragePool"] + ([] if ctx.keep else ["GlobalAveragePool", "GlobalMaxPool"])))
        if kind.startswith("Global"):
            return {"op": kind}
        if ctx.keep:
            return {"op": kind, "k": 3, "stride": 1, "pad": 1, "ceil": False, "count_include_pad": draw(st.booleans())}
        small = min(int(s) for s in shape[2:])
        k = draw(st.sampled_from([2, 3]))
        k = min(k, small) if small >= 2 else 1
        stride = draw(st.sampled_from([1, 2]))
        pad = draw(st.integers(0, (k - 1) // 2 if k > 1 else 0))
        ceil = draw(st.booleans())
        for n in shape[2:]:
            lo, hi = _pool_out(int(n), k, stride, pad, False), _pool_out(int(n), k, stride, pad, True)
            if hi != lo and (hi - 1) * stride >= int(n) + pad:  # a last window starting in the padding
                ceil = False  # onnx shape inference and onnxruntime disagree there
        return {"op": kind, "k": k, "stride": stride, "pad": pad, "ceil": ceil, "count_include_pad": draw(st.booleans())}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        if p["op"].startswith("Global"):
            return (*shape[:2], *[1] * (len(shape) - 2))
        return (*shape[:2], *[_pool_out(int(n), p["k"], p["stride"], p["pad"], p["ceil"]) for n in shape[2:]])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        if p["op"].startswith("Global"):
            return em.op(p["op"], x)
        r = len(shape) - 2
        attrs: dict[str, Any] = {"kernel_shape": [p["k"]] * r, "strides": [p["stride"]] * r, "pads": [p["pad"]] * (2 * r)}
        if p["ceil"]:
            attrs["ceil_mode"] = 1
        if p["op"] == "AveragePool" and p["count_include_pad"]:
            attrs["count_include_pad"] = 1
        return em.op(p["op"], x, **attrs)


@_register("pad")
class Pad(Op):
    """Pad the spatial axes: constant / reflect / edge (/ wrap >= 19), axes input >= 18."""

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) in (3, 4) and concrete(*shape[2:])

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        modes = ["constant", "reflect", "edge"] + (["wrap"] if ctx.opset >= 19 else [])
        mode = draw(st.sampled_from(modes))
        spatial = [int(s) for s in shape[2:]]
        cap = min(2, min(spatial) - 1) if mode in ("reflect", "wrap") else 2
        pads = [draw(st.integers(0, max(cap, 0))) for _ in range(2 * len(spatial))]
        return {"mode": mode, "pads": pads, "value": draw(st.sampled_from([0.0, 0.5])), "axes": ctx.opset >= 18 and draw(st.booleans())}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        r = len(shape) - 2
        pads = p["pads"]
        return (*shape[:2], *[int(n) + pads[i] + pads[i + r] for i, n in enumerate(shape[2:])])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        r = len(shape) - 2
        begin, end = p["pads"][:r], p["pads"][r:]
        if p["axes"]:
            axes = list(range(2, 2 + r))
            ins = [x, em.ints(begin + end, "pads"), em.const(p["value"], hint="pv") if p["mode"] == "constant" else "", em.ints(axes, "axes")]
        else:
            ins = [x, em.ints([0, 0] + begin + [0, 0] + end, "pads")]
            if p["mode"] == "constant":
                ins.append(em.const(p["value"], hint="pv"))
        return em.op("Pad", *ins, mode=p["mode"])


@_register("resize")
class Resize(Op):
    """Resize H, W of a 4-D tensor by scales (or sizes when every dim is known); nearest / linear /
    cubic, several coordinate transforms; roi and scales are required inputs at opset 11."""

    weight = 2
    cost = 2

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) == 4 and concrete(*shape[2:])

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
        ctms = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"] + (["half_pixel_symmetric"] if ctx.opset >= 19 else [])
        scale = draw(st.sampled_from([2.0, 0.5, 1.5]))
        if scale < 1 and min(int(s) for s in shape[2:]) < 2:
            scale = 2.0
        p: dict[str, Any] = {"mode": mode, "ctm": draw(st.sampled_from(ctms)), "scale": scale, "by": "scales"}
        if concrete(*shape) and draw(st.booleans()):
            p["by"] = "sizes"
        if mode == "nearest":
            p["nearest_mode"] = draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
        if ctx.opset >= 18 and mode != "nearest" and scale < 1:
            p["antialias"] = draw(st.booleans())
        return p

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        return (*shape[:2], *[int(math.floor(int(n) * p["scale"])) for n in shape[2:]])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        attrs: dict[str, Any] = {"mode": p["mode"], "coordinate_transformation_mode": p["ctm"]}
        if "nearest_mode" in p:
            attrs["nearest_mode"] = p["nearest_mode"]
        if p.get("antialias"):
            attrs["antialias"] = 1
        roi = em.empty_float() if em.opset < 13 else ""
        if p["by"] == "sizes":
            sizes = em.ints([int(d) for d in self.shape(shape, p)], "sizes")
            scales = em.empty_float() if em.opset < 13 else ""
            return em.op("Resize", x, roi, scales, sizes, **attrs)
        scales = em.const([1.0, 1.0, p["scale"], p["scale"]], hint="scales")
        return em.op("Resize", x, roi, scales, **attrs)


# ---------------------------------------------------------------------------------------------
# shape ops


def _reshape_target(shape: Shape, target: list[int]) -> Shape:
    """onnx Reshape (allowzero=0) of ``shape``; symbolic dims pass through ``0`` or cancel in ``-1``."""
    out: list[Any] = [shape[i] if t == 0 else t for i, t in enumerate(target)]
    if -1 in out:
        num = [d for d in shape]
        den = [d for d in out if d != -1]
        for d in list(den):
            if isinstance(d, str):
                num.remove(d)
                den.remove(d)
        assert concrete(*num), f"cannot infer -1 of {target} from {shape}"
        out[out.index(-1)] = math.prod(num) // math.prod(den)  # type: ignore[arg-type]
    return tuple(out)


@_register("reshape")
class Reshape(Op):
    """Flatten to 2-D (Reshape [0,-1], Flatten, or Shape→Gather→Concat→Reshape as exporters write it),
    split the last axis, merge the last two, or a no-op Reshape."""

    weight = 2
    keeps = True

    def _forms(self, shape: Shape) -> list[str]:
        r = len(shape)
        forms = ["same"]
        if r >= 3 and concrete(*shape[1:]):
            forms += ["flatten", "reshape2d", "dynamic2d"]
        if r <= 3 and _axis_ok(shape, -1, 4) and any(int(shape[-1]) % a == 0 for a in (2, 3)):
            forms.append("unflatten")
        if r >= 3 and concrete(*shape[-2:]):
            forms.append("merge_last2")
        return forms

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        form = "same" if ctx.keep else draw(st.sampled_from(self._forms(shape)))
        r = len(shape)
        if form == "same":
            target = [0] * r if draw(st.booleans()) or not concrete(*shape) else [int(d) for d in shape]
        elif form in ("flatten", "reshape2d", "dynamic2d"):
            target = [0, -1]
        elif form == "unflatten":
            a = 2 if int(shape[-1]) % 2 == 0 else 3
            target = [0] * (r - 1) + [a, -1]
        else:
            target = [0] * (r - 2) + [-1]
        return {"form": form, "target": target}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        return _reshape_target(shape, p["target"])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        if p["form"] == "flatten":
            return em.op("Flatten", x, axis=1)
        if p["form"] == "dynamic2d":
            if em.opset >= 15:
                batch = em.op("Shape", x, start=0, end=1)
            else:
                batch = em.unsqueeze(em.op("Gather", em.op("Shape", x), em.const(0, np.int64, "i0"), axis=0), [0])
            target = em.op("Concat", batch, em.ints([-1], "minus1"), axis=0)
            return em.op("Reshape", x, target)
        return em.op("Reshape", x, em.ints(p["target"], "shape"))


@_register("transpose")
class Transpose(Op):
    keeps = True

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        perm = list(draw(st.permutations(list(range(len(shape))))))
        if ctx.keep and tuple(shape[i] for i in perm) != tuple(shape):
            perm = list(range(len(shape)))
        return {"perm": perm}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        return tuple(shape[i] for i in p["perm"])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        return em.op("Transpose", x, perm=p["perm"])


@_register("slice")
class Slice(Op):
    """Slice one concrete axis: steps ±1 / 2, negative and past-the-end indices, axes input or not."""

    keeps = True

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return any(isinstance(d, int) and d >= 2 for d in shape)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        axes = [i for i, d in enumerate(shape) if isinstance(d, int) and d >= 2]
        axis = draw(st.sampled_from(axes))
        n = int(shape[axis])
        if ctx.keep:
            return {"axis": axis, "start": 0, "end": INT_MAX, "step": 1, "negative_axis": False, "axes_input": True}
        step = draw(st.sampled_from([1, 2, -1]))
        if step > 0:
            start = draw(st.integers(-n, n - 1))
            end = draw(st.sampled_from([INT_MAX, n, -1, (start % n) + 1]))
        else:
            start = draw(st.sampled_from([-1, n - 1, INT_MAX]))
            end = draw(st.sampled_from([-INT_MAX, 0, -n - 1]))
        if len(range(n)[slice(start, end, step)]) == 0:
            start, end = 0, INT_MAX
        return {"axis": axis, "start": start, "end": end, "step": step, "negative_axis": draw(st.booleans()), "axes_input": axis != 0 or draw(st.booleans())}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        out = list(shape)
        out[p["axis"]] = len(range(int(shape[p["axis"]]))[slice(p["start"], p["end"], p["step"])])
        return tuple(out)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        ins = [x, em.ints([p["start"]], "starts"), em.ints([p["end"]], "ends")]
        if p["axes_input"] or p["step"] != 1:
            axis = p["axis"] - len(shape) if p["negative_axis"] else p["axis"]
            ins.append(em.ints([axis], "axes"))
            if p["step"] != 1:
                ins.append(em.ints([p["step"]], "steps"))
        return em.op("Slice", *ins)


@_register("unsqueeze")
class Unsqueeze(Op):
    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) <= 3

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"axis": draw(st.integers(1, len(shape)))}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        out = list(shape)
        out.insert(p["axis"], 1)
        return tuple(out)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        return em.unsqueeze(x, [p["axis"]])


@_register("squeeze")
class Squeeze(Op):
    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2 and any(d == 1 for d in shape[1:])

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"axis": draw(st.sampled_from([i for i, d in enumerate(shape) if d == 1 and i > 0]))}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        return tuple(d for i, d in enumerate(shape) if i != p["axis"])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        return em.squeeze(x, [p["axis"]])


@_register("gather")
class Gather(Op):
    """Gather along a concrete axis with an int64 graph input (in range, maybe negative), constant
    indices, or a scalar index that drops the axis."""

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return any(isinstance(d, int) and d >= 2 for d in shape)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        axis = draw(st.sampled_from([i for i, d in enumerate(shape) if isinstance(d, int) and d >= 2]))
        n = int(shape[axis])
        source = draw(st.sampled_from(["input", "const"] + (["scalar"] if len(shape) >= 2 else [])))
        if source == "input":
            return {"axis": axis, "source": source, "count": draw(st.integers(1, 4)), "negative": draw(st.booleans())}
        if source == "scalar":
            return {"axis": axis, "source": source, "index": draw(st.integers(-n, n - 1))}
        return {"axis": axis, "source": source, "indices": draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4))}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        a = p["axis"]
        if p["source"] == "scalar":
            return (*shape[:a], *shape[a + 1 :])
        count = p["count"] if p["source"] == "input" else len(p["indices"])
        return (*shape[:a], count, *shape[a + 1 :])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        n = int(shape[p["axis"]])
        if p["source"] == "input":
            idx = em.add_input("idx", TensorProto.INT64, (p["count"],))
            em.index_inputs[idx] = (-n if p["negative"] else 0, n)
        elif p["source"] == "scalar":
            idx = em.const(p["index"], np.int64, "gi")
        else:
            idx = em.ints(p["indices"], "gi")
        return em.op("Gather", x, idx, axis=p["axis"])


# ---------------------------------------------------------------------------------------------
# dense layers


@_register("tied_matmul")
class TiedMatMul(Op):
    """One square weight used by two MatMuls, ``act(x @ W) @ W`` (tied weights; shared initializers)."""

    keeps = True
    cost = 3

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2 and _axis_ok(shape, -1)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"act": draw(st.sampled_from(["relu", "tanh"]))}

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        k = int(shape[-1])
        w = em.weight([k, k], fan_in=k, gain=1.0, hint="tied_w")
        return em.op("MatMul", OPS[p["act"]].emit(em, em.op("MatMul", x, w), shape, {}), w)


@_register("tap")
class Tap(Op):
    """The current tensor also becomes a graph output while the chain goes on reading it."""

    keeps = True
    cost = 0

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return not ctx.in_subgraph

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        if em.is_io(x):
            x = em.op("Identity", x)
        em.add_output(x, shape)
        return x


@_register("matmul")
class MatMul(Op):
    """x @ W (W [K, M]), any rank >= 2."""

    weight = 3
    keeps = True

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2 and _axis_ok(shape, -1)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        forms = ["new", "shared"]
        if not ctx.keep:
            forms.append("vector")
        if len(shape) == 3 and _axis_ok(shape, 0, 2):
            forms.append("batched")
        return {"out": int(shape[-1]) if ctx.keep else draw(st.integers(ctx.min_width, 16)), "weight": draw(st.sampled_from(forms))}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        if p.get("weight") == "vector":
            return tuple(shape[:-1])
        return (*shape[:-1], p["out"])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        """``weight``: ``new`` [K, M]; ``shared`` (an earlier [K, M] weight when there is one);
        ``vector`` [K] (MatMul drops the last axis); ``batched`` [B, K, M] for a [B, T, K] input."""
        k, form = int(shape[-1]), p.get("weight", "new")
        if form == "vector":
            return em.op("MatMul", x, em.weight([k], fan_in=k, gain=1.4, hint="mm_v"))
        if form == "batched":
            return em.op("MatMul", x, em.weight([int(shape[0]), k, p["out"]], fan_in=k, gain=1.4, hint="mm_b"))
        return em.op("MatMul", x, em.weight([k, p["out"]], fan_in=k, gain=1.4, hint="mm_w", share=form == "shared"))


@_register("gemm")
class Gemm(Op):
    """Gemm on 2-D: transA (of a transposed input), transB, alpha/beta, bias of shape [M], [1, M], a
    scalar or none (optional C >= 11)."""

    weight = 2
    keeps = True

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) == 2 and _axis_ok(shape, -1)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {
            "out": int(shape[-1]) if ctx.keep else draw(st.integers(ctx.min_width, 16)),
            "trans_b": draw(st.booleans()),
            "trans_a": draw(st.booleans()),
            "bias": draw(st.sampled_from(["vector", "row", "scalar", "none"])),
            "alpha": draw(st.sampled_from([1.0, 0.5])),
            "beta": draw(st.sampled_from([1.0, 2.0])),
        }

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        return (shape[0], p["out"])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        k, m = int(shape[-1]), p["out"]
        w = em.weight([m, k] if p["trans_b"] else [k, m], fan_in=k, gain=1.4, hint="gemm_w")
        ins = [x, w]
        bias_shape = {"vector": [m], "row": [1, m], "scalar": [], "none": None}[p["bias"]]
        if bias_shape is not None:
            ins.append(em.const((em.rng.standard_normal(bias_shape) * 0.1).astype(np.float32), hint="gemm_b"))
        attrs: dict[str, Any] = {"alpha": p["alpha"], "beta": p["beta"]}
        if p["trans_b"]:
            attrs["transB"] = 1
        if p.get("trans_a"):
            attrs["transA"] = 1
            ins[0] = em.op("Transpose", x, perm=[1, 0])
        return em.op("Gemm", *ins, **attrs)


@_register("self_matmul")
class SelfMatMul(Op):
    """Attention-like product of two activations: (x · s) @ xᵀ over the last two axes."""

    weight = 2
    cost = 3

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) >= 2 and concrete(*shape[-2:])

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        return {"scaled": draw(st.booleans())}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        return (*shape[:-1], shape[-2])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        perm = list(range(len(shape)))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        left = em.op("Mul", x, em.const(1.0 / math.sqrt(int(shape[-1])), hint="scale")) if p["scaled"] else x
        return em.op("MatMul", left, em.op("Transpose", x, perm=perm))


@_register("rnn")
class Rnn(Op):
    """LSTM / GRU on [T, N, D]: direction, bias, initial states, sequence_lens, GRU
    linear_before_reset; Y → [T, N, dirs·H] by Squeeze (one direction) or Transpose + Reshape
    [0, 0, -1]; optionally Y_h as a second output. (onnxruntime's CPU kernels refuse layout=1.)"""

    weight = 2
    cost = 3

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return len(shape) == 3 and _axis_ok(shape, -1)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        op = draw(st.sampled_from(["LSTM", "GRU"]))
        direction = draw(st.sampled_from(["forward", "reverse", "bidirectional"]))
        p: dict[str, Any] = {"op": op, "hidden": draw(st.integers(ctx.min_width, 8)), "direction": direction, "bias": draw(st.booleans())}
        p["squeeze"] = direction != "bidirectional" and draw(st.booleans())
        p["y_h"] = draw(st.booleans())
        if _axis_ok(shape, 1):
            p["state"] = draw(st.booleans())  # initial_h (and initial_c) constants
            if _axis_ok(shape, 0, 2):
                lens = draw(st.lists(st.integers(1, int(shape[0])), min_size=int(shape[1]), max_size=int(shape[1])))
                p["seq_lens"] = lens if draw(st.booleans()) else None
        if op == "GRU":
            p["linear_before_reset"] = draw(st.booleans())
        return p

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        dirs = 2 if p["direction"] == "bidirectional" else 1
        return (shape[0], shape[1], dirs * p["hidden"])

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        d, h = int(shape[-1]), p["hidden"]
        dirs = 2 if p["direction"] == "bidirectional" else 1
        gates = 4 if p["op"] == "LSTM" else 3
        ins = [x, em.weight([dirs, gates * h, d], fan_in=d, hint="rnn_w"), em.weight([dirs, gates * h, h], fan_in=h, hint="rnn_r")]
        if p["bias"] or p.get("state") or p.get("seq_lens"):
            b = em.const((em.rng.standard_normal((dirs, 2 * gates * h)) * 0.1).astype(np.float32), hint="rnn_b") if p["bias"] else ""
            ins.append(b)
        if p.get("state") or p.get("seq_lens"):
            ins.append(em.const(np.asarray(p["seq_lens"], np.int32), np.int32, "seq_lens") if p.get("seq_lens") else "")
        if p.get("state"):
            n = int(shape[1])
            ins.append(em.const((em.rng.standard_normal((dirs, n, h)) * 0.5).astype(np.float32), hint="h0"))
            if p["op"] == "LSTM":
                ins.append(em.const((em.rng.standard_normal((dirs, n, h)) * 0.5).astype(np.float32), hint="c0"))
        attrs: dict[str, Any] = {"hidden_size": h, "direction": p["direction"]}
        if p.get("linear_before_reset"):
            attrs["linear_before_reset"] = 1
        y, y_h = em.node(p["op"], ins, 2, **attrs)
        if p["y_h"]:
            em.add_output(y_h, (dirs, shape[1], h))
        if p["squeeze"]:
            return em.squeeze(y, [1])
        return em.op("Reshape", em.op("Transpose", y, perm=[0, 2, 1, 3]), em.ints([0, 0, -1], "shape"))


# ---------------------------------------------------------------------------------------------
# composites: two paths merging, split, extra inputs, control flow


def _merge_elementwise(em: Emitter, op: str, a: str, b: str) -> str:
    return em.op(op, a, b)


@_register("fork")
class Fork(Op):
    """Two paths from one tensor, merged by Add/Mul/Sub/Max/Min/Sum/Mean, or by Concat on an axis
    (each path may first change that axis by a Conv (axis 1) or a MatMul (last axis)); one path may
    end in a ReduceMean that broadcasts back."""

    weight = 2
    keeps = True
    composite = True
    cost = 2

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        inner = ctx.inner(keep=True)
        left, _ = draw_chain(draw, inner, shape, 0, 3)
        right, _ = draw_chain(draw, inner, shape, 0, 3)
        axes = [i for i, d in enumerate(shape) if isinstance(d, int) and i > 0]
        merges = ["Add", "Mul", "Sub", "Max", "Min", "Sum", "Mean"] + (["Concat"] if axes and not ctx.keep else [])
        merge = draw(st.sampled_from(merges))
        p: dict[str, Any] = {"left": left, "right": right, "merge": merge}
        if merge == "Concat":
            axis = draw(st.sampled_from(axes))
            p["axis"] = axis
            widen = None
            if axis == 1 and OPS["conv"].applies(ctx, shape):
                widen = "conv"
            elif axis == len(shape) - 1 and len(shape) >= 2:
                widen = "matmul"
            if widen and draw(st.booleans()):
                p["widen"] = [widen, draw(st.integers(1, 6)), draw(st.integers(1, 6))]
        elif len(shape) >= 2 and not p["right"] and draw(st.booleans()):
            p["reduce_right"] = len(shape) - 1
        return p

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        if p["merge"] != "Concat":
            return shape
        out = list(shape)
        if "widen" in p:
            out[p["axis"]] = p["widen"][1] + p["widen"][2]
        else:
            out[p["axis"]] = 2 * int(shape[p["axis"]])
        return tuple(out)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        a, _ = apply_chain(em, x, shape, p["left"])
        b, _ = apply_chain(em, x, shape, p["right"])
        if "widen" in p:
            kind, ca, cb = p["widen"]
            if kind == "conv":
                conv = {"k": 3, "stride": 1, "pad": "same", "dilation": 1, "group": "one", "bias": True}
                a = OPS["conv"].emit(em, a, shape, {**conv, "out": ca})
                b = OPS["conv"].emit(em, b, shape, {**conv, "out": cb})
            else:
                a = OPS["matmul"].emit(em, a, shape, {"out": ca})
                b = OPS["matmul"].emit(em, b, shape, {"out": cb})
        if p["merge"] == "Concat":
            return em.op("Concat", a, b, axis=p["axis"])
        if "reduce_right" in p:
            b = em.reduce("ReduceMean", b, [p["reduce_right"]], keepdims=1)
        if a == b:  # two empty paths: still two readers of one tensor
            b = em.op("Identity", x)
        return _merge_elementwise(em, p["merge"], a, b)


@_register("split")
class Split(Op):
    """Split one concrete axis (sizes as attribute / input / equal / num_outputs by opset), an
    activation on each part, then Concat back (parts maybe reordered) or, for equal parts, Sum/Max."""

    keeps = True
    composite = True
    cost = 4

    def applies(self, ctx: Ctx, shape: Shape) -> bool:
        return any(isinstance(d, int) and d >= 2 for d in shape)

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        axis = draw(st.sampled_from([i for i, d in enumerate(shape) if isinstance(d, int) and d >= 2]))
        n = int(shape[axis])
        parts = draw(st.integers(2, min(3, n)))
        equal = n % parts == 0 and draw(st.booleans())
        if equal:
            sizes = [n // parts] * parts
        else:
            cuts = sorted(draw(st.lists(st.integers(1, n - 1), min_size=parts - 1, max_size=parts - 1, unique=True)))
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
        forms = ["sizes"] + (["equal" if ctx.opset < 18 else "num_outputs"] if equal else [])
        acts = [draw(st.sampled_from(["identity", "relu", "sigmoid", "tanh"])) for _ in sizes]
        merge = draw(st.sampled_from(["Concat"] + (["Sum", "Max"] if equal and not ctx.keep else [])))
        order = list(range(parts)) if merge != "Concat" else list(draw(st.permutations(list(range(parts)))))
        return {"axis": axis, "sizes": sizes, "form": draw(st.sampled_from(forms)), "acts": acts, "merge": merge, "order": order}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        out = list(shape)
        if p["merge"] != "Concat":
            out[p["axis"]] = p["sizes"][0]
        return tuple(out)

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        parts = em.split(x, p["axis"], p["sizes"], p["form"])
        parts = [part if act == "identity" else OPS[act].emit(em, part, shape, {}) for part, act in zip(parts, p["acts"])]
        ordered = [parts[i] for i in p["order"]]
        if p["merge"] == "Concat":
            return em.op("Concat", *ordered, axis=p["axis"])
        return em.op(p["merge"], *ordered)


@_register("merge_input")
class MergeInput(Op):
    """A second float graph input (same shape, or just the last axis) joined by Add / Mul, or by
    Concat on the last axis."""

    keeps = True

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        merges = ["Add", "Mul"] + (["Concat"] if not ctx.keep and shape and _axis_ok(shape, -1) else [])
        merge = draw(st.sampled_from(merges))
        full = merge == "Concat" or not shape or not _axis_ok(shape, -1) or draw(st.booleans())
        return {"merge": merge, "full": full}

    def shape(self, shape: Shape, p: dict[str, Any]) -> Shape:
        if p["merge"] == "Concat":
            return (*shape[:-1], 2 * int(shape[-1]))
        return shape

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        other = em.add_input("x", TensorProto.FLOAT, shape if p["full"] else (shape[-1],))
        if p["merge"] == "Concat":
            return em.op("Concat", x, other, axis=-1)
        return em.op(p["merge"], x, other)


@_register("if")
class If(Op):
    """If on a bool graph input (or on ``ReduceSum(x) > 0``): each branch a shape-keeping sub-chain
    reading the outer tensor; branch constants local, in the outer graph, or Constant nodes."""

    weight = 2
    keeps = True
    composite = True
    cost = 2

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        inner = ctx.inner(keep=True, subgraph=True)
        then, _ = draw_chain(draw, inner, shape, 0, 3)
        other, _ = draw_chain(draw, inner, shape, 0, 3)
        return {"cond": draw(st.sampled_from(["input", "computed"])), "then": then, "else": other, "consts": draw(st.sampled_from(["init", "outer", "node"]))}

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        if p["cond"] == "input":
            cond = em.add_input("cond", TensorProto.BOOL, ())
        else:
            total = em.reduce("ReduceSum", x, None, keepdims=0)
            cond = em.op("Greater", total, em.const(0.0, hint="zero"))
        branches = []
        for key in ("then", "else"):
            with em.subgraph(p["consts"]) as scope:
                y, _ = apply_chain(em, x, shape, p[key])
                if y == x:  # a branch may not return an outer value directly (onnxruntime refuses it)
                    y = em.op("Identity", x)
            out = helper.make_tensor_value_info(y, TensorProto.FLOAT, list(shape))
            branches.append(helper.make_graph(scope.nodes, em.fresh(key), [], [out], scope.inits))
        return em.op("If", cond, then_branch=branches[0], else_branch=branches[1])


@_register("loop")
class Loop(Op):
    """Loop with a constant trip count (cond input empty or a constant true): the body maps the
    carried tensor by a shape-keeping sub-chain, halves it and adds the outer tensor it reads from
    the enclosing scope (and maybe 0.1 · iteration); optionally a scan output becomes a graph output."""

    weight = 2
    keeps = True
    composite = True
    cost = 4

    def draw(self, draw: Draw, ctx: Ctx, shape: Shape) -> dict[str, Any]:
        body, _ = draw_chain(draw, ctx.inner(keep=True, subgraph=True), shape, 0, 3)
        return {
            "trips": draw(st.integers(1, 3)),
            "cond": draw(st.sampled_from(["none", "const"])),
            "body": body,
            "use_iter": draw(st.booleans()),
            "scan": not ctx.in_subgraph and draw(st.booleans()),
            "consts": draw(st.sampled_from(["init", "outer", "node"])),
        }

    def emit(self, em: Emitter, x: str, shape: Shape, p: dict[str, Any]) -> str:
        trips = em.const(p["trips"], np.int64, "trips")
        cond = em.const(True, np.bool_, "true") if p["cond"] == "const" else ""
        with em.subgraph(p["consts"]) as scope:
            it, c_in, x_in = em.fresh("iter"), em.fresh("cond_in"), em.fresh("x_in")
            y, _ = apply_chain(em, x_in, shape, p["body"])
            y = em.op("Add", em.op("Mul", y, em.const(0.5, hint="half")), x)  # reads the outer tensor
            if p["use_iter"]:
                y = em.op("Add", y, em.op("Mul", em.op("Cast", it, to=TensorProto.FLOAT), em.const(0.1, hint="tenth")))
            c_out = em.op("Identity", c_in)
            outs = [helper.make_tensor_value_info(c_out, TensorProto.BOOL, []), helper.make_tensor_value_info(y, TensorProto.FLOAT, list(shape))]
            if p["scan"]:
                s = em.op("Identity", y)
                outs.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, list(shape)))
        ins = [
            helper.make_tensor_value_info(it, TensorProto.INT64, []),
            helper.make_tensor_value_info(c_in, TensorProto.BOOL, []),
            helper.make_tensor_value_info(x_in, TensorProto.FLOAT, list(shape)),
        ]
        body = helper.make_graph(scope.nodes, em.fresh("body"), ins, outs, scope.inits)
        results = em.node("Loop", [trips, cond, x], 2 if p["scan"] else 1, body=body)
        if p["scan"]:
            em.add_output(results[1], (p["trips"], *shape))
        return results[0]


# ---------------------------------------------------------------------------------------------
# chains


def _eligible(ctx: Ctx, shape: Shape) -> list[str]:
    names = []
    for name, o in OPS.items():
        if o.min_opset > ctx.opset or (ctx.keep and not o.keeps) or (o.composite and ctx.depth >= MAX_DEPTH):
            continue
        if ctx.budget is not None and o.cost > ctx.budget[0]:
            continue
        if o.applies(ctx, shape):
            names += [name] * dict(ctx.boost).get(name, o.weight)
    return names


#: Ops that leave the tensor they read as it is (a Cast round trip via double pends past them).
_TRANSPARENT = frozenset({"identity", "dropout", "tap", "cast_roundtrip"})
#: Ops onnxruntime's QDQ propagation moves a DequantizeLinear across (with MaxPool, see :func:`draw_chain`).
_QDQ_PROPAGATED = frozenset({"transpose", "reshape", "squeeze", "unsqueeze"})


def draw_chain(draw: Draw, ctx: Ctx, shape: Shape, min_len: int, max_len: int) -> tuple[list[Spec], Shape]:
    """Draw up to ``max_len`` ops applicable one after the other from ``shape``; returns the specs
    and the final shape. Ops whose output would exceed :data:`MAX_ELEMENTS` are dropped.

    onnxruntime 1.32 fails to run a subgraph reading the result of ``Cast(float→double) →
    Cast(→float)`` (its mandatory cast-pair removal drops the tensor the subgraph's implicit input
    names: "Trying to get a TensorSeq, but got: (null)", even with optimizations disabled), so no
    composite op follows such a round trip (also not past no-ops, which cleanup removes).

    onnxruntime 1.32 aborts the process (a failed bounds assertion in its QDQ propagation, basic
    optimization level) loading a model where ``DequantizeLinear → MaxPool / Transpose / Reshape /
    Squeeze / Unsqueeze`` feeds a subgraph's implicit input, which static quantization makes of
    such an op before an If or Loop (``test_fuzz_regressions``), so no composite op follows those.
    """
    count = draw(st.integers(min_len, max_len))
    specs: list[Spec] = []
    double_cast = propagated = False
    for _ in range(count):
        names = _eligible(ctx, shape)
        if double_cast or propagated:
            names = [n for n in names if not OPS[n].composite]
        if not names:
            break
        name = draw(st.sampled_from(names))
        params = OPS[name].draw(draw, ctx, shape)
        out = OPS[name].shape(shape, params)
        if numel(out) > MAX_ELEMENTS or min((d for d in out if isinstance(d, int)), default=1) < 1:
            continue
        assert not ctx.keep or out == shape, (name, params, shape, out)
        if ctx.budget is not None:
            ctx.budget[0] -= OPS[name].cost
        if name == "cast_roundtrip" and params["via"] == "double":
            double_cast = True
        elif name not in _TRANSPARENT:
            double_cast = False
        if name in _QDQ_PROPAGATED or (name == "pool" and params["op"] == "MaxPool"):
            propagated = True
        elif name not in _TRANSPARENT:
            propagated = False
        specs.append((name, params))
        shape = out
    return specs, shape


def chain_shape(shape: Shape, specs: list[Spec]) -> Shape:
    for name, params in specs:
        shape = OPS[name].shape(shape, params)
    return shape


def apply_chain(em: Emitter, x: str, shape: Shape, specs: list[Spec]) -> tuple[str, Shape]:
    """Emit ``specs`` one after the other from tensor ``x`` of ``shape``."""
    for name, params in specs:
        x = OPS[name].emit(em, x, shape, params)
        shape = OPS[name].shape(shape, params)
    return x, shape
