"""``quantize-dynamic``: int8 weights ahead of time, activations quantized per run.

Rewrites (weights int8 symmetric, per output channel by default):

- ``MatMul(A, W[K, N])`` [+ ``Add(bias[N])``]  →  ``com.microsoft.DynamicQuantizeMatMul(A, W_q, s_w, 0, bias)``
  (``format="fused"``), or the standard-ops form ``DynamicQuantizeLinear(A) → MatMulInteger →
  Cast → Mul(s_a · s_w) [→ Add]`` (``format="standard"``, portable to any ONNX runtime);
- ``Gemm(A, B, C)`` with ``alpha = beta = 1`` and 2-D ``A``: the same with ``B`` transposed if
  ``transB``;
- ``LSTM(X, W, R, B, ...)``  →  ``com.microsoft.DynamicQuantizeLSTM`` with ``W``/``R`` transposed to
  ``[dirs, in, 4H]`` / ``[dirs, H, 4H]`` and per-direction (or per-gate-row) scales.

What stays float, with a reason in stats: Conv (onnxruntime's u8s8 ConvInteger path is slower than
float convolution on CPU, and the incumbent's ConvInteger output made a CNN+LSTM 0.58x as fast),
GRU/RNN (no dynamic kernel), MatMul of two activations (attention scores), and projections too
small to amortize the per-run quantization (``min_weight_elements``). Softmax and LayerNorm are
never touched. A weight shared by several nodes is quantized once, wherever its readers are: nodes
inside If branches and Loop/Scan bodies are rewritten in their own graph, and an outer-scope weight
read by both branches of an If becomes one int8 constant both replacements read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from onnxq import ir
from onnxq.calibration.qparams import compute_qparams_array
from onnxq.errors import ConfigError
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.runtime.kernels import resolve_reduce_range

__all__ = ["QuantizeDynamic", "QuantizeDynamicConfig", "DynamicRewriter", "plan_dynamic_matmul", "quantize_weight_int8"]

MS = "com.microsoft"


@dataclass(frozen=True)
class QuantizeDynamicConfig(PassConfig):
    """Options of ``quantize-dynamic``.

    Attributes:
        per_channel: one scale per output column (rows of a transposed Gemm weight, gates of LSTM).
        format: ``fused`` (com.microsoft.DynamicQuantizeMatMul, fastest on onnxruntime CPU) or
            ``standard`` (DynamicQuantizeLinear + MatMulInteger + Mul: ONNX standard ops only).
        op_types: ops to quantize (MatMul, Gemm, LSTM).
        exclude_nodes: node-name regexes kept float.
        min_weight_elements: weights smaller than this stay float (quantizing the activation each
            run costs more than a tiny int8 product saves).
        reduce_range: 7-bit weights; None: on where this CPU's u8·s8 kernel saturates (measured).
        guard_latency: with sample inputs available (calibration data), time the float and the
            quantized model on onnxruntime (interleaved, ``threads`` threads) and keep the float
            model when dynamic quantization is not faster.
    """

    per_channel: bool = True
    format: Literal["fused", "standard"] = "fused"
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "LSTM")
    exclude_nodes: tuple[str, ...] = ()
    min_weight_elements: int = 4096
    reduce_range: bool | None = None
    guard_latency: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.op_types) - {"MatMul", "Gemm", "LSTM"})
        if unknown:
            raise ConfigError(f"quantize-dynamic: op_types {unknown} not supported; valid: MatMul, Gemm, LSTM")
        if self.min_weight_elements < 0:
            raise ConfigError("quantize-dynamic: min_weight_elements must be >= 0")


def quantize_weight_int8(w: np.ndarray, axis: int | None, reduce_range: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of ``w`` per ``axis`` (or per tensor): (int8 values, float32 scales)."""
    if axis is None:
        lo, hi = np.asarray([w.min()]), np.asarray([w.max()])
    else:
        other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        lo, hi = w.min(axis=other), w.max(axis=other)
    scale, _ = compute_qparams_array(lo, hi, "int8", True, reduce_range)
    scale = np.asarray(scale, np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis % w.ndim] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, (scale if axis is not None else scale.reshape(()))


