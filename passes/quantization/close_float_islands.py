"""``close-float-islands``: rewrite the ``DQ → float op → Q`` detours onnxruntime's CPU provider would
run in float into forms it runs in int8, and drop conversions that do nothing.

Runs on a QDQ graph (after ``insert-qdq``). Which ops onnxruntime fuses decides what is an island:
its QDQ selectors (``qdq_selector_action_transformer.cc``) turn ``DQ → op → Q`` into an int8 kernel
for Conv, MatMul, Gemm, Add, Mul, Concat, Where, AveragePool, GlobalAveragePool, LeakyRelu,
Sigmoid, Softmax, and drop the pair around data movement (Transpose, Reshape, Flatten, Squeeze,
Unsqueeze, Slice, Gather, Expand, Tile, MaxPool, Resize, Split) when both sides share their scale
and zero point (``annotate-quantization`` already makes them share). Everything else (HardSigmoid,
ConvTranspose, LayerNormalization, ...) runs as ``DequantizeLinear → float op → QuantizeLinear``.

===================  ================================================================================
rule                 rewrite (and its algebra)
===================  ================================================================================
hardsigmoid-add      ``DQ(x_q; s, z) → HardSigmoid(α, β) → Q(s_y, z_y)`` with α > 0 and the output grid
                     inside [0, 1] becomes ``DQ(x_q; α·s, z) → Add(·, DQ(β)) → Q(s_y, z_y)``:
                     ``α·s·(x_q − z) + β = α·x + β`` exactly, and the clip to [0, 1] is the output Q's
                     own saturation. onnxruntime runs it as one QLinearAdd instead of DQ + float
                     HardSigmoid + Q (the gate of every written-out HardSwish and SE block).
requantize-chain     ``x → Q1 → DQ1 → Q2`` becomes ``x → Q2`` (or Q2's readers read Q1's output when
                     both have the same parameters): one rounding instead of two. Refused when Q1's
                     grid does not cover Q2's (Q1's saturation would then be lost).
bypass-float-reader  ``t → Q → DQ → {int8 readers, float reader}`` where ``t`` comes from a float op
                     (LayerNormalization, ...) or a graph input: the float reader (one onnxruntime
                     cannot fuse, e.g. SmoothQuant's per-channel "unsmooth" Mul on the residual path)
                     reads ``t`` itself. Its DQ no longer runs on its own (the int8 readers absorb
                     theirs) and it sees the float value, not its int8 rounding. A HardSigmoid
                     reader is left to hardsigmoid-add (int8 beats float there).
requantize-before-   ``DQ(s, z) → op`` with ``op`` one of onnxruntime's DQ-propagation ops (MaxPool,
subgraph             Transpose, Reshape, Squeeze, Unsqueeze) whose output a subgraph (If/Loop/Scan body)
                     reads gets ``→ Q(s, z) → DQ(s, z)`` after it: exact (the op only moves grid
                     values), and onnxruntime 1.32 no longer aborts loading the model (its QDQ
                     propagation fails an assertion on the subgraph's implicit input; found by
                     ``tests/fuzz``).
fold-weight-dq       ``DQ(constant) → op`` where ``op`` has no int8 kernel here (ConvTranspose, ...):
                     the constant is stored dequantized (``s·(q − z)``, the same numbers), so the
                     island no longer dequantizes its weight on every run.
===================  ================================================================================

Numerics: hardsigmoid-add and fold-weight-dq compute the same values as before up to float
rounding; requantize-chain and bypass-float-reader remove a rounding step (closer to float, at most one output step
different). Whatever a rule refuses stays as it was, with its reason recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.config import PassConfig
from onnxq.errors import ConfigError
from onnxq.ir import Model, Node, Tensor
from onnxq.pass_base import PassContext, PassResult, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

__all__ = ["CloseFloatIslands", "CloseFloatIslandsConfig", "ORT_INT8_OPS", "RULES", "close_islands", "float_islands"]

#: Ops onnxruntime's CPU QDQ selectors run in int8 (QLinear kernel or the Q/DQ pair dropped around
#: them), from ``qdq_selector_action_transformer.cc`` (onnxruntime 1.2x-1.32), plus Relu/Clip,
#: which its ClipQuantFusion folds into the Q that follows.
ORT_INT8_OPS = frozenset(
    {
        "Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "Where", "AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid",
        "Softmax", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "GatherElements", "Expand",
        "Tile", "MaxPool", "Resize", "Split", "ReduceMax", "ReduceMin", "ArgMax", "Relu", "Clip",
        "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip

#: Rule names, in the order they are tried.
RULES = ("hardsigmoid-add", "requantize-chain", "bypass-float-reader", "fold-weight-dq", "requantize-before-subgraph")

#: Ops onnxruntime's QDQ propagation moves a DequantizeLinear past (``qdq_propagation.cc``).
_PROPAGATED_OPS = ("MaxPool", "Transpose", "Reshape", "Squeeze", "Unsqueeze")

_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127), np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767)}


@dataclass(frozen=True)
class CloseFloatIslandsConfig(PassConfig):
    """Options of ``close-float-islands``.

    Attributes:
        rules: the rules to apply (default: all of :data:`RULES`).
    """

    rules: tuple[str, ...] = RULES

    def __post_init__(self) -> None:
        if isinstance(self.rules, str):
            object.__setattr__(self, "rules", (self.rules,))
        super().__post_init__()
        unknown = sorted(set(self.rules) - set(RULES))
        if unknown:
            raise ConfigError(f"close-float-islands: unknown rule(s) {', '.join(unknown)}; known: {', '.join(RULES)}")


# ---- reading quantization parameters -----------------------------------------------------------
@dataclass(frozen=True)
class _Params:
    """A Q or DQ node's per-tensor parameters."""

    scale: float
    zero_point: int
    dtype: np.dtype

    @property
    def grid(self) -> tuple[float, float]:
        """The real interval the integer grid represents."""
        lo, hi = _QRANGE[self.dtype]
        return self.scale * (lo - self.zero_point), self.scale * (hi - self.zero_point)


