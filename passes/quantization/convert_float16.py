"""``convert-float16``: store weights (and, where onnxruntime can, compute) in float16 / bfloat16.

Every float32 tensor gets one of two precisions:

- a node computes in *half* (float16 or bfloat16) when all of the following hold: it is not in
  ``op_block_list`` / ``node_block_list``, it holds no subgraph, its ONNX schema allows the half type
  for its float type parameter, and onnxruntime's CPU provider has a kernel for it (probed with
  :mod:`onnxq.runtime.kernels`, never assumed). Which kernel counts depends on ``storage_only``:

  * ``False`` — any kernel that *loads*, including onnxruntime's own fp32 fallback (it wraps float16
    nodes lacking a CPU kernel in Casts): the "whole model in fp16" conversion meant for GPUs, still
    guaranteed to load and run on CPU. bfloat16 nodes without any kernel stay float32 (storage-only).
  * ``"auto"`` (default) — a *native* half kernel only, and only in connected regions that contain a
    compute-heavy op (MatMul, Gemm, Conv, ...): an island of cheap ops in half would cost two Casts
    and gain nothing. onnxruntime 1.32's CPU provider has native float16 kernels for data movement and
    LayerNormalization but none for MatMul/Conv/elementwise maths, so on x86 ``auto`` is storage-only.
  * ``True`` — nothing computes in half.

- a node computing in float32 whose float weight (a constant in the node's float type group with at
  least ``storage_min_elements`` values) is stored in half and widened by a ``Cast`` right after the
  initializer (*storage-only*: the file halves, compute is unchanged; onnxruntime constant-folds the
  Cast at load time, so inference costs nothing extra). Blocked nodes (block lists, subgraph holders,
  ops without a schema such as contrib ops) keep their constants bit-exact in float32.

Casts are inserted only where a tensor's producer and consumer disagree; graph inputs and outputs keep
float32 unless ``keep_io_types=False``. Inputs outside the node's float type parameter keep their type
(``Resize`` scales, ``BatchNormalization`` statistics when typed separately, LayerNormalization's
``Mean`` output...). Exact round trips ``Cast(half→f32) → Cast(f32→half)`` are folded afterwards
(a ``f32→half→f32`` pair is not an identity and is kept).

Values outside the half type's range are clamped when converted: ``|x| > max_finite_val`` →
``±max_finite_val``, ``0 < |x| < min_positive_val`` → ``±min_positive_val`` (keeping epsilons nonzero);
each clamped tensor is named in a WARNING with the count. ``inf`` / ``nan`` pass through.

Default ``op_block_list`` (stays float32, with Casts around): ``Range`` and ``CumSum`` (integer-like
values above 2048 are not representable in fp16; running sums overflow), ``ReduceSum``,
``ReduceSumSquare``, ``ReduceL2``, ``ReduceLogSumExp``, ``ReduceProd`` (sums/products of many elements
overflow 65504), ``Pow`` (squares of activations, e.g. decomposed LayerNorm variance, overflow),
``RoiAlign`` and ``NonMaxSuppression`` (pixel coordinates above 2048 lose integer precision).
``Resize`` is not blocked: only its data input changes type, its ``scales``/``roi`` stay float32.
``Softmax`` and ``ReduceMean`` are not blocked either: max-subtracted softmax and means cannot overflow.

Subgraphs (If branches, Loop / Scan bodies) are converted like the main graph, outermost first, with
one rule: a body's inputs and outputs keep their float32 type whatever ``keep_io_types`` says, because
they are the holder node's: both branches of an If must return the same types, and a Loop's carried
state must have the same type at the body's input and output (and at the Loop's). Outer tensors a body
reads are float32 there (the outer graph gives body readers a float32 version, as it does to any
float32 reader); Casts a body needs are placed inside the body. A float constant read in several
graphs (an outer weight read by both branches) is converted once and shared. The holder node itself
(If / Loop / Scan) stays float32 with its reason. A model without float32 tensors is left unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto

from onnxq import ir
from onnxq.disjoint_sets import DisjointSets
from onnxq.errors import ConfigError
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.runtime.kernels import cpu_kernel_error

__all__ = ["ConvertFloat16", "ConvertFloat16Config", "DEFAULT_OP_BLOCK_LIST", "HALF_WORTHY_OPS"]

log = logging.getLogger(__name__)

DEFAULT_OP_BLOCK_LIST: tuple[str, ...] = (
    "Range",
    "CumSum",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceProd",
    "Pow",
    "RoiAlign",
    "NonMaxSuppression",
)

#: Ops whose half-precision compute is worth Casts at a region's boundary (``storage_only="auto"``).
HALF_WORTHY_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "LSTM", "GRU", "RNN", "Attention"})

_F32 = np.dtype(np.float32)
_TARGETS: dict[str, tuple[np.dtype, int]] = {
    "float16": (np.dtype(np.float16), TensorProto.FLOAT16),
    "bfloat16": (np.dtype(ml_dtypes.bfloat16), TensorProto.BFLOAT16),
}
_EXACT_WIDENING = {(np.dtype(np.float16), _F32), (np.dtype(ml_dtypes.bfloat16), _F32)}


@dataclass(frozen=True)
class ConvertFloat16Config(PassConfig):
    """Options of ``convert-float16``.

    Attributes:
        dtype: ``"float16"`` or ``"bfloat16"``.
        keep_io_types: graph inputs and outputs stay float32 (Casts inside the model).
        op_block_list: op types that stay float32 (see the module docstring for the defaults).
        node_block_list: node names that stay float32.
        min_positive_val / max_finite_val: clamping bounds; ``None`` uses the target type's own
            (float16: 5.96e-08 / 65504; bfloat16: 9.2e-41 / 3.39e38).
        storage_only: ``True`` (weights only), ``False`` (compute in half wherever onnxruntime CPU
            loads the node) or ``"auto"`` (compute in half where a native CPU kernel exists).
        storage_min_elements: smaller constants of float32 nodes keep float32 storage (scalars such
            as masks' ``-3.4e38`` or epsilons save nothing and would be clamped).
    """

    dtype: Literal["float16", "bfloat16"] = "float16"
    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = DEFAULT_OP_BLOCK_LIST
    node_block_list: tuple[str, ...] = ()
    min_positive_val: float | None = None
    max_finite_val: float | None = None
    storage_only: bool | Literal["auto"] = "auto"
    storage_min_elements: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_positive_val is not None and self.min_positive_val <= 0:
            raise ConfigError(f"convert-float16: min_positive_val must be > 0, got {self.min_positive_val}")
        if self.max_finite_val is not None and self.max_finite_val <= 0:
            raise ConfigError(f"convert-float16: max_finite_val must be > 0, got {self.max_finite_val}")
        if self.storage_min_elements < 0:
            raise ConfigError(f"convert-float16: storage_min_elements must be >= 0, got {self.storage_min_elements}")


@dataclass
class _Info:
    """A float32 node of the graph being converted: its float type group and the decision."""

    node: Node
    group_in: set[int] = field(default_factory=set)
    group_out: set[int] = field(default_factory=set)
    half: bool = False
    reason: str = ""
    storage_ok: bool = False  # float32 compute, but its float weights may be stored in half


def _dtype(t: Tensor) -> np.dtype | None:
    dt = t.dtype
    if dt is None:
        return None
    try:
        return ir.np_dtype(dt) if isinstance(dt, int) else np.dtype(dt)
    except Exception:  # exotic enum without a numpy type
        return None


def _schema(node: Node, opset: int) -> Any:
    try:
        return onnx.defs.get_schema(node.op, opset, node.domain or "")
    except Exception:  # onnx.defs.SchemaError: unknown op / domain
        return None


def _formal(formals: list[Any], i: int) -> str | None:
    if i < len(formals):
        return formals[i].type_str
    if formals and formals[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return formals[-1].type_str
    return None


def _float_group(node: Node, opset: int, target: str) -> tuple[set[int], set[int]] | str | None:
    """Indices of the inputs/outputs sharing the node's float type parameter.

    Returns None for nodes without float32 tensors, a reason string for float32 nodes that cannot
    change type, or ``(inputs, outputs)``.
    """
    f_in = [i for i, t in enumerate(node.inputs) if t.name and _dtype(t) == _F32]
    f_out = [i for i, t in enumerate(node.outputs) if t.name and _dtype(t) == _F32]
    if not f_in and not f_out:
        return None
    if ir.subgraphs_of(node):
        return "holds subgraphs (the If/Loop/Scan interface stays float32; its bodies are converted)"
    schema = _schema(node, opset)
    if schema is None:
        return f"no ONNX schema for {node.domain or 'ai.onnx'}:{node.op} (contrib ops stay float32)"
    param = _formal(schema.outputs, f_out[0]) if f_out else _formal(schema.inputs, f_in[0])
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    if param not in allowed or f"tensor({target})" not in allowed[param]:
        return f"the ONNX schema of {node.op} has no {target} variant for this tensor"
    g_in = {i for i, t in enumerate(node.inputs) if t.name and _formal(schema.inputs, i) == param}
    g_out = {i for i, t in enumerate(node.outputs) if t.name and _formal(schema.outputs, i) == param}
    if not g_in:
        return f"{node.op}'s output type is set by an attribute, not by its inputs"
    members = [*(node.inputs[i] for i in g_in), *(node.outputs[i] for i in g_out)]
    if {_dtype(t) for t in members} - {None} != {_F32}:
        return None
    for t in members:  # one type parameter, one type: annotate what shape inference left unknown
        if t.dtype is None:
            t.dtype = _F32
    return g_in, g_out


def _probe_attrs(node: Node) -> dict[str, Any]:
    simple = (int, float, str, bytes)
    out = {}
    for k, v in node.attrs.items():
        if isinstance(v, simple) or (isinstance(v, (list, tuple)) and all(isinstance(x, simple) for x in v)):
            out[k] = v
    return out


def _type_name(dtype: np.dtype | None) -> str:
    return "float" if dtype is None else TensorProto.DataType.Name(ir.onnx_dtype(dtype))


class _Converter:
    """The conversion of one (sub)graph: its plan; the name generator, counters and half constants
    are shared with the converters of the model's other graphs (``shared``)."""

    def __init__(self, model: Model, config: ConvertFloat16Config, graph: Graph | None = None, shared: _Converter | None = None) -> None:
        self.model = model
        self.graph: Graph = graph if graph is not None else model.graph
        self.c = config
        # A body's inputs and outputs are its holder's (If / Loop / Scan) and keep their types.
        self.keep_io = config.keep_io_types or self.graph is not model.graph
        self.half, self.half_enum = _TARGETS[config.dtype]
        info = ml_dtypes.finfo(self.half)
        self.max_val = float(config.max_finite_val if config.max_finite_val is not None else info.max)
        self.min_pos = float(config.min_positive_val if config.min_positive_val is not None else info.smallest_subnormal)
        self.infos: dict[int, _Info] = {}
        self.casts: dict[int, Node] = {}  # this graph's Cast nodes (accept any input type)
        self.converted_casts: set[int] = set()
        self.io_changed = False
        self.namer: ir.NameGenerator
        self.stats: dict[str, Any]
        #: float32 constant (by name) → its half version, shared by every graph that reads the constant
        self.halves: dict[str, Tensor]
        if shared is not None:
            self.namer, self.stats, self.halves = shared.namer, shared.stats, shared.halves
            return
        self.namer = ir.names(model)
        self.stats = {
            "casts_inserted": 0,
            "constants_half": 0,
            "constants_storage_only": 0,
            "constant_bytes_before": 0,
            "constant_bytes_after": 0,
            "clamped": {},
        }
        self.halves = {}

    # -- planning ---------------------------------------------------------------------------

    def plan(self) -> None:
        target = self.c.dtype
        for node in self.graph.nodes:
            if node.op == "Cast" and not node.domain:
                self.casts[id(node)] = node
                continue
            group = _float_group(node, self.model.opset, target)
            if group is None:
                continue
            info = _Info(node)
            self.infos[id(node)] = info
            if isinstance(group, str):
                info.reason = group
                continue
            info.group_in, info.group_out = group
            info.reason = self._block_reason(node, info)
        if self.c.storage_only == "auto":
            self._keep_worthy_regions()
        self._plan_casts()

    def _block_reason(self, node: Node, info: _Info) -> str:
        c = self.c
        if node.name and node.name in c.node_block_list:
            return "node_block_list"
        if node.op in c.op_block_list:
            return "op_block_list"
        info.storage_ok = True
        if c.storage_only is True:
            return "storage_only"
        types = tuple(self.c.dtype if i in info.group_in else ("" if not t.name else _type_name(_dtype(t))) for i, t in enumerate(node.inputs))
        n_out = max((i + 1 for i, t in enumerate(node.outputs) if t.name), default=1)
        err = cpu_kernel_error(
            node.op, node.domain or "", self.model.opset, types, _probe_attrs(node), num_outputs=n_out, native=c.storage_only == "auto"
        )
        if err is not None:
            return f"onnxruntime CPU has no {c.dtype} kernel: {err}"
        info.half = True
        return ""

    def _keep_worthy_regions(self) -> None:
        """``auto``: half only in connected half-capable regions containing a compute-heavy op."""
        half = [k for k, v in self.infos.items() if v.half]
        regions = DisjointSets(half)
        for key in half:
            info = self.infos[key]
            for i in info.group_in:
                p = ir.producer(info.node.inputs[i])
                pinfo = self.infos.get(id(p)) if p is not None else None
                if p is not None and pinfo is not None and pinfo.half and any(p.outputs[j] is info.node.inputs[i] for j in pinfo.group_out):
                    regions.union(key, id(p))
        worthy = {regions.find(k) for k in half if self.infos[k].node.op in HALF_WORTHY_OPS}
        for key in half:
            if regions.find(key) not in worthy:
                info = self.infos[key]
                info.half = False
                info.reason = "auto: no compute-heavy op with a native half kernel in this region (weights stored in half only)"

    def _plan_casts(self) -> None:
        """A Cast to float32 whose readers all compute in half casts straight to half instead."""
        for key, node in self.casts.items():
            out = node.outputs[0]
            if int(ir.attr(node, "to", 0)) != TensorProto.FLOAT or ir.is_graph_output(self.graph, out) or not out.outputs:
                continue
            if all(self._use_type(n, i, out) == "half" for n, i in self._uses(out)):
                self.converted_casts.add(key)

    # -- tensor types --------------------------------------------------------------------------

    @staticmethod
    def _uses(t: Tensor) -> list[tuple[Node, int]]:
        return [(n, i) for n in list(t.outputs) for i, x in enumerate(n.inputs) if x is t]

    def _use_type(self, node: Node, index: int, t: Tensor) -> str:
        if id(node) in self.casts:
            return "any"
        info = self.infos.get(id(node))
        if info is not None and info.half and index in info.group_in:
            return "half"
        return "f32"

    def _source_type(self, t: Tensor) -> str:
        if ir.is_graph_input(self.graph, t):
            return "f32" if self.keep_io else "half"
        p = ir.producer(t)
        if p is None:
            return "f32"
        if id(p) in self.converted_casts:
            return "half"
        info = self.infos.get(id(p))
        if info is not None and info.half and any(p.outputs[j] is t for j in info.group_out):
            return "half"
        return "f32"

    def _np(self, kind: str) -> np.dtype:
        return self.half if kind == "half" else _F32

    def _cast(self, src: Tensor, kind: str, base: str) -> Tensor:
        out = ir.make_variable(self.namer.new(base), dtype=self._np(kind), shape=src.shape)
        to = self.half_enum if kind == "half" else TensorProto.FLOAT
        self.graph.nodes.append(ir.make_node("Cast", [src], [out], name=self.namer.new(f"{base}/Cast"), attrs={"to": to}))
        self.stats["casts_inserted"] += 1
        return out

    def _suffix(self, kind: str) -> str:
        return self.c.dtype if kind == "half" else "float32"

    # -- rewriting ---------------------------------------------------------------------------

    def float_tensors(self) -> tuple[list[Tensor], list[Tensor]]:
        """(variables, constants) of dtype float32 used or produced by the main graph's nodes or I/O."""
        seen: dict[int, Tensor] = {}
        for t in [*self.graph.inputs, *self.graph.outputs]:
            seen.setdefault(id(t), t)
        for node in self.graph.nodes:
            for t in [*node.inputs, *node.outputs]:
                if t.name:
                    seen.setdefault(id(t), t)
        floats = [t for t in seen.values() if _dtype(t) == _F32]
        return [t for t in floats if not ir.is_constant(t)], [t for t in floats if ir.is_constant(t)]

    def rewrite_variable(self, t: Tensor) -> None:
        src = self._source_type(t)
        uses = self._uses(t)
        by_kind: dict[str, list[tuple[Node, int]]] = {"half": [], "f32": []}
        for n, i in uses:
            kind = self._use_type(n, i, t)
            by_kind[src if kind == "any" else kind].append((n, i))
        holder = t
        if ir.is_graph_output(self.graph, t):
            out_kind = "f32" if self.keep_io else "half"
            p = ir.producer(t)
            if out_kind != src and p is not None:
                # The output keeps its name and type: the producer writes a new tensor, a Cast fills t.
                holder = ir.make_variable(self.namer.new(f"{t.name}/{self._suffix(src)}"), dtype=self._np(src), shape=t.shape)
                p.outputs[[j for j, o in enumerate(p.outputs) if o is t][0]] = holder
                t.dtype = self._np(out_kind)
                to = self.half_enum if out_kind == "half" else TensorProto.FLOAT
                self.graph.nodes.append(ir.make_node("Cast", [holder], [t], name=self.namer.new(f"{t.name}/Cast"), attrs={"to": to}))
                self.stats["casts_inserted"] += 1
                for n, i in by_kind[src]:
                    n.inputs[i] = holder
                by_kind[src] = []
                by_kind[out_kind] = []
        if holder.dtype is not None and _dtype(holder) != self._np(src) and (ir.is_graph_input(self.graph, t) or ir.is_graph_output(self.graph, t)):
            self.io_changed = True
        holder.dtype = self._np(src)
        for kind in ("half", "f32"):
            users = by_kind[kind]
            if kind == src or not users:
                continue
            cast = self._cast(holder, kind, f"{t.name}/{self._suffix(kind)}")
            for n, i in users:
                n.inputs[i] = cast

    def rewrite_constant(self, t: Tensor) -> None:
        uses = self._uses(t)
        half_uses = [(n, i) for n, i in uses if self._use_type(n, i, t) == "half"]
        values = ir.constant_array(t)
        big = values is not None and values.size >= self.c.storage_min_elements
        storage_uses = [
            (n, i)
            for n, i in uses
            if big and self._use_type(n, i, t) == "f32" and (info := self.infos.get(id(n))) is not None and info.storage_ok and i in info.group_in
        ]
        if not half_uses and not storage_uses:
            return
        # Keyed by name: a copied graph holds one object per body for an outer constant only bodies read.
        half_const = self.halves.get(t.name or str(id(t)))
        if half_const is None:
            remaining = len(uses) - len(half_uses) - len(storage_uses)
            exclusive = remaining == 0 and not ir.is_graph_input(self.graph, t) and not ir.is_graph_output(self.graph, t)
            name = t.name if exclusive else self.namer.new(f"{t.name}/{self.c.dtype}")  # the old constant vanishes
            half_const = self.halves[t.name or str(id(t))] = ir.make_constant(name, self.to_half(values, t.name))  # type: ignore[arg-type]
            self.stats["constant_bytes_before"] += values.nbytes  # type: ignore[union-attr]
            self.stats["constant_bytes_after"] += half_const.values.nbytes
            self.stats["constants_half" if half_uses else "constants_storage_only"] += 1
        for n, i in half_uses:
            n.inputs[i] = half_const
        if storage_uses:  # widened by a Cast in this graph, next to its readers
            widened = self._cast(half_const, "f32", f"{t.name}/float32")
            for n, i in storage_uses:
                n.inputs[i] = widened

    def to_half(self, values: np.ndarray, name: str) -> np.ndarray:
        """``values`` in the half type, clamping out-of-range values (with a warning naming ``name``)."""
        x = np.array(values, dtype=np.float32)
        mag = np.abs(x)
        big = np.isfinite(x) & (mag > self.max_val)
        tiny = (x != 0) & (mag < self.min_pos)
        n_big, n_tiny = int(big.sum()), int(tiny.sum())
        if n_big or n_tiny:
            x[big] = np.sign(x[big]) * np.float32(self.max_val)
            x[tiny] = np.sign(x[tiny]) * np.float32(self.min_pos)
            self.stats["clamped"][name] = n_big + n_tiny
            log.warning(
                "convert-float16: tensor '%s': clamped %d value(s) beyond +/-%g and %d nonzero value(s) below %g to fit %s",
                name, n_big, self.max_val, n_tiny, self.min_pos, self.c.dtype,
            )
        return x.astype(self.half)

    def convert_cast_nodes(self) -> None:
        for key in self.converted_casts:
            node = self.casts[key]
            node.attrs["to"] = self.half_enum
            node.outputs[0].dtype = self.half

    def fold_casts(self) -> int:
        """Bypass exact round trips ``Cast(x: half → f32) → Cast(→ half)`` (and no-op Casts)."""
        folded = 0
        for node in list(self.graph.nodes):
            if node.op != "Cast" or node.domain or not node.outputs or not node.inputs:
                continue
            if not node.outputs[0].outputs and not ir.is_graph_output(self.graph, node.outputs[0]):
                continue  # already bypassed
            try:
                to = ir.np_dtype(int(ir.attr(node, "to", 0)))
            except Exception:  # a type numpy cannot name (e.g. string): never a float round trip
                continue
            src = node.inputs[0]
            inner = ir.producer(src)
            replacement = None
            if _dtype(src) == to:
                replacement = src
            elif inner is not None and inner.op == "Cast" and not inner.domain and inner.inputs:
                x = inner.inputs[0]
                if _dtype(x) == to and (_dtype(x), _dtype(src)) in _EXACT_WIDENING:
                    replacement = x
            if replacement is not None:
                ir.replace_all_uses(self.graph, node.outputs[0], replacement)
                folded += 1
        return folded


def _has_float32(model: Model) -> bool:
    for g in ir.iter_graphs(model.graph):
        if any(_dtype(t) == _F32 for t in [*g.inputs, *g.outputs]):
            return True
        for node in g.nodes:
            if node.op == "Cast" and int(ir.attr(node, "to", 0)) == TensorProto.FLOAT:
                return True
            if any(t.name and _dtype(t) == _F32 for t in [*node.inputs, *node.outputs]):
                return True
    return False


@register_pass("convert-float16")
class ConvertFloat16(Pass[ConvertFloat16Config]):
    """Store weights in float16/bfloat16 and compute in half where onnxruntime's CPU kernels allow."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        ir.infer_shapes(model)
        if not _has_float32(model):
            return PassResult(model, False, {"note": "no float32 tensors: the model is already float16/bfloat16 (or has no float compute)"})
        convs: list[_Converter] = []
        folded = 0
        for graph in list(ir.iter_graphs(model.graph)):  # outermost first: bodies see their outer values' final types
            conv = _Converter(model, self.config, graph, convs[0] if convs else None)
            conv.plan()
            variables, constants = conv.float_tensors()
            for t in constants:
                conv.rewrite_constant(t)
            for t in variables:
                conv.rewrite_variable(t)
            conv.convert_cast_nodes()
            folded += conv.fold_casts()
            convs.append(conv)
        ir.remove_dead_nodes(model.graph)
        ir.toposort(model.graph)
        stats = convs[0].stats
        infos = [(i, c.graph is not model.graph) for c in convs for i in c.infos.values()]
        half_nodes = [i for i, _ in infos if i.half]
        reasons: dict[str, int] = {}
        for info, _ in infos:
            if not info.half:
                key = info.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
                ctx.skip(info.node.name or info.node.outputs[0].name, info.node.op, info.reason)
        half_casts = sum(len(c.converted_casts) for c in convs)
        stats.update(
            dtype=self.config.dtype,
            half_nodes=len(half_nodes),
            float_nodes=len(infos) - len(half_nodes),
            float_reasons=reasons,
            half_casts=half_casts,
            casts_folded=folded,
            subgraph_half_nodes=sum(1 for i, inside in infos if inside and i.half),
            subgraph_float_nodes=sum(1 for i, inside in infos if inside and not i.half),
        )
        io_changed = any(c.io_changed for c in convs)
        modified = bool(half_nodes or stats["constants_half"] or stats["constants_storage_only"] or half_casts or io_changed)
        if not modified:
            stats["note"] = "nothing to convert (no float32 weights or half-capable nodes)"
        return PassResult(model, modified, stats)
