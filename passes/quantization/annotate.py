"""``annotate-quantization``: decide, node by node, what static quantization will do.

Reads the calibrated ranges (``ctx.ranges``), asks each node's quantizer how it would be
quantized, runs the analyses of :mod:`._analysis` (normalization chains, saturating tensors,
disparate concats, int8 connectivity) and the user's include/exclude options, and leaves a
:class:`~onnxq.plan.QuantPlan` in ``ctx.plan`` (and its config in ``ctx.quant_config``). The graph is not edited, except that unnamed
nodes get deterministic names (the plan and the report refer to nodes by name).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from onnxq import ir
from onnxq.calibration.ranges import TensorRange
from onnxq.errors import PreconditionError
from onnxq.ir import Model, Node
from onnxq.pass_base import Pass, PassContext, PassResult, register_pass
from onnxq.plan import Decision, QuantizationConfig, QuantPlan, TensorQuant, WeightQuant
from onnxq.runtime.kernels import resolve_reduce_range

from ._analysis import connected_glue, disparate_concats, normalization_chains, saturating_tensors
from ._quantizers import ABSORBABLE_ACTIVATIONS, describe_node, saturating_interval
from ._roles import Act, Bias, Fixed, NodeQuant, OptionalAct, Shared, Weight

__all__ = ["AnnotateQuantization", "build_plan"]


def _name_nodes(model: Model) -> bool:
    """Give every unnamed node a deterministic unique name; True if any was renamed."""
    namer = ir.names(model)
    seen: set[str] = set()
    changed = False
    for node in ir.iter_nodes(model.graph):
        if not node.name or node.name in seen:
            node.name = namer.new(f"{node.op}_{len(seen)}")
            changed = True
        seen.add(node.name)
    return changed


def _matches(patterns: tuple[str, ...], name: str) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def _user_exclusion(node: Node, cfg: QuantizationConfig) -> str | None:
    if cfg.op_types and node.op not in cfg.op_types:
        return f"op type not in --op-types ({', '.join(cfg.op_types)})"
    if node.op in cfg.exclude_op_types:
        return "op type excluded by the user"
    if cfg.exclude_nodes and _matches(cfg.exclude_nodes, node.name):
        return "node excluded by the user"
    if cfg.include_nodes and not _matches(cfg.include_nodes, node.name):
        return "node not in the include list"
    return None


def build_plan(
    model: Model,
    ranges: Mapping[str, TensorRange],
    cfg: QuantizationConfig,
    forced_float: Mapping[str, str] | None = None,
    unreachable: Mapping[str, str] | None = None,
) -> QuantPlan:
    """Decide what to quantize (pure with respect to the graph).

    Nodes inside If branches and Loop/Scan bodies are planned like any other (their tensors have
    ranges when calibration observed them). ``forced_float`` maps node names to a reason for keeping
    them float (latency tuning); ``unreachable`` says why calibration has no range for a tensor (an
    If branch no sample took), which then completes the node's reason.
    """
    forced_float = forced_float or {}
    nodes = list(ir.iter_nodes(model.graph))
    reasons: dict[int, str] = {}
    described: dict[int, NodeQuant] = {}
    norm = normalization_chains(model.graph)
    saturating = saturating_tensors(ranges)
    disparate = disparate_concats(model.graph, ranges, cfg.concat_range_ratio)
    for node in nodes:
        desc = describe_node(node)
        if isinstance(desc, str) and desc == "activation × activation MatMul" and cfg.quantize_activation_matmul:
            desc = NodeQuant({0: Act(), 1: Act()}, {0: OptionalAct()}, anchor=True)
        reason = _user_exclusion(node, cfg) or forced_float.get(node.name) or norm.get(id(node)) or disparate.get(id(node))
        if reason is None and isinstance(desc, str):
            reason = desc
        if reason is None:
            assert isinstance(desc, NodeQuant)
            reason = _range_problem(node, desc, ranges, saturating, unreachable or {})
        if reason is not None:
            reasons[id(node)] = reason
        else:
            described[id(node)] = desc  # type: ignore[assignment]
    anchors = [n for n in nodes if id(n) in described and described[id(n)].anchor]
    for node in anchors[: cfg.keep_first]:
        reasons[id(node)] = "kept float by --keep-first"
    for node in anchors[len(anchors) - cfg.keep_last :] if cfg.keep_last else []:
        reasons[id(node)] = "kept float by --keep-last"
    anchor_ids = {id(n) for n in anchors if id(n) not in reasons}
    glue_ids = {i for i in described if not described[i].anchor}
    kept_glue = connected_glue(nodes, anchor_ids, glue_ids)
    kept_glue |= _trailing_activations(nodes, anchor_ids, glue_ids - kept_glue)
    for i in glue_ids - kept_glue:
        reasons[i] = "not between quantized compute ops (int8 here would only add conversions)"
    kept = anchor_ids | kept_glue
    plan = QuantPlan(power_of_two=cfg.power_of_two_scales)
    for node in nodes:
        if id(node) in kept:
            plan.decisions[node.name] = Decision(node.name, node.op, True, "quantized")
        else:
            plan.decisions[node.name] = Decision(node.name, node.op, False, reasons.get(id(node), "not quantizable"))
    graph_outputs = {id(t) for g in ir.iter_graphs(model.graph) for t in g.outputs}
    _resolve_tensors(plan, [n for n in nodes if id(n) in kept], described, kept, cfg, graph_outputs)
    return plan


def _range_problem(
    node: Node, desc: NodeQuant, ranges: Mapping[str, TensorRange], saturating: dict[str, str], unreachable: Mapping[str, str]
) -> str | None:
    """A reason when a tensor this node would quantize has no usable range."""
    tensors = [node.inputs[i] for i, r in desc.inputs.items() if isinstance(r, (Act, Shared)) and not ir.is_constant(node.inputs[i])]
    tensors += [node.outputs[i] for i, r in desc.outputs.items() if isinstance(r, (Act, Shared, OptionalAct))]
    for t in tensors:
        if t.name in saturating:
            return saturating[t.name]
        if t.name not in ranges:
            why = unreachable.get(t.name)
            return f"no calibration range for tensor '{t.name}'" + (f": {why}" if why else "")
    return None


class _Groups:
    """Union-find over tensor names (tensors sharing quantization parameters)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _resolve_tensors(
    plan: QuantPlan, kept_nodes: list[Node], described: dict[int, NodeQuant], kept: set[int], cfg: QuantizationConfig, graph_outputs: set[int]
) -> None:
    requested: dict[str, TensorQuant] = {}
    groups = _Groups()
    absorbed = _absorbed_outputs(kept_nodes, kept)

    def request(t: ir.Tensor, fixed: tuple[float, float] | None = None) -> None:
        tq = requested.setdefault(t.name, TensorQuant(t.name, cfg.activation_dtype, cfg.activation_symmetric))
        if fixed is not None:
            tq.fixed = fixed
        groups.find(t.name)

    for node in kept_nodes:
        desc = described[id(node)]
        for i, role in desc.inputs.items():
            t = node.inputs[i]
            if isinstance(role, (Act, Shared)):
                if ir.is_constant(t):
                    plan.weights.append(WeightQuant(node.name, i, t.name, "weight", cfg.activation_dtype, cfg.activation_symmetric, None))
                    continue
                if id(t) in absorbed:
                    continue
                request(t)
                if isinstance(role, Shared) and not ir.is_constant(node.inputs[role.index]):
                    groups.union(t.name, node.inputs[role.index].name)
            elif isinstance(role, Weight):
                axis = role.axis if cfg.per_channel else None
                narrow = bool(cfg.reduce_range) or _matches(cfg.reduce_range_nodes, node.name)
                plan.weights.append(WeightQuant(node.name, i, t.name, "weight", cfg.weight_dtype, cfg.weight_symmetric, axis, narrow))
            elif isinstance(role, Bias) and cfg.int32_bias:  # else the bias stays a float constant
                weight_role = desc.inputs[role.weight_index]
                # Per channel along the bias's last axis: a Gemm's C may be [1, N], whose axis 0 does not
                # match the N scales (onnxruntime refuses to run that DequantizeLinear).
                per_channel = cfg.per_channel and isinstance(weight_role, Weight) and weight_role.axis is not None
                axis = max(len(ir.constant_array(t).shape) - 1, 0) if per_channel else None  # type: ignore[union-attr]
                plan.weights.append(
                    WeightQuant(node.name, i, t.name, "bias", "int32", True, axis, derived_from=(node.inputs[role.input_index].name, role.weight_index))
                )
        for i, role in desc.outputs.items():
            t = node.outputs[i]
            if not t.name or id(t) in absorbed:
                continue
            if isinstance(role, Act):
                request(t)
            elif isinstance(role, Fixed):
                request(t, (role.low, role.high))
            elif isinstance(role, Shared):
                src = node.inputs[role.index]
                request(t)
                if not ir.is_constant(src) and id(src) not in absorbed:
                    groups.union(t.name, src.name)
    for name, tq in requested.items():
        tq.group = groups.find(name)
        plan.groups.setdefault(tq.group, []).append(name)
    tensors = {t.name: t for n in kept_nodes for t in list(n.inputs) + list(n.outputs)}
    for members in plan.groups.values():
        if len(members) == 1 and members[0] in tensors:
            requested[members[0]].clamp = _reader_interval(tensors[members[0]], graph_outputs)
    plan.activations = requested