def _params(node: Node) -> _Params | str:
    """Per-tensor constant parameters of a QuantizeLinear/DequantizeLinear, or why not."""
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return f"{node.op} '{node.name}' has no zero point"
    s, z = ir.constant_array(node.inputs[1]), ir.constant_array(node.inputs[2])
    if s is None or z is None:
        return f"{node.op} '{node.name}' has non-constant quantization parameters"
    if s.size != 1 or z.size != 1:
        return f"{node.op} '{node.name}' is per channel"
    if z.dtype not in _QRANGE:
        return f"{node.op} '{node.name}' has zero-point type {z.dtype}"
    return _Params(float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), z.dtype)


def _sole_reader(t: Tensor, graph: ir.Graph) -> Node | None:
    users = list(t.outputs)
    return users[0] if len(users) == 1 and not ir.is_graph_output(graph, t) else None


def float_islands(model: Model) -> list[Node]:
    """Nodes onnxruntime runs in float between int8 tensors: a ``DQ → op → Q`` with ``op`` outside
    :data:`ORT_INT8_OPS`, where the DQ reads a run-time tensor (not a weight) and a Q reads an output.

    A static estimate by op type (an Add with a float constant operand is not counted, though
    onnxruntime runs it in float); ``onnxq profile`` counts the islands of the graph it executed.
    """
    found = []
    for node in ir.iter_nodes(model.graph):
        if node.op in ORT_INT8_OPS or (node.domain or "") not in ("", "ai.onnx"):
            continue
        enters = any((p := ir.producer(t)) is not None and p.op == "DequantizeLinear" and not ir.is_constant(p.inputs[0]) for t in node.inputs if t.name)
        leaves = any(r.op == "QuantizeLinear" for t in node.outputs for r in t.outputs)
        if enters and leaves:
            found.append(node)
    return found


