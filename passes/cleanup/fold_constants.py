"""``fold-constants``: precompute nodes whose inputs are all constants.

A node folds when every input is a constant (or a tensor folded earlier in the same sweep), it
belongs to the default domain, holds no subgraph, and is deterministic. ``Shape``/``Size`` of a
tensor whose shape is fully static (from ``infer-shapes``) fold too: that is what turns exporters'
``Shape → Gather → Concat → Reshape`` chains into plain constant reshapes.

All foldable nodes of a graph are evaluated in ONE onnxruntime session (per-node sessions would be
quadratic in practice); a node onnxruntime cannot evaluate falls back to onnx's reference
evaluator, and is left alone if that fails too. Only "frontier" tensors (read by a node that does
not fold) become initializers, and not when folding would grow the model by more than
``max_growth_mb`` (e.g. ``ConstantOfShape`` or ``Expand`` materializing a large tensor).

Quantize/Dequantize nodes never fold: ``DequantizeLinear(int8 W)`` must stay, or folding would
undo weight quantization.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx.reference

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.runtime import make_session

log = logging.getLogger(__name__)

#: Ops never folded: non-deterministic, quantization boundaries, or control flow.
NEVER_FOLD = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
        "If",
        "Loop",
        "Scan",
        "Constant",
    }
)


def _static_shape(t: Tensor) -> list[int] | None:
    shape = t.shape
    if isinstance(shape, (list, tuple)) and all(isinstance(d, int) and d >= 0 for d in shape):
        return [int(d) for d in shape]
    return None


def _shape_value(node: Node) -> np.ndarray | None:
    """Value of ``Shape``/``Size`` when the input's shape is static, else None."""
    shape = _static_shape(node.inputs[0])
    if shape is None:
        return None
    if node.op == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    rank = len(shape)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", rank)
    return np.array(shape[slice(start, end)], dtype=np.int64)


@dataclass(frozen=True)
class FoldConstantsConfig(PassConfig):
    """Options of ``fold-constants``.

    Attributes:
        max_growth_mb: skip a folded tensor larger than its node's inputs by more than this.
        fold_shapes: fold ``Shape``/``Size`` of statically shaped tensors.
    """

    max_growth_mb: float = 16.0
    fold_shapes: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_growth_mb < 0:
            from onnxq.errors import ConfigError

            raise ConfigError(f"fold-constants: max_growth_mb must be >= 0, got {self.max_growth_mb}")


def _is_constant_input(t: Tensor, folded: set[int]) -> bool:
    return not t.name or ir.is_constant(t) or id(t) in folded


def _foldable(node: Node, folded: set[int]) -> bool:
    if node.op in NEVER_FOLD or (node.domain or "") not in ("", "ai.onnx") or ir.subgraphs_of(node):
        return False
    return bool(node.outputs) and all(_is_constant_input(t, folded) for t in node.inputs)