def _reader_interval(t: ir.Tensor, graph_outputs: set[int]) -> tuple[float, float] | None:
    """The interval all readers of ``t`` saturate outside of (None if some reader never saturates).

    When only a HardSwish reads a convolution's output, values below -3 all become 0: the
    quantization range need not cover them, and the grid gets finer for the values that matter.
    """
    if not t.outputs or id(t) in graph_outputs:
        return None
    lo, hi = np.inf, -np.inf
    for reader in t.outputs:
        interval = saturating_interval(reader)
        if interval is None or reader.inputs[0] is not t:
            return None
        lo, hi = min(lo, interval[0]), max(hi, interval[1])
    return (float(lo), float(hi))


def _trailing_activations(nodes: list[Node], anchor_ids: set[int], candidates: set[int]) -> set[int]:
    """Relu/Clip nodes that are the only reader of a kept anchor, even when float ops follow them.

    Quantizing the activation's output lets onnxruntime fuse the anchor into its int8 kernel
    (``Gemm → Relu → Q`` becomes QGemm). Left float, the anchor fuses with the activation
    instead (FusedGemm / FusedConv) and its int8 weight is dequantized on every run: slower than
    either float or int8 (measured 6x slower than fp32 on an MLP at batch 1).
    """
    readers = (_sole_activation_reader(n) for n in nodes if id(n) in anchor_ids)
    return {id(r) for r in readers if r is not None and id(r) in candidates}


