"""``insert-qdq``: materialize the quantization plan as QuantizeLinear/DequantizeLinear pairs.

For an activation ``t`` with scale ``s`` and zero point ``z``::

    t → QuantizeLinear(s, z) → t_q → DequantizeLinear(s, z) → t_dq → (every reader of t)

A graph output keeps its name on ``t_dq``. Tensors in one share group get the parameters of the
union of their ranges. Weights are stored already quantized: ``W_q = round(W / s_w)`` as an int8
initializer feeding ``DequantizeLinear(W_q, s_w, 0, axis)``. Biases are int32 with
``s_b = s_x · s_w`` and zero point 0; when ``|b / s_b|`` would overflow int32 the weight scale of
that channel is raised to ``|b| / (s_x · (2^31 - 1))`` (vectorized, reported in stats). With the
plan's ``power_of_two`` every scale is rounded up to ``2^-k`` (:mod:`onnxq.calibration.qparams`,
rule 7), a raised weight scale too, so bias scales ``s_x · s_w`` are powers of two as well.

Subgraphs (If branches, Loop/Scan bodies): Q/DQ nodes live in the graph that computes ``t`` (a body
tensor is quantized inside its body, a body output keeps its name on a ``t_dq`` computed there, so
it never becomes an outer value returned directly); a reader inside a body nested in that graph gets
its own ``DequantizeLinear(t_q)`` inside its body, so onnxruntime (which fuses ``DQ → op → Q`` one
graph at a time) and ``convert-qlinear`` find the pattern next to the op. A weight is quantized once
per set of parameters however many nodes, in however many graphs, read it; each reader gets its own
``DequantizeLinear`` in its own graph (onnxruntime fuses a weight's DQ only into a sole reader).

Opset: per-channel ``axis`` needs opset 13, 16-bit types opset 21; the pass refuses older opsets
with a clear precondition error (``onnxq convert`` upgrades the opset first).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.calibration.qparams import compute_qparams, compute_qparams_array, power_of_two_ceil, quantize
from onnxq.calibration.ranges import TensorRange
from onnxq.errors import PreconditionError
from onnxq.ir import Graph, Model, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass
from onnxq.plan import QuantPlan, WeightQuant

__all__ = ["InsertQDQ", "activation_qparams", "materialize", "guard_bias_overflow", "INT32_MAX"]

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
_NP = {"uint8": np.uint8, "int8": np.int8, "uint16": np.uint16, "int16": np.int16, "int32": np.int32}


@dataclass
class _QParams:
    scale: np.ndarray  # float32, scalar or per channel
    zero_point: np.ndarray  # typed
    axis: int | None = None


def activation_qparams(plan: QuantPlan, ranges: Mapping[str, TensorRange]) -> dict[str, _QParams]:
    """Scale/zero point of every planned activation (share groups use the union of their ranges)."""
    out: dict[str, _QParams] = {}
    for members in plan.groups.values():
        tqs = [plan.activations[m] for m in members]
        fixed = [tq.fixed for tq in tqs if tq.fixed is not None]
        if fixed:
            lo, hi = min(f[0] for f in fixed), max(f[1] for f in fixed)
            for m in members:
                if m in ranges and not plan.activations[m].fixed:
                    lo, hi = min(lo, ranges[m].min), max(hi, ranges[m].max)
        else:
            lo = min(ranges[m].min for m in members)
            hi = max(ranges[m].max for m in members)
        tq = tqs[0]
        if len(tqs) == 1 and tq.clamp is not None:
            lo, hi = max(lo, tq.clamp[0]), min(hi, tq.clamp[1])
        scale, zp = compute_qparams(lo, hi, tq.dtype, tq.symmetric, power_of_two=plan.power_of_two)
        qp = _QParams(np.asarray(scale, np.float32), np.asarray(zp, _NP[tq.dtype]))
        for m in members:
            out[m] = qp
    return out


def _weight_qparams(values: np.ndarray, wq: WeightQuant, power_of_two: bool = False) -> _QParams:
    if wq.axis is None:
        scale, zp = compute_qparams(float(values.min()), float(values.max()), wq.dtype, wq.symmetric, wq.reduce_range, power_of_two)
        return _QParams(np.asarray(scale, np.float32), np.asarray(zp, _NP[wq.dtype]))
    axis = wq.axis % values.ndim
    other = tuple(i for i in range(values.ndim) if i != axis)
    scales, zps = compute_qparams_array(values.min(axis=other), values.max(axis=other), wq.dtype, wq.symmetric, wq.reduce_range, power_of_two)
    return _QParams(np.asarray(scales, np.float32), np.asarray(zps).astype(_NP[wq.dtype]), axis)


def guard_bias_overflow(bias: np.ndarray, s_x: float, s_w: np.ndarray) -> tuple[np.ndarray, int]:
    """Weight scales (per bias element) large enough for ``bias / (s_x · s_w)`` to fit in int32.

    Returns the (possibly raised) scales and how many channels had to be raised.
    """
    s_w = np.broadcast_to(np.asarray(s_w, np.float64), bias.shape).copy()
    need = np.abs(bias.astype(np.float64)) / (s_x * INT32_MAX)
    overflow = need > s_w
    s_w[overflow] = need[overflow] * (1 + 1e-6)
    return s_w, int(np.count_nonzero(overflow))


class _Materializer:
    """Edits one model according to a plan (holds the name generator and shared constants)."""

    def __init__(self, model: Model, plan: QuantPlan, ranges: Mapping[str, TensorRange]) -> None:
        self.model = model
        self.plan = plan
        self.namer = ir.names(model)
        self.act = activation_qparams(plan, ranges)
        self.node_of = {n.name: n for n in ir.iter_nodes(model.graph)}
        self.graph_of = ir.node_graph_index(model.graph)
        self.stats = {"activations": 0, "weights": 0, "biases": 0, "bias_overflow_channels": 0}
        self._consts: dict[tuple, Tensor] = {}
        #: (float constant's name, parameters) → its quantized value, scale and zero point
        self._stored: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def const(self, base: str, values: np.ndarray) -> Tensor:
        """A constant, shared between Q/DQ pairs that use the same value."""
        key = (values.dtype.str, values.shape, values.tobytes())
        if key not in self._consts:
            self._consts[key] = ir.make_constant(self.namer.new(base), values)
        return self._consts[key]

    def owner_graph(self, t: Tensor) -> Graph:
        producer = ir.producer(t)
        if producer is not None:
            return self.graph_of[id(producer)]
        for g in ir.iter_graphs(self.model.graph):
            if any(x is t for x in g.inputs):
                return g
        return self.model.graph

    def weight_values(self, wq: WeightQuant) -> np.ndarray:
        return np.asarray(ir.const_value(self.node_of[wq.node].inputs[wq.index]), np.float32)

    def constant_qparams(self) -> dict[tuple[str, int], _QParams]:
        """Weight qparams, then bias qparams derived from them (raising weight scales on overflow)."""
        pow2 = self.plan.power_of_two
        qps = {(wq.node, wq.index): _weight_qparams(self.weight_values(wq), wq, pow2) for wq in self.plan.weights if wq.kind == "weight"}
        for wq in self.plan.weights:
            if wq.kind != "bias":
                continue
            act_name, w_index = wq.derived_from  # type: ignore[misc]
            s_x = float(self.act[act_name].scale)
            wqp = qps[(wq.node, w_index)]
            bias = self.weight_values(wq).reshape(-1)
            s_w, raised = guard_bias_overflow(bias, s_x, wqp.scale)
            if raised and pow2:
                s_w = power_of_two_ceil(s_w)
            if raised:
                self.stats["bias_overflow_channels"] += raised
                log.info("%s: raised %d weight scale(s) so the int32 bias fits", wq.node, raised)
                qps[(wq.node, w_index)] = _QParams((s_w if wqp.axis is not None else np.asarray(s_w.max())).astype(np.float32), wqp.zero_point, wqp.axis)
            s_b = s_x * np.asarray(qps[(wq.node, w_index)].scale, np.float64)
            if wq.axis is None:
                s_b = np.asarray(float(np.max(s_b)))
            qps[(wq.node, wq.index)] = _QParams(s_b.astype(np.float32), np.zeros(s_b.shape, np.int32), wq.axis)
        return qps

    def quantize_activation(self, t: Tensor, qp: _QParams) -> None:
        graph = self.owner_graph(t)
        scale = self.const(f"{t.name}/scale", qp.scale)
        zp = self.const(f"{t.name}/zero_point", qp.zero_point)
        readers = list(t.outputs)
        q_out = ir.make_variable(self.namer.new(f"{t.name}/q"), dtype=qp.zero_point.dtype, shape=t.shape)
        dq_out = ir.make_variable(self.namer.new(f"{t.name}/dq"), dtype=t.dtype, shape=t.shape)
        if ir.is_graph_output(graph, t) and not ir.is_graph_input(graph, t):
            # The graph output keeps its name, now on the dequantized tensor computed in its graph
            # (an input passed straight through stays as it is: inputs are bound by name).
            dq_out.name, t.name = t.name, self.namer.new(f"{t.name}/float")
            for i, o in enumerate(graph.outputs):
                if o is t:
                    graph.outputs[i] = dq_out
        q = ir.make_node("QuantizeLinear", [t, scale, zp], [q_out], name=self.namer.new(f"{t.name}/QuantizeLinear"))
        graph.nodes.extend([q, self._dequantize(q_out, scale, zp, dq_out)])
        local = {id(graph): dq_out}
        for reader in readers:
            where = self.graph_of.get(id(reader), graph)
            if id(where) not in local:  # a reader in a body: its own DQ next to it
                local[id(where)] = ir.make_variable(self.namer.new(f"{dq_out.name}/dq"), dtype=t.dtype, shape=t.shape)
                where.nodes.append(self._dequantize(q_out, scale, zp, local[id(where)]))
            for i, x in enumerate(reader.inputs):
                if x is t:
                    reader.inputs[i] = local[id(where)]
        self.stats["activations"] += 1

    def _dequantize(self, q: Tensor, scale: Tensor, zp: Tensor, out: Tensor) -> ir.Node:
        return ir.make_node("DequantizeLinear", [q, scale, zp], [out], name=self.namer.new(f"{out.name}/DequantizeLinear"))

    def store_constant(self, wq: WeightQuant, qp: _QParams) -> None:
        """Replace a float constant input by ``DequantizeLinear(quantized constant)``."""
        node = self.node_of[wq.node]
        base = f"{node.name}/{'B' if wq.kind == 'bias' else 'W'}{wq.index}"
        # By name: ONNX names are unique across scopes, while a copied graph holds one object per body
        # for an outer constant that only bodies read. The main graph and the bodies get separate
        # copies: a DequantizeLinear in a body reading a quantized weight stored in the main graph
        # makes onnxruntime 1.32 refuse the model when it fuses DQ -> MatMul into MatMulNBits
        # (16-bit activations: "Missing required weight", it looks in the body only; found by
        # tests/fuzz). A constant only bodies read is written into each body that reads it.
        weight = node.inputs[wq.index]
        graph = self.graph_of[id(node)]
        scope = "main" if graph is self.model.graph else "bodies"
        key = (weight.name or str(id(weight)), scope, wq.kind, wq.dtype, qp.axis, qp.scale.tobytes(), qp.zero_point.tobytes())
        if key not in self._stored:
            values = self.weight_values(wq)
            if wq.kind == "bias":
                q = np.clip(np.round(values.astype(np.float64) / np.asarray(qp.scale, np.float64)), -INT32_MAX, INT32_MAX).astype(np.int32)
                self.stats["biases"] += 1
            else:
                q = quantize(values, qp.scale, qp.zero_point, wq.dtype, axis=qp.axis)
                self.stats["weights"] += 1
            self._stored[key] = (
                ir.make_constant(self.namer.new(f"{base}_quantized"), q),
                ir.make_constant(self.namer.new(f"{base}_scale"), qp.scale),
                ir.make_constant(self.namer.new(f"{base}_zero_point"), qp.zero_point),
            )
        q_const, scale, zp = self._stored[key]
        out = ir.make_variable(self.namer.new(f"{base}_dequantized"), dtype=np.float32, shape=list(q_const.shape))
        attrs = {"axis": int(qp.axis)} if qp.axis is not None else {}
        graph.nodes.append(ir.make_node("DequantizeLinear", [q_const, scale, zp], [out], name=self.namer.new(f"{base}_DequantizeLinear"), attrs=attrs))
        node.inputs[wq.index] = out

    def run(self) -> dict:
        qps = self.constant_qparams()
        for wq in self.plan.weights:
            key = (wq.node, wq.index)
            qp = qps.get(key) or _weight_qparams(self.weight_values(wq), wq, self.plan.power_of_two)
            self.store_constant(wq, qp)
        tensors = {t.name: t for g in ir.iter_graphs(self.model.graph) for t in list(g.inputs) + [o for n in g.nodes for o in n.outputs]}
        for name in sorted(self.plan.activations):
            t = tensors.get(name)
            if t is not None:
                self.quantize_activation(t, self.act[name])
        return self.stats


@register_pass("insert-qdq")
class InsertQDQ(Pass[EmptyConfig]):
    """Materialize the quantization plan as QuantizeLinear/DequantizeLinear pairs (weights stored as int8).

    As the pass that makes the plan real, it records every node the final plan leaves float (with
    the plan's reason) as the run's skip records.
    """

    reads = ("plan", "ranges")

    def requires(self, model: Model) -> None:
        if model.opset < 10:
            raise PreconditionError(f"{model.source}: QuantizeLinear needs opset >= 10, model has {model.opset}; run upgrade-opset first")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan, ranges = ctx.plan, ctx.ranges
        if plan is None or ranges is None:
            raise PreconditionError("insert-qdq needs a quantization plan: run 'calibrate' and 'annotate-quantization' first")
        if model.opset < 13 and any(w.axis is not None for w in plan.weights):
            raise PreconditionError(
                f"{model.source}: per-channel DequantizeLinear(axis) needs opset >= 13, model has {model.opset}; "
                "run upgrade-opset target=13 or quantize per-tensor"
            )
        if any(tq.dtype in ("int16", "uint16") for tq in plan.activations.values()) and model.opset < 21:
            raise PreconditionError(f"{model.source}: 16-bit activations need opset >= 21, model has {model.opset}")
        stats = materialize(model, plan, ranges)
        for d in plan.float_nodes():
            ctx.skip(d.node, d.op, d.reason)
        return PassResult(model, bool(plan.activations or plan.weights), stats)


def materialize(model: Model, plan: QuantPlan, ranges: Mapping[str, TensorRange]) -> dict[str, int]:
    """Insert the plan's Q/DQ nodes into ``model`` in place; returns counters."""

    if not plan.activations and not plan.weights:
        return {"activations": 0, "weights": 0, "biases": 0}
    return _Materializer(model, plan, dict(ranges)).run()
