"""``quantize-weights-blockwise``: weight-only int4 / int8 quantization per block along the reduction axis.

For ``Y = A @ W`` with a constant ``W[K, N]`` (MatMul, or Gemm's ``B`` with ``transB`` undone), ``W``
is cut into blocks of ``block_size`` rows along ``K``; each block of each output column gets a scale
(and, asymmetric, a zero point): ``W'[k, n] = (q[k, n] - z[k // B, n]) * s[k // B, n]`` (the maths,
grids and the MSE clip search live in :mod:`._blockwise`). Activations stay float; only the weight
shrinks, about 8x for int4 (plus one scale per block).

Two encodings (``format``):

- ``matmulnbits``: onnxruntime's ``com.microsoft.MatMulNBits(A, B, scales[, zero_points][, bias])``
  with ``B`` uint8 ``[N, ceil(K/B), B*bits/8]`` (codes low-nibble first along K, K zero-padded to the
  block), ``scales [N, ceil(K/B)]`` in A's float type, zero points packed the same way as ``B`` per row
  (``[N, ceil(n_blocks*bits/8)]``) or omitted when symmetric (onnxruntime's default is then
  ``2^(bits-1)``, so codes are stored offset by it). ``accuracy_level`` 4 lets onnxruntime quantize
  A to int8 per block internally (fastest on x86 CPUs; level 0/1 keeps A in fp32). Gemm's ``alpha`` is
  folded into W and a constant ``beta * C`` becomes the bias input. Embedding ``Gather``\\ s become
  ``com.microsoft.GatherBlockQuantized`` (int4/uint4 or uint8 table, blocks along the hidden axis).
- ``qdq``: standard ONNX: ``DequantizeLinear(q, scale, zp, axis, block_size)`` (opset 21, int4/uint4/
  int8/uint8 initializers) feeding the unchanged MatMul / Gemm / Gather. ONNX defines a partial last
  block (``scale`` has ``ceil(K/B)`` rows), so K need not be a multiple of the block size. onnxruntime
  fuses DQ + MatMul into MatMulNBits at load time (with its own default accuracy level 4, session
  option ``session.qdq_matmulnbits_accuracy_level``); a DQ feeding Gather dequantizes the whole table
  on every run (onnxruntime never constant-folds DequantizeLinear).

**Algorithms** (``algorithm``): ``rtn`` rounds each block to nearest (optionally with the clip
search); with calibration data (:mod:`._weight_calibration`) ``gptq`` rounds row by row
along K, compensating each row's error on the rows left with the layer's input Hessian
``H = 2 E[x xᵀ]`` (:mod:`._gptq`); ``awq`` scales input channels by ``E|x|^α`` (``α`` searched on
sampled rows) before rounding, folding ``1 / s`` into the producer or a Mul (:mod:`._awq`). All three
emit the same encodings; Gather tables and nodes GPTQ/AWQ cannot serve are rounded to nearest.

A node is skipped, with its reason in the run's skip records (``ctx.skips``), when its weight is computed at run time
(activation × activation MatMul), is not a 2-D float32/float16 constant, is smaller than
``min_k`` x ``min_n`` (defaults 16 x 16: a layer that narrow — typically a classifier head — saves
nothing worth its accuracy risk), is named in ``exclude_names``, or when onnxruntime's CPU provider
has no kernel for the node we would emit (probed, never assumed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import ml_dtypes
import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError, PreconditionError
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.runtime.kernels import cpu_kernel_error

from ._blockwise import BlockQuant, from_blocks, pack_codes, quantize_blockwise
from ._weight_calibration import Calibrated, block_grid, calibrate_weights

__all__ = ["QuantizeWeightsBlockwise", "QuantizeWeightsBlockwiseConfig"]

#: Opset that introduced blocked DequantizeLinear and int4/uint4.
QDQ_OPSET = 21
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


@dataclass(frozen=True)
class QuantizeWeightsBlockwiseConfig(PassConfig):
    """Options of ``quantize-weights-blockwise``.

    Attributes:
        bits: 4 (int4/uint4) or 8.
        block_size: values per block along the reduction axis (a power of two, 16..256).
        symmetric: signed codes without zero points; default asymmetric (unsigned + zero points),
            as onnxruntime's own quantizer does.
        format: ``"matmulnbits"`` (onnxruntime contrib ops) or ``"qdq"`` (blocked DequantizeLinear,
            opset 21).
        accuracy_level: MatMulNBits' ``accuracy_level`` (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 A).
        scale_search: ``"none"`` (round to nearest) or ``"mse"`` (per-block clip-ratio search).
        search_min_ratio / search_steps: the ratio grid ``linspace(1, search_min_ratio, search_steps)``.
        include_gather: also quantize constant embedding tables read by ``Gather(axis=0)``.
        min_k / min_n: skip weights with fewer rows (reduction) / columns (outputs).
        exclude_names: node or weight names left in float.
        upgrade_opset: for ``format="qdq"`` on a model below opset 21, upgrade it first instead of
            raising :class:`PreconditionError`.
        algorithm: ``"rtn"``, ``"gptq"`` or ``"awq"`` (the last two read ``calibration_data``).
        samples / max_memory_mb: calibration samples read, and the MB of one sample's exposed
            inputs plus their statistics per pass over the data (GPTQ / AWQ).
        damp / act_order: GPTQ's dampening ``λ / mean(diag H)`` and processing by decreasing ``diag H``.
        sequential: GPTQ collects each layer's inputs with the layers before it already quantized
            (the paper's order; one pass over the data per wave of layers, four per transformer layer).
            Off by default: measured no better than the float model's inputs (one pass) on the builders.
        awq_grid / awq_rows: AWQ's ``α`` grid intervals over [0, 1] and rows sampled per input to judge it.
        seed: seeds AWQ's row sampling.
    """

    bits: Literal[4, 8] = 4
    block_size: Literal[16, 32, 64, 128, 256] = 32
    symmetric: bool = False
    format: Literal["matmulnbits", "qdq"] = "matmulnbits"
    accuracy_level: Literal[0, 1, 2, 3, 4] = 4
    scale_search: Literal["none", "mse"] = "none"
    search_min_ratio: float = 0.7
    search_steps: int = 20
    include_gather: bool = False
    min_k: int = 16
    min_n: int = 16
    exclude_names: tuple[str, ...] = ()
    upgrade_opset: bool = False
    algorithm: Literal["rtn", "gptq", "awq"] = "rtn"
    samples: int = 128
    max_memory_mb: float | None = 1024.0
    damp: float = 0.01
    act_order: bool = False
    sequential: bool = False
    awq_grid: int = 20
    awq_rows: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.search_min_ratio <= 1.0:
            raise ConfigError(f"quantize-weights-blockwise: search_min_ratio must be in (0, 1], got {self.search_min_ratio}")
        if self.search_steps < 1:
            raise ConfigError(f"quantize-weights-blockwise: search_steps must be >= 1, got {self.search_steps}")
        if self.min_k < 1 or self.min_n < 1:
            raise ConfigError(f"quantize-weights-blockwise: min_k and min_n must be >= 1, got {self.min_k}, {self.min_n}")
        if min(self.samples, self.awq_grid, self.awq_rows) < 1 or not 0 < self.damp < 1 or (self.max_memory_mb is not None and self.max_memory_mb <= 0):
            raise ConfigError(
                "quantize-weights-blockwise: samples, awq_grid and awq_rows must be >= 1, damp in (0, 1) and max_memory_mb > 0, got "
                f"{self.samples}, {self.awq_grid}, {self.awq_rows}, {self.damp}, {self.max_memory_mb}"
            )


@dataclass
class _Target:
    """One node to rewrite: the logical weight ``W[K, N]`` (reduction axis first) and how to wire it."""

    graph: Graph
    node: Node
    weight: Tensor
    w: np.ndarray  # [K, N] float (Gemm: transposed and alpha-scaled for matmulnbits)
    bias: np.ndarray | None = None  # Gemm's beta * C for MatMulNBits
    transposed: bool = False  # the stored weight is [N, K] (Gemm transB=1, Gather tables)


@dataclass
class _Stats:
    quantized: dict[str, int] = field(default_factory=dict)
    #: node label → (op, reason) for every MatMul/Gemm/Gather left float
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    sq_rtn: float = 0.0
    sq: float = 0.0
    elements: int = 0

    def add(self, bq: BlockQuant, original: np.ndarray, new_bytes: int) -> None:
        """Account one quantized weight (shared weights are quantized, and counted, once)."""
        self.bytes_before += original.nbytes
        self.bytes_after += new_bytes
        n = original.size
        self.sq_rtn += bq.mse_rtn * n
        self.sq += bq.mse * n
        self.elements += n

    def as_dict(self, search: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "quantized": sum(self.quantized.values()),
            "quantized_by_op": dict(self.quantized),
            "skipped": len(self.skipped),
            "weight_bytes_before": self.bytes_before,
            "weight_bytes_after": self.bytes_after,
        }
        if self.elements:
            out["mse_rtn"] = self.sq_rtn / self.elements
            out["mse"] = self.sq / self.elements
            if search and self.sq_rtn > 0:
                out["mse_improvement"] = 1.0 - self.sq / self.sq_rtn
        return out


def _nbytes(*arrays: np.ndarray) -> int:
    """Serialized size; int4/uint4 arrays count half a byte per element (ONNX packs them)."""
    total = 0
    for a in arrays:
        if a.dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)):
            total += (a.size + 1) // 2
        else:
            total += a.nbytes
    return total


def _detach_outputs(node: Node) -> list[Tensor]:
    """Take the outputs away from ``node`` (its replacement will produce them)."""
    outputs = list(node.outputs)
    node.outputs.clear()
    return outputs


def _ort_type(dtype: np.dtype) -> str:
    return {np.dtype(np.float32): "float", np.dtype(np.float16): "float16"}[np.dtype(dtype)]


@register_pass("quantize-weights-blockwise")
class QuantizeWeightsBlockwise(Pass[QuantizeWeightsBlockwiseConfig]):
    """Weight-only block quantization (int4/int8) of MatMul/Gemm weights (and embeddings) to MatMulNBits or blocked QDQ."""

    def check_needs(self, available: set[str]) -> set[str]:
        """GPTQ and AWQ read ``calibration_data``; refused at once, naming ``--data``, when nothing gives it."""
        if self.config.algorithm != "rtn" and "calibration_data" not in available:
            raise self._no_data()
        return super().check_needs(available)

    def _no_data(self) -> ConfigError:
        return ConfigError(f"quantize-weights-blockwise: algorithm '{self.config.algorithm}' needs calibration data (--data), and none is given")

    def requires(self, model: Model) -> None:
        c = self.config
        if c.format == "qdq" and model.opset < QDQ_OPSET and not c.upgrade_opset:
            raise PreconditionError(
                f"{model.source}: quantize-weights-blockwise format='qdq' emits blocked DequantizeLinear with "
                f"{'int4' if c.bits == 4 else 'int8'} initializers, which needs opset >= {QDQ_OPSET}, but the model is "
                f"opset {model.opset}; add 'upgrade-opset' with target={QDQ_OPSET} before this pass, or set upgrade_opset=true"
            )

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        c = self.config
        upgraded = False
        if c.format == "qdq" and model.opset < QDQ_OPSET:
            from onnxq.passes.cleanup.upgrade_opset import upgrade_opset

            model = upgrade_opset(model, QDQ_OPSET)
            upgraded = True
        self._namer = ir.names(model)
        self._cache: dict[tuple[str, str], list[Any]] = {}
        stats = _Stats()
        found = [(g, [t for n in g.nodes if (t := self._target(g, n, stats.skipped)) is not None]) for g in list(ir.iter_graphs(model.graph))]
        self._calibrated = self._calibrate(model, [t for _, ts in found for t in ts], ctx)
        for graph, targets in found:
            replacements: dict[int, list[Node]] = {}
            for target in targets:
                new_nodes = self._rewrite(model, target, stats)
                if new_nodes is not None:
                    replacements[id(target.node)] = new_nodes
            if replacements:
                self._splice(graph, replacements)
        for name, (op, reason) in stats.skipped.items():
            ctx.skip(name, op, reason)
        out = stats.as_dict(c.scale_search == "mse")
        rewritten = self._calibrated is not None and bool(self._calibrated.folds)  # AWQ rescaled the float graph
        if self._calibrated is not None:
            out.update(self._calibrated.as_dict(c.algorithm))
        if upgraded:
            out["upgraded_opset_to"] = QDQ_OPSET
        return PassResult(model, bool(stats.quantized) or upgraded or rewritten, out)

    def _calibrate(self, model: Model, targets: list[_Target], ctx: PassContext) -> Calibrated | None:
        """GPTQ's weights / AWQ's rewrites from the calibration data (None for ``rtn``)."""
        if self.config.algorithm == "rtn":
            return None
        if ctx.calibration_data is None:
            raise self._no_data()
        return calibrate_weights(model, targets, ctx.calibration_data, self.config, progress=ctx.progress)

    # -- finding weights ---------------------------------------------------------------------

    def _target(self, graph: Graph, node: Node, skipped: dict[str, tuple[str, str]]) -> _Target | None:
        if node.domain or node.op not in ("MatMul", "Gemm", "Gather"):
            return None
        if node.op == "Gather" and not self.config.include_gather:
            return None
        label = node.name or node.outputs[0].name
        found = self._weight_of(node)
        if isinstance(found, str):
            skipped[label] = (node.op, found)
            return None
        target = _Target(graph, node, *found)
        reason = self._size_reason(node, target)
        if reason is not None:
            skipped[label] = (node.op, reason)
            return None
        return target

    def _weight_of(self, node: Node) -> tuple[Tensor, np.ndarray, np.ndarray | None, bool] | str:
        """(weight tensor, W[K, N] float32, bias, stored transposed) or the reason to skip."""

        c = self.config
        index = 0 if node.op == "Gather" else 1
        if len(node.inputs) <= index:
            return "no weight input"
        weight = node.inputs[index]
        if node.name in c.exclude_names or weight.name in c.exclude_names:
            return "excluded by name (exclude_names)"
        values = ir.constant_array(weight)
        if values is None:
            if node.op == "Gather":
                return f"data ({weight.name}) is computed at run time, not a constant embedding table"
            return f"input B ({weight.name}) is computed at run time (activation x activation), not a constant weight"
        if values.dtype not in _FLOATS:
            return f"weight {weight.name} is {values.dtype}, expected float32/float16"
        if values.ndim != 2:
            return f"weight {weight.name} has shape {list(values.shape)}; only 2-D weights are block-quantized"
        if node.op == "MatMul":
            a = node.inputs[0]
            if isinstance(a.shape, (list, tuple)) and len(a.shape) < 2 and c.format == "matmulnbits":
                return "input A is 1-D (MatMulNBits needs rank >= 2)"
            return weight, values.astype(np.float32), None, False
        if node.op == "Gather":
            if int(ir.attr(node, "axis", 0)) != 0:
                return "Gather axis is not 0 (not an embedding lookup)"
            return weight, np.ascontiguousarray(values.T.astype(np.float32)), None, True
        return self._gemm_weight(node, weight, values)

    def _gemm_weight(self, node: Node, weight: Tensor, values: np.ndarray) -> tuple[Tensor, np.ndarray, np.ndarray | None, bool] | str:
        trans_b = bool(ir.attr(node, "transB", 0))
        w = values.T if trans_b else values
        if self.config.format == "qdq":
            return weight, np.ascontiguousarray(w.astype(np.float32)), None, trans_b
        if ir.attr(node, "transA", 0):
            return "Gemm has transA=1 (MatMulNBits cannot transpose A)"
        alpha = float(ir.attr(node, "alpha", 1.0))
        beta = float(ir.attr(node, "beta", 1.0))
        bias = None
        n = w.shape[1]
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = ir.constant_array(node.inputs[2])
            if c is None or c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
                return "Gemm bias C is not a constant [N] vector (MatMulNBits takes a per-output bias only)"
            bias = np.broadcast_to(c.astype(np.float32).reshape(-1) * beta, (n,)).astype(values.dtype)
        return weight, np.ascontiguousarray(w.astype(np.float32) * np.float32(alpha)), bias, trans_b

    def _size_reason(self, node: Node, target: _Target) -> str | None:
        c = self.config
        k, n = target.w.shape
        axis = "hidden" if node.op == "Gather" else "K"
        if k < c.min_k:
            return f"{axis}={k} < min_k={c.min_k}"
        if n < c.min_n:
            what = "vocab" if node.op == "Gather" else "N"
            return f"{what}={n} < min_n={c.min_n}"
        return None

    # -- emitting ----------------------------------------------------------------------------

    def _quantize(self, target: _Target, float_dtype: np.dtype) -> BlockQuant:
        c = self.config
        if self._calibrated is not None and id(target.node) in self._calibrated.quant:
            return self._calibrated.quant[id(target.node)]  # GPTQ's, or AWQ's (scaled, clip search weighted by the data)
        return quantize_blockwise(target.w, block_grid(c, float_dtype))

    def _rewrite(self, model: Model, t: _Target, stats: _Stats) -> list[Node] | None:
        c = self.config
        dtype = ir.constant_array(t.weight).dtype  # type: ignore[union-attr]
        label = t.node.name or t.node.outputs[0].name
        if c.format == "qdq":
            reason = self._probe_qdq(dtype)
            emit = self._emit_qdq
        elif t.node.op == "Gather":
            reason = self._probe_gbq(dtype)
            emit = self._emit_gbq
        else:
            reason = self._probe_mnb(dtype, t.w.shape)
            emit = self._emit_mnb
        if reason is not None:
            stats.skipped[label] = (t.node.op, reason)
            return None
        stats.quantized[t.node.op] = stats.quantized.get(t.node.op, 0) + 1
        return emit(model, t, dtype, stats)

    def _codes_dtype(self) -> Any:
        c = self.config
        if c.bits == 4:
            return ml_dtypes.int4 if c.symmetric else ml_dtypes.uint4
        return np.int8 if c.symmetric else np.uint8

    def _probe_qdq(self, dtype: np.dtype) -> str | None:
        c = self.config
        codes = {ml_dtypes.int4: "int4", ml_dtypes.uint4: "uint4", np.int8: "int8", np.uint8: "uint8"}[self._codes_dtype()]
        types = (codes, _ort_type(dtype)) + (() if c.symmetric else (codes,))
        err = cpu_kernel_error("DequantizeLinear", "", QDQ_OPSET, types, {"axis": 0, "block_size": c.block_size})
        return None if err is None else f"onnxruntime CPU cannot run blocked DequantizeLinear({', '.join(types)}): {err}"

    def _probe_mnb(self, dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
        c = self.config
        ft = _ort_type(dtype)
        types = (ft, "uint8", ft) + (() if c.symmetric else ("uint8",))
        attrs = {"K": int(shape[0]), "N": int(shape[1]), "bits": c.bits, "block_size": c.block_size, "accuracy_level": c.accuracy_level}
        err = cpu_kernel_error("MatMulNBits", ir.MS_DOMAIN, 17, types, attrs)
        return None if err is None else f"onnxruntime CPU has no MatMulNBits kernel for {types}: {err}"

    def _probe_gbq(self, dtype: np.dtype) -> str | None:
        c = self.config
        data = {ml_dtypes.int4: "int4", ml_dtypes.uint4: "uint4", np.int8: "uint8", np.uint8: "uint8"}[self._codes_dtype()]
        types = (data, "int64", _ort_type(dtype)) + (() if c.symmetric else (data,))
        attrs = {"bits": c.bits, "block_size": c.block_size, "quantize_axis": 1, "gather_axis": 0}
        err = cpu_kernel_error("GatherBlockQuantized", ir.MS_DOMAIN, 17, types, attrs)
        return None if err is None else f"onnxruntime CPU has no GatherBlockQuantized kernel for {types}: {err}"

    def _const(self, base: str, values: np.ndarray) -> Tensor:
        return ir.make_constant(self._namer.new(base), values)

    @staticmethod
    def _cache_key(t: _Target, kind: str) -> tuple[str, str]:
        return (t.weight.name or str(id(t.weight)), kind)  # by name: one weight, however many copies of its object

    def _cached(self, t: _Target, kind: str, build: Any) -> list[Any]:
        """Build the quantized form of a weight once, however many nodes read it."""
        key = self._cache_key(t, kind)
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _emit_mnb(self, model: Model, t: _Target, dtype: np.dtype, stats: _Stats) -> list[Node]:
        c = self.config
        k, n = t.w.shape
        base = t.weight.name
        key = f"mnb/{t.transposed}/{ir.attr(t.node, 'alpha', 1.0) if t.node.op == 'Gemm' else 1.0}"

        def build() -> list[Tensor]:
            bq = self._quantize(t, dtype)
            offset = 0 if not c.symmetric else 1 << (c.bits - 1)  # unsigned storage, default zp 2^(bits-1)
            packed = pack_codes(bq.codes + offset, c.bits)  # [N, n_blocks, block_size * bits / 8]
            scales = bq.scale.astype(dtype)  # [N, n_blocks]
            arrays = [packed, scales]
            consts = [self._const(f"{base}/q{c.bits}", packed), self._const(f"{base}/scales", scales)]
            if not c.symmetric:
                zp = pack_codes(bq.zero_point, c.bits)  # [N, ceil(n_blocks * bits / 8)]
                arrays.append(zp)
                consts.append(self._const(f"{base}/zero_points", zp))
            stats.add(bq, ir.constant_array(t.weight), _nbytes(*arrays))  # type: ignore[arg-type]
            return consts

        consts = self._cached(t, key, build)
        outputs = _detach_outputs(t.node)
        inputs: list[Tensor] = [t.node.inputs[0], *consts]
        if t.bias is not None:
            while len(inputs) < 5:  # A, B, scales, zero_points, g_idx, bias
                inputs.append(ir.make_variable(""))
            inputs.append(self._const(f"{base}/bias", t.bias))
        attrs = {"K": int(k), "N": int(n), "bits": c.bits, "block_size": c.block_size, "accuracy_level": c.accuracy_level}
        return [self._contrib_node(model, "MatMulNBits", t, inputs, outputs, attrs)]

    def _emit_gbq(self, model: Model, t: _Target, dtype: np.dtype, stats: _Stats) -> list[Node]:
        c = self.config
        base = t.weight.name

        def build() -> list[Tensor]:
            bq = self._quantize(t, dtype)  # table^T: K = hidden, N = vocab
            vocab, hidden = bq.codes.shape[0], bq.k
            codes = bq.codes.reshape(vocab, -1)[:, :hidden]  # [vocab, hidden]
            if c.bits == 8 and c.symmetric:
                codes = codes + 128  # uint8 storage, default zero point 2^(bits-1)
            data = codes.astype(np.uint8 if c.bits == 8 else self._codes_dtype())
            scales = bq.scale.astype(dtype)  # [vocab, n_blocks]
            arrays = [data, scales]
            consts = [self._const(f"{base}/q{c.bits}", data), self._const(f"{base}/scales", scales)]
            if not c.symmetric:
                zp = bq.zero_point.astype(data.dtype)
                arrays.append(zp)
                consts.append(self._const(f"{base}/zero_points", zp))
            stats.add(bq, ir.constant_array(t.weight), _nbytes(*arrays))  # type: ignore[arg-type]
            return consts

        consts = self._cached(t, "gbq", build)
        if c.bits == 4:
            model.ir_version = max(model.ir_version, 10)  # int4/uint4 initializers need IR 10
        attrs = {"bits": c.bits, "block_size": c.block_size, "quantize_axis": 1, "gather_axis": 0}
        inputs = [consts[0], t.node.inputs[1], *consts[1:]]
        return [self._contrib_node(model, "GatherBlockQuantized", t, inputs, _detach_outputs(t.node), attrs)]

    def _contrib_node(self, model: Model, op: str, t: _Target, inputs: list[Tensor], outputs: list[Tensor], attrs: dict[str, Any]) -> Node:
        """A com.microsoft ``op`` node replacing ``t.node`` (the model gains that domain at version 1)."""
        model.set_opset(ir.MS_DOMAIN, 1)
        name = self._namer.new(f"{t.node.name or t.weight.name}/{op}")
        return ir.make_node(op, inputs, outputs, name=name, attrs=attrs, domain=ir.MS_DOMAIN)

    def _emit_qdq(self, model: Model, t: _Target, dtype: np.dtype, stats: _Stats) -> list[Node]:
        c = self.config
        base = t.weight.name
        axis = 1 if t.transposed else 0  # blocks run along K: axis 0 of W[K, N], axis 1 of B[N, K] / table[V, H]

        def build() -> list[Any]:
            bq = self._quantize(t, dtype)
            codes = from_blocks(bq.codes, bq.k)  # [K, N]
            scales, zp = bq.scale.T, bq.zero_point.T  # [n_blocks, N]
            if t.transposed:
                codes, scales, zp = codes.T, scales.T, zp.T
            data = np.ascontiguousarray(codes).astype(self._codes_dtype())
            scales = np.ascontiguousarray(scales).astype(dtype)
            arrays = [data, scales]
            consts = [self._const(f"{base}/q{c.bits}", data), self._const(f"{base}/scale", scales)]
            if not c.symmetric:
                zpa = np.ascontiguousarray(zp).astype(data.dtype)
                arrays.append(zpa)
                consts.append(self._const(f"{base}/zero_point", zpa))
            stats.add(bq, ir.constant_array(t.weight), _nbytes(*arrays))  # type: ignore[arg-type]
            out = ir.make_variable(self._namer.new(f"{base}/dequantized"), dtype=dtype, shape=list(data.shape))
            attrs = {"axis": axis, "block_size": c.block_size}
            dq = ir.make_node("DequantizeLinear", consts, [out], name=self._namer.new(f"{base}/DequantizeLinear"), attrs=attrs)
            return [out, dq]

        # One DQ per weight and (sub)graph: its output must be visible where it is read.
        kind = f"qdq/{t.transposed}/{id(t.graph)}"
        # The cache's own key: an id-based test here missed name-keyed entries, so a weight read by
        # two nodes got two DQ nodes writing one name (fuzz regression test_shared_weight_gets_one_dequantize).
        fresh = self._cache_key(t, kind) not in self._cache
        w_dq, dq = self._cached(t, kind, build)
        t.node.inputs[0 if t.node.op == "Gather" else 1] = w_dq
        return [dq, t.node] if fresh else [t.node]

    @staticmethod
    def _splice(graph: Graph, replacements: dict[int, list[Node]]) -> None:
        """Put each replacement where its node was (keeps the order topological)."""
        new_order: list[Node] = []
        doomed = []
        for node in graph.nodes:
            repl = replacements.get(id(node))
            if repl is None:
                new_order.append(node)
                continue
            if not any(r is node for r in repl):
                doomed.append(node)
            new_order.extend(repl)
        for node in doomed:
            node.inputs.clear()
            node.outputs.clear()
        graph.nodes = new_order