def _latency_verdict(before: Model, after: Model, ctx: PassContext, threads: int) -> dict:
    """Interleaved timing of the float and quantized models on the first calibration sample."""
    from onnxq.runtime.bench import bench_models

    from .tune_latency import _first_sample

    feeds = _first_sample(ctx.calibration_data)
    if feeds is None:
        ctx.note("latency guard skipped: no sample inputs (give --data)")
        return {"skipped": "no sample inputs"}
    ir.normalize(after)  # new nodes were appended: restore topological order before timing
    t_float, t_quant = bench_models([before, after], feeds, threads=threads, runs=15, warmup=3)
    return {"float_ms": round(t_float.median_ms, 4), "quantized_ms": round(t_quant.median_ms, 4), "slower": t_quant.median_ms >= t_float.median_ms}


def _excluded(node: Node, cfg: QuantizeDynamicConfig) -> bool:
    return any(re.fullmatch(p, node.name or "") for p in cfg.exclude_nodes)


def _bias_add(graph: Graph, out: Tensor, n: int) -> tuple[Node, np.ndarray] | None:
    """An ``Add(out, bias[N])`` that is ``out``'s only reader (folded into the quantized op)."""
    add = ir.only_consumer(graph, out)
    if add is None or add.op != "Add" or len(add.inputs) != 2:
        return None
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    b = ir.constant_array(other)
    if b is None or b.dtype != np.float32 or b.size != n or b.shape[-1:] != (n,) or any(d != 1 for d in b.shape[:-1]):
        return None
    return add, b.reshape(-1)


def _identity(t: Tensor) -> str:
    """Which weight a constant is: its name (unique across scopes in ONNX; a copied graph holds one
    object per body for an outer weight only bodies read, so object identity would split it)."""
    return t.name or str(id(t))