@register_pass("fold-constants")
class FoldConstants(Pass[FoldConstantsConfig]):
    """Precompute nodes whose inputs are all constants (and Shape of static shapes)."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        folded_total = 0
        skipped = 0
        for graph in ir.iter_graphs(model.graph):
            n, s = self._fold_graph(graph, model.opsets)
            folded_total += n
            skipped += s
        return PassResult(model, folded_total > 0, {"folded": folded_total, "skipped_large": skipped})

    def _fold_graph(self, graph: Graph, opsets: dict[str, int]) -> tuple[int, int]:
        shape_values: dict[int, np.ndarray] = {}
        folded: set[int] = set()
        to_eval: list[Node] = []
        for node in graph.nodes:
            if self.config.fold_shapes and node.op in ("Shape", "Size") and node.inputs and not (node.domain or ""):
                value = _shape_value(node)
                if value is not None and not ir.is_constant(node.inputs[0]):
                    shape_values[id(node.outputs[0])] = value
                    folded.add(id(node.outputs[0]))
                    continue
            if _foldable(node, folded):
                to_eval.append(node)
                folded.update(id(t) for t in node.outputs)
        if not folded:
            return 0, 0
        values = dict(shape_values)
        values.update(self._evaluate(to_eval, shape_values, graph, opsets))
        return self._freeze_frontier(graph, values, folded)

    def _evaluate(self, nodes: list[Node], shape_values: dict[int, np.ndarray], graph: Graph, opsets: dict[str, int]) -> dict[int, np.ndarray]:
        """Evaluate ``nodes`` (topologically ordered) with one onnxruntime session."""

        if not nodes:
            return {}
        by_id = {id(t): t for n in nodes for t in n.outputs}
        by_id.update({id(t): t for n in nodes for t in n.inputs if id(t) in shape_values})
        outputs = [t for n in nodes for t in n.outputs if t.name]
        # Shape values computed in Python become inputs of the evaluation model.
        shape_inputs = [by_id[i] for i in shape_values if i in by_id]
        try:
            proto = ir.nodes_to_proto(nodes, [_typed_output(t) for t in outputs], opsets, inputs=[_typed_input(t, shape_values[id(t)]) for t in shape_inputs])
            session = make_session(proto, threads=1, optimization="disable", where="fold-constants")
            results = session.run([t.name for t in outputs], {t.name: shape_values[id(t)] for t in shape_inputs})
            return {id(t): np.asarray(v) for t, v in zip(outputs, results)}
        except Exception as e:  # onnxruntime may lack a kernel for a dtype; fall back per node
            log.debug("fold-constants: batch evaluation failed (%s); falling back to per-node", e)
            return self._evaluate_each(nodes, shape_values, opsets)

    def _evaluate_each(self, nodes: list[Node], shape_values: dict[int, np.ndarray], opsets: dict[str, int]) -> dict[int, np.ndarray]:
        known: dict[int, np.ndarray] = dict(shape_values)
        for node in nodes:
            feeds: dict[str, np.ndarray] = {}
            ok = True
            for t in node.inputs:
                if not t.name or ir.is_constant(t):
                    continue
                if id(t) not in known:
                    ok = False
                    break
                feeds[t.name] = known[id(t)]
            if not ok:
                continue
            inputs = [_typed_input(node.inputs[i], feeds[t.name]) for i, t in enumerate(node.inputs) if t.name in feeds]
            try:
                proto = ir.nodes_to_proto([node], [_typed_output(t) for t in node.outputs], opsets, inputs=inputs)
                results = onnx.reference.ReferenceEvaluator(proto).run(None, feeds)
            except Exception as e:
                log.debug("fold-constants: cannot evaluate %s (%s): %s", node.name, node.op, e)
                continue
            for t, v in zip(node.outputs, results):
                known[id(t)] = np.asarray(v)
        return known

    def _freeze_frontier(self, graph: Graph, values: dict[int, np.ndarray], folded: set[int]) -> tuple[int, int]:
        limit = self.config.max_growth_mb * 2**20
        count = skipped = 0
        outputs = {id(t) for t in graph.outputs}
        frontier: list[Tensor] = []
        for node in graph.nodes:
            for t in node.outputs:
                if id(t) in folded and id(t) in values and id(t) not in outputs:
                    if any(not _foldable_reader(r, folded) for r in t.outputs):
                        frontier.append(t)
        for t in frontier:
            value = values[id(t)]
            producer = ir.producer(t)
            in_bytes = sum(ir.const_value(x).nbytes for x in producer.inputs if ir.is_constant(x)) if producer else 0
            if value.nbytes - in_bytes > limit:
                skipped += 1
                continue
            if value.dtype == object:
                continue
            ir.freeze(t, value)
            count += 1
        return count, skipped


def _foldable_reader(reader: Node, folded: set[int]) -> bool:
    """A reader that itself folded (so this tensor is not on the frontier)."""
    return all(id(t) in folded for t in reader.outputs) and bool(reader.outputs)


def _typed_output(t: Tensor) -> Tensor:
    """A dtype-free stand-in for an output (onnxruntime infers its type)."""
    return ir.make_variable(t.name)


def _typed_input(t: Tensor, value: np.ndarray) -> Tensor:
    return ir.make_variable(t.name, dtype=value.dtype, shape=list(value.shape))