def _sole_activation_reader(node: Node) -> Node | None:
    """The Relu/Clip that is the only reader of ``node``'s first output, if there is one."""
    users = list(node.outputs[0].outputs) if node.outputs else []
    return users[0] if len(users) == 1 and users[0].op in ABSORBABLE_ACTIVATIONS else None


def _absorbed_outputs(kept_nodes: list[Node], kept: set[int]) -> set[int]:
    """Anchor outputs read only by a kept Relu/Clip: the activation is folded into the requantization.

    onnxruntime removes ``Relu → Q`` / ``Clip → Q`` when the quantized range starts at the
    activation's lower bound, so only the activation's output needs Q/DQ.
    """
    found: set[int] = set()
    for node in kept_nodes:
        if node.op not in ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add"):
            continue
        reader = _sole_activation_reader(node)
        if reader is not None and id(reader) in kept:
            found.add(id(node.outputs[0]))
    return found


@register_pass("annotate-quantization")
class AnnotateQuantization(Pass[QuantizationConfig]):
    """Decide per node what static quantization does (reads ranges, writes the quantization plan)."""

    changes_structure = False
    reads = ("ranges",)
    writes = ("plan", "quant_config")

    def requires(self, model: Model) -> None:
        from onnxq.inspect import QUANT_OPS

        found = sorted({n.op for n in ir.iter_nodes(model.graph) if n.op in QUANT_OPS or n.op.startswith("QLinear")})
        if found:
            raise PreconditionError(
                f"{model.source}: the model is already quantized (found {', '.join(found)}); quantize the float model instead"
            )
        if self.config.activation_dtype in ("int16", "uint16") and model.opset < 21:
            raise PreconditionError(
                f"{model.source}: {self.config.activation_dtype} activations need opset >= 21 (model has {model.opset}); run upgrade-opset target=21 first"
            )

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        ranges = ctx.ranges
        if ranges is None:
            raise PreconditionError("annotate-quantization needs calibration ranges: run the 'calibrate' pass first (or pass --ranges)")
        renamed = _name_nodes(model)
        reduce_range, note = resolve_reduce_range(self.config.reduce_range, self.config.activation_dtype, self.config.weight_dtype)
        config = dataclasses.replace(self.config, reduce_range=reduce_range)
        stats = ctx.calibration_stats  # optional: absent when ranges were given
        plan = build_plan(model, dict(ranges), config, unreachable=stats.unreachable if stats is not None else None)
        if note and plan.weights:
            ctx.note(note)
        ctx.plan = plan
        ctx.quant_config = config
        return PassResult(model, renamed, plan.summary())