# ---- the rules -----------------------------------------------------------------------------------
class _HardSigmoidAdd(Rule):
    """``DQ → HardSigmoid → Q`` ⇒ ``DQ(α·s) → Add(β) → Q`` (QLinearAdd in onnxruntime)."""

    name = "hardsigmoid-add"
    ops = ("HardSigmoid",)

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        dq = ir.producer(node.inputs[0])
        q = _sole_reader(node.outputs[0], rw.graph)
        if dq is None or dq.op != "DequantizeLinear" or q is None or q.op != "QuantizeLinear":
            return None
        pin, pout = _params(dq), _params(q)
        if isinstance(pin, str) or isinstance(pout, str):
            return pin if isinstance(pin, str) else pout  # type: ignore[return-value]
        if pin.dtype != pout.dtype or pin.dtype.itemsize != 1:
            return "onnxruntime's QLinearAdd needs one 8-bit type on both sides"
        alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
        if not (np.isfinite(alpha) and np.isfinite(beta) and alpha > 0):
            return f"alpha {alpha} is not positive (a negative scale would reverse the grid)"
        lo, hi = pout.grid
        # The output Q must saturate where HardSigmoid clips: its grid inside [0, 1] (half a step of slack).
        if lo < -pout.scale / 2 or hi > 1 + pout.scale / 2:
            return f"output grid [{lo:.4g}, {hi:.4g}] exceeds [0, 1]: Q alone would not clip like HardSigmoid"
        return Match([node], {"dq": dq, "pin": pin, "alpha": alpha, "beta": beta})

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        node, dq, pin = match.anchor, match.values["dq"], match.values["pin"]
        alpha, beta = match.values["alpha"], match.values["beta"]
        base = node.name or "hardsigmoid"
        scaled = ir.make_variable(rw.name(f"{base}/scaled"), dtype=np.float32, shape=node.inputs[0].shape)
        rw.add(
            ir.make_node(
                "DequantizeLinear",
                [dq.inputs[0], ir.make_constant(rw.name(f"{base}/alpha_scale"), np.asarray(alpha * pin.scale, np.float32)), dq.inputs[2]],
                [scaled],
                name=rw.name(f"{base}/DequantizeLinear"),
            )
        )
        b_q, b_s, b_z = _exact_scalar(beta, pin.dtype)
        offset = ir.make_variable(rw.name(f"{base}/beta"), dtype=np.float32, shape=[])
        rw.add(
            ir.make_node(
                "DequantizeLinear",
                [ir.make_constant(rw.name(f"{base}/beta_quantized"), b_q), ir.make_constant(rw.name(f"{base}/beta_scale"), b_s),
                 ir.make_constant(rw.name(f"{base}/beta_zero_point"), b_z)],
                [offset],
                name=rw.name(f"{base}/beta_DequantizeLinear"),
            )
        )  # fmt: skip
        add = rw.add(ir.make_node("Add", [scaled, offset], [], name=rw.name(f"{base}/as_add")))
        rw.take_output(node, add)
        rw.remove(node)