class DynamicRewriter:
    def __init__(self, model: Model, cfg: QuantizeDynamicConfig) -> None:
        self.model = model
        self.cfg = cfg
        # Dynamic quantization always feeds uint8 activations to the int8 weight GEMM.
        self.reduce_range, self.reduce_range_note = resolve_reduce_range(cfg.reduce_range, "uint8", "int8")
        self.namer = ir.names(model)
        self.cache: dict[tuple[str, bool], tuple[Tensor, Tensor, Tensor]] = {}
        self.lstm_cache: dict[tuple[str, str], list[Tensor]] = {}
        self.counts: dict[str, int] = {}

    def weight(self, w_tensor: Tensor, transpose: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Quantized weight [K, N], scales [N] (or scalar) and int8 zero points, cached per tensor."""
        key = (_identity(w_tensor), transpose)
        if key not in self.cache:
            w = np.asarray(ir.const_value(w_tensor), np.float32)
            w = w.T if transpose else w
            q, s = quantize_weight_int8(w, 1 if self.cfg.per_channel else None, self.reduce_range)
            zp = np.zeros(s.shape, np.int8)
            base = w_tensor.name
            self.cache[key] = (
                ir.make_constant(self.namer.new(f"{base}_quantized"), q),
                ir.make_constant(self.namer.new(f"{base}_scale"), s),
                ir.make_constant(self.namer.new(f"{base}_zero_point"), zp),
            )
        return self.cache[key]

    def matmul(self, graph: Graph, node: Node, a: Tensor, w_tensor: Tensor, transpose: bool, bias: np.ndarray | None, out: Tensor, doomed: list[Node]) -> None:
        q, s, zp = self.weight(w_tensor, transpose)
        bias_t = ir.make_constant(self.namer.new(f"{node.name}/bias"), bias.astype(np.float32)) if bias is not None else None
        if self.cfg.format == "fused":
            inputs = [a, q, s, zp] + ([bias_t] if bias_t is not None else [])
            new = [ir.make_node("DynamicQuantizeMatMul", inputs, [out], name=self.namer.new(f"{node.name}/DynamicQuantizeMatMul"), domain=MS)]
            self.model.set_opset(MS, 1)
        else:
            new = self._standard(node, a, q, s, zp, bias_t, out)
        for n in doomed:
            n.outputs.clear()
        graph.nodes.extend(new)
        self.counts[node.op] = self.counts.get(node.op, 0) + 1

    def _standard(self, node: Node, a: Tensor, q: Tensor, s: Tensor, zp: Tensor, bias: Tensor | None, out: Tensor) -> list[Node]:
        """DynamicQuantizeLinear → MatMulInteger → Cast → Mul(s_a · s_w) [→ Add bias] (standard ops)."""
        v = lambda tag, dtype=None: ir.make_variable(self.namer.new(f"{node.name}/{tag}"), dtype=dtype)  # noqa: E731
        a_q, a_s, a_zp = v("a_quantized", np.uint8), v("a_scale", np.float32), v("a_zero_point", np.uint8)
        acc, acc_f, scale, scaled = v("int32", np.int32), v("float"), v("scale", np.float32), v("scaled", np.float32)
        nodes = [
            ir.make_node("DynamicQuantizeLinear", [a], [a_q, a_s, a_zp], name=self.namer.new(f"{node.name}/DynamicQuantizeLinear")),
            ir.make_node("MatMulInteger", [a_q, q, a_zp, zp], [acc], name=self.namer.new(f"{node.name}/MatMulInteger")),
            ir.make_node("Cast", [acc], [acc_f], name=self.namer.new(f"{node.name}/Cast"), attrs={"to": 1}),
            ir.make_node("Mul", [a_s, s], [scale], name=self.namer.new(f"{node.name}/scales")),
        ]
        if bias is None:
            nodes.append(ir.make_node("Mul", [acc_f, scale], [out], name=self.namer.new(f"{node.name}/rescale")))
        else:
            nodes.append(ir.make_node("Mul", [acc_f, scale], [scaled], name=self.namer.new(f"{node.name}/rescale")))
            nodes.append(ir.make_node("Add", [scaled, bias], [out], name=self.namer.new(f"{node.name}/bias_add")))
        return nodes

    def lstm(self, graph: Graph, node: Node) -> str | None:
        w, r = ir.constant_array(node.inputs[1]), ir.constant_array(node.inputs[2])
        if w is None or r is None or w.ndim != 3 or r.ndim != 3:
            return "W/R are not constant 3-D weights"
        if node.attrs.get("layout", 0):
            return "layout=1 is not supported by DynamicQuantizeLSTM"
        base = node.name or "lstm"
        key = (_identity(node.inputs[1]), _identity(node.inputs[2]))
        if key not in self.lstm_cache:  # W/R shared by several LSTMs (e.g. both branches of an If)
            axis = 1 if self.cfg.per_channel else None
            wq, ws = self._per_direction(w, axis)
            rq, rs = self._per_direction(r, axis)
            c = lambda tag, arr: ir.make_constant(self.namer.new(f"{base}/{tag}"), arr)  # noqa: E731
            zeros = lambda s: np.zeros(s.shape, np.int8)  # noqa: E731
            self.lstm_cache[key] = [
                c("W_quantized", wq), c("R_quantized", rq), c("W_scale", ws), c("W_zero_point", zeros(ws)), c("R_scale", rs), c("R_zero_point", zeros(rs))
            ]
        wq_t, rq_t, *scales = self.lstm_cache[key]
        optional = [node.inputs[i] if i < len(node.inputs) else ir.make_variable("") for i in range(3, 8)]
        inputs = [node.inputs[0], wq_t, rq_t, *optional, *scales]
        outputs = list(node.outputs)
        node.outputs.clear()
        attrs = {k: v for k, v in node.attrs.items() if k != "layout"}
        graph.nodes.append(ir.make_node("DynamicQuantizeLSTM", inputs, outputs, name=self.namer.new(f"{base}/DynamicQuantizeLSTM"), attrs=attrs, domain=MS))
        self.model.set_opset(MS, 1)
        self.counts["LSTM"] = self.counts.get("LSTM", 0) + 1
        return None

    def _per_direction(self, w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
        """[dirs, 4H, in] → int8 [dirs, in, 4H] and scales [dirs] or [dirs, 4H]."""
        qs, ss = [], []
        for d in range(w.shape[0]):
            q, s = quantize_weight_int8(w[d], 0 if axis is not None else None, self.reduce_range)
            qs.append(q.T)
            ss.append(s)
        return np.stack(qs), np.stack(ss).astype(np.float32)


def plan_dynamic_matmul(graph: Graph, node: Node, cfg: QuantizeDynamicConfig) -> tuple[Tensor, Tensor, bool, np.ndarray | None, Tensor, list[Node]] | str:
    """(activation, weight tensor, transpose, bias, output, nodes replaced) or the reason to skip."""
    if node.op == "MatMul":
        a, w_t = node.inputs[0], node.inputs[1]
        w = ir.constant_array(w_t)
        if w is None:
            return "activation × activation MatMul (no constant weight)"
        if w.ndim != 2 or w.dtype != np.float32:
            return "weight is not a 2-D float32 constant"
        transpose = False
        bias = None
        out = node.outputs[0]
        replaced = [node]
        folded = _bias_add(graph, out, w.shape[1])
        if folded is not None:
            add, bias = folded
            out = add.outputs[0]
            replaced.append(add)
        return a, w_t, transpose, bias, out, replaced
    # Gemm
    a, w_t = node.inputs[0], node.inputs[1]
    w = ir.constant_array(w_t)
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return "weight is not a 2-D float32 constant"
    if node.attrs.get("transA", 0) or float(node.attrs.get("alpha", 1.0)) != 1.0 or float(node.attrs.get("beta", 1.0)) != 1.0:
        return "transA/alpha/beta other than the defaults"
    transpose = bool(node.attrs.get("transB", 0))
    n = w.shape[0] if transpose else w.shape[1]
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = ir.constant_array(node.inputs[2])
        if c is None or c.size != n:
            return "C is not a per-output constant bias"
        bias = c.reshape(-1).astype(np.float32)
    return a, w_t, transpose, bias, node.outputs[0], [node]


@register_pass("quantize-dynamic")
class QuantizeDynamic(Pass[QuantizeDynamicConfig]):
    """Dynamic int8 quantization of MatMul/Gemm/LSTM weights (activations quantized at run time)."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxq.inspect import QUANT_OPS

        before = ir.clone(model) if self.config.guard_latency else None
        rw = DynamicRewriter(model, self.config)
        skipped = 0
        for graph in ir.iter_graphs(model.graph):
            for node in list(graph.nodes):
                if not node.outputs:
                    continue
                reason = "already quantized" if node.op in QUANT_OPS else self._node(rw, graph, node)
                if reason:
                    ctx.skip(node.name or node.op, node.op, reason)
                    skipped += 1
        total = sum(rw.counts.values())
        if total and rw.reduce_range_note:
            ctx.note(rw.reduce_range_note)
        stats: dict[str, Any] = {
            "quantized": total,
            **{f"quantized.{k}": v for k, v in sorted(rw.counts.items())},
            "skipped": skipped,
            "format": self.config.format,
        }
        if total and before is not None:
            verdict = _latency_verdict(before, model, ctx, self.config.threads)
            stats["latency"] = verdict
            if verdict.get("slower"):
                note = f"dynamic quantization measured slower than float ({verdict['quantized_ms']:.3f} ms vs {verdict['float_ms']:.3f} ms): kept float"
                ctx.note(note)
                return PassResult(before, False, {**stats, "quantized": 0, "reverted": note})
        return PassResult(model, total > 0, stats)

    def _node(self, rw: DynamicRewriter, graph: Graph, node: Node) -> str | None:
        cfg = self.config
        if node.op in ("Conv", "ConvTranspose"):
            return "dynamic mode keeps Conv float (ConvInteger is slower than float Conv on onnxruntime CPU); use static mode for CNNs"
        if node.op in ("GRU", "RNN"):
            return f"onnxruntime has no dynamically quantized {node.op} kernel"
        if node.op not in cfg.op_types or (node.domain or ""):
            return None
        if _excluded(node, cfg):
            return "excluded by the user"
        if node.op == "LSTM":
            return rw.lstm(graph, node)
        plan = plan_dynamic_matmul(graph, node, cfg)
        if isinstance(plan, str):
            return plan
        a, w_t, transpose, bias, out, replaced = plan
        if ir.constant_array(w_t).size < cfg.min_weight_elements:  # type: ignore[union-attr]
            return f"weight has fewer than {cfg.min_weight_elements} elements (per-run activation quantization would cost more)"
        rw.matmul(graph, node, a, w_t, transpose, bias, out, replaced)
        return None