class _RequantizeBeforeSubgraph(Rule):
    """``DQ(s, z) → op → (read by a subgraph)`` ⇒ ``DQ → op → Q(s, z) → DQ(s, z)`` (module docstring)."""

    name = "requantize-before-subgraph"
    ops = _PROPAGATED_OPS

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        if not node.inputs or not node.outputs or not node.inputs[0].name:
            return None
        dq = ir.producer(node.inputs[0])
        if dq is None or dq.op != "DequantizeLinear" or ir.is_constant(dq.inputs[0]):
            return None
        if not any(id(reader) not in rw.local for reader in node.outputs[0].outputs):
            return None  # no subgraph reads it
        params = _params(dq)
        return params if isinstance(params, str) else Match([node], {"dq": dq})

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        node, dq = match.anchor, match.values["dq"]
        base = node.name or node.op
        shape = node.outputs[0].shape
        computed = ir.make_variable(rw.name(f"{base}/float"), dtype=np.float32, shape=shape)
        quantized = ir.make_variable(rw.name(f"{base}/requantized"), dtype=dq.inputs[0].dtype, shape=shape)
        scale, zero_point = dq.inputs[1], dq.inputs[2]
        rw.add(ir.make_node("QuantizeLinear", [computed, scale, zero_point], [quantized], name=rw.name(f"{base}/QuantizeLinear")))
        back = rw.add(ir.make_node("DequantizeLinear", [quantized, scale, zero_point], [], name=rw.name(f"{base}/DequantizeLinear")))
        rw.take_output(node, back)
        node.outputs[0] = computed


def _exact_scalar(value: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An 8-bit scalar ``(q, scale, zero_point)`` whose dequantized value is exactly ``value``."""
    scale = np.asarray(abs(value) if value != 0 else 1.0, np.float32)
    if value == 0:
        q, z = 0, 0
    elif dtype == np.uint8:
        q, z = (1, 0) if value > 0 else (0, 1)
    else:
        q, z = (1 if value > 0 else -1), 0
    return np.asarray(q, dtype), scale, np.asarray(z, dtype)


class _RequantizeChain(Rule):
    """``x → Q1 → DQ1 → Q2`` ⇒ ``x → Q2`` (or Q1's output when the parameters are the same)."""

    name = "requantize-chain"
    ops = ("QuantizeLinear",)

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        dq1 = ir.producer(node.inputs[0])
        q1 = ir.producer(dq1.inputs[0]) if dq1 is not None and dq1.op == "DequantizeLinear" else None
        if dq1 is None or q1 is None or q1.op != "QuantizeLinear":
            return None
        p1, pd, p2 = _params(q1), _params(dq1), _params(node)
        for p in (p1, pd, p2):
            if isinstance(p, str):
                return p
        assert isinstance(p1, _Params) and isinstance(pd, _Params) and isinstance(p2, _Params)
        if p1 != pd:
            return "the DequantizeLinear does not invert the QuantizeLinear before it"
        if p1 == p2:
            return Match([node], {"same": q1.outputs[0]})
        (lo1, hi1), (lo2, hi2) = p1.grid, p2.grid
        if lo1 > lo2 + p1.scale / 2 or hi1 < hi2 - p1.scale / 2:
            return f"Q1's grid [{lo1:.4g}, {hi1:.4g}] does not cover Q2's [{lo2:.4g}, {hi2:.4g}]: its clipping would be lost"
        return Match([node], {"source": q1.inputs[0]})

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        node = match.anchor
        if "same" in match.values:
            rw.replace_uses(node.outputs[0], match.values["same"])
            rw.remove(node)
        else:
            node.inputs[0] = match.values["source"]


def _float_constant(t: Tensor) -> bool:
    value = ir.constant_array(t)
    return value is not None and value.dtype.kind == "f" and value.size > 0


def _never_int8(node: Node) -> bool:
    """Whether onnxruntime certainly runs ``node`` in float: no int8 kernel for its op, or an Add/Mul
    with a float constant operand (its binary QDQ selector wants both operands dequantized)."""
    if (node.domain or "") not in ("", "ai.onnx") or node.op in ("QuantizeLinear", "DequantizeLinear"):
        return False
    if node.op not in ORT_INT8_OPS:
        return True
    return node.op in ("Add", "Mul") and any(_float_constant(t) for t in node.inputs)


class _BypassFloatReader(Rule):
    """``t → Q → DQ → float reader`` ⇒ the reader reads ``t`` (``t`` from a float op or a graph input)."""

    name = "bypass-float-reader"
    ops = ("DequantizeLinear",)

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        q = ir.producer(node.inputs[0])
        if q is None or q.op != "QuantizeLinear":
            return None
        t = q.inputs[0]
        src = ir.producer(t)
        # An int8 producer fuses with its Q only while the Q is its sole reader: keep it that way.
        if src is not None and (src.op in ORT_INT8_OPS or (src.domain or "") not in ("", "ai.onnx")):
            return None
        if ir.is_graph_output(rw.graph, node.outputs[0]):
            return None
        # HardSigmoid is left to hardsigmoid-add, which makes it int8 rather than float.
        readers = [r for r in node.outputs[0].outputs if r.op != "HardSigmoid" and _never_int8(r)]
        if not readers:
            return None
        return Match([node, *readers], {"t": t, "readers": readers})

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        old, t = match.anchor.outputs[0], match.values["t"]
        for reader in match.values["readers"]:
            for i, x in enumerate(reader.inputs):
                if x is old:
                    reader.inputs[i] = t


class _FoldWeightDQ(Rule):
    """``DQ(constant) → op`` with no int8 kernel for ``op``: store the constant dequantized."""

    name = "fold-weight-dq"
    ops = ("DequantizeLinear",)

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        q = ir.constant_array(node.inputs[0])
        readers = list(node.outputs[0].outputs)
        if q is None or not readers or ir.is_graph_output(rw.graph, node.outputs[0]):
            return None
        if any(r.op in ORT_INT8_OPS or (r.domain or "") not in ("", "ai.onnx") for r in readers):
            return None
        s = ir.constant_array(node.inputs[1])
        z = ir.constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else np.zeros((), q.dtype)
        if s is None or z is None:
            return "non-constant quantization parameters"
        axis = int(node.attrs.get("axis", 1))
        if "block_size" in node.attrs:
            return "block-wise DequantizeLinear"
        return Match([node], {"value": _dequantize(q, np.asarray(s), np.asarray(z), axis)})

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        node = match.anchor
        out = node.outputs[0]
        const = ir.make_constant(rw.name(f"{out.name}/folded"), match.values["value"])
        rw.replace_uses(out, const)
        rw.remove(node)


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """``scale · (q − zero_point)`` in float32, per tensor or along ``axis``."""
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape) if zero_point.size > 1 else zero_point
    return (scale.astype(np.float32) * (q.astype(np.float32) - zero_point.astype(np.float32))).astype(np.float32)


_RULES: dict[str, type[Rule]] = {
    "hardsigmoid-add": _HardSigmoidAdd,
    "requantize-chain": _RequantizeChain,
    "bypass-float-reader": _BypassFloatReader,
    "fold-weight-dq": _FoldWeightDQ,
    "requantize-before-subgraph": _RequantizeBeforeSubgraph,
}


@register_pass("close-float-islands")
class CloseFloatIslands(RewritePass[CloseFloatIslandsConfig]):
    """Rewrite float islands of a QDQ graph into forms onnxruntime runs in int8 (see the module docstring)."""

    counter = "closed"
    rounds = 2  # a folded chain can expose another

    def rules(self) -> Sequence[Rule]:
        return [_RULES[name]() for name in RULES if name in self.config.rules]

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        before = len(float_islands(model))
        result = super().run(model, ctx)
        result.stats.update(islands_before=before, islands_after=len(float_islands(model)))
        return result


def close_islands(model: Model, rules: Sequence[str] = RULES) -> dict[str, int]:
    """Apply the rules to ``model`` in place outside a pipeline (dead Q/DQ removed, nodes re-sorted); returns the stats.

    For passes that build and time candidate QDQ graphs themselves (latency tuning): they then
    measure the graph the pipeline will ship, islands closed.
    """
    result = CloseFloatIslands(CloseFloatIslandsConfig(tuple(rules))).run(model, PassContext())
    ir.remove_dead_nodes(model.graph)
    ir.toposort(model.graph)
    return result.stats
