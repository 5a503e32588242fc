"""Which float tensor each quantized activation stands for: matching QUANT's tensors to FLOAT's.

Every integer activation of QUANT's main graph with constant parameters (:mod:`._qparams`) is a
*quantized tensor*: in a QDQ model the output ``t/q`` of ``QuantizeLinear(t)``, in a QOperator model
the output of a QLinear op (``convert-qlinear`` keeps the ``t/q`` name of the Q it absorbed) or of
a data-movement op on integers. Its value is ``dequantize(t/q)``: exactly what the reader's
``DequantizeLinear`` reproduces, or what a QLinear reader computes with. The float twin is found by,
in order:

1. **name**: ``t`` from ``t/q`` (onnxq's insert-qdq names ``t/q``, ``t/dq``, and ``t/float`` for a
   graph output whose name moved onto the dequantized tensor), the input of the ``QuantizeLinear``
   and the outputs of ``DequantizeLinear`` readers; the first that FLOAT has wins;
2. **lineage**: FLOAT's node with the same op (``QLinearConv`` counts as ``Conv``, ...) reading the
   twins of the same inputs, for tensors a rewrite renamed.

Either way the twin then moves *through folded ops*: when the twin's only reader in FLOAT is an op
that conversions fold into the producer (BatchNormalization, Mul/Add/Sub/Div by a constant) and
QUANT has neither that node nor its output, the quantized value is the folded one, so the twin is
that op's output (``conv/out`` of a Conv whose BatchNorm was folded stands for ``bn/out``). Only a
linear producer (Conv, ConvTranspose, Gemm, MatMul) can absorb an affine op after it: one after an
activation folds *forward* into the next convolution instead, and the twin stays. Identity and
Dropout are skipped after any producer, and a Relu/Clip after a QLinear producer (convert-qlinear
absorbs one into the op's output quantization; this matters for twins found by lineage). What matches neither way is listed as unmatched with the
reason.

Graph outputs that QUANT leaves float (a final Gemm's logits) are compared too, by name.

**Readers' view.** onnxq narrows a range to where every reader saturates (below -3 HardSwish is 0,
HardSigmoid is flat outside ``[-β/α, (1-β)/α]``): clipping there is free, so such a tensor is
compared as its readers see it, ``clip(float twin, a, b)`` (``TensorMatch.clip``), where ``[a, b]`` is
the hull of the intervals outside which each reader of the dequantized value is flat (Relu,
Clip, HardSigmoid, HardSwish, and ``x · HardSigmoid(x)``, the expanded HardSwish). A tensor with any
other reader, or that is a graph output, is compared as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import ir
from ..ir import Model, Node, Tensor
from ._qparams import QuantParams, output_qparams

__all__ = ["TensorMatch", "Unmatched", "MatchResult", "match_tensors", "normalized_op"]

#: QOperator / integer ops → the float op they compute.
_FLOAT_OP = {
    "QLinearConv": "Conv",
    "ConvInteger": "Conv",
    "QLinearMatMul": "MatMul",
    "MatMulInteger": "MatMul",
    "MatMulIntegerToFloat": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "QGemm": "Gemm",
    "QLinearAdd": "Add",
    "QLinearMul": "Mul",
    "QLinearConcat": "Concat",
    "QLinearGlobalAveragePool": "GlobalAveragePool",
    "QLinearAveragePool": "AveragePool",
    "QLinearSigmoid": "Sigmoid",
    "QLinearLeakyRelu": "LeakyRelu",
    "QLinearSoftmax": "Softmax",
}
_COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "Sum", "Mean"})
#: Ops a conversion folds into the producer before them (see the module docstring).
_NO_OPS = frozenset({"Identity", "Dropout"})
_FOLDABLE_BY_CONSTANT = frozenset({"Mul", "Add", "Sub", "Div"})
_ACTIVATIONS = frozenset({"Relu", "Clip"})
#: Producers an affine op after them folds into.
_LINEAR = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def normalized_op(node: Node) -> str:
    """The float op an integer op computes (``QLinearConv`` → ``Conv``); other ops as they are."""
    return _FLOAT_OP.get(node.op, node.op)


@dataclass(frozen=True)
class TensorMatch:
    """One compared tensor.

    Attributes:
        name: the float twin's name in FLOAT (what the report calls the tensor).
        quant_tensor: what is read in QUANT: the integer tensor (dequantized with ``qparams``), or
            a float graph output when ``qparams`` is None.
        qparams: scale and zero point of the quantized tensor; None for a float output of QUANT.
        node: QUANT's node computing the value (the producer of the quantized tensor's input).
        op: that node's op.
        how: ``name``, ``lineage`` or ``output``, with ``through folded <ops>`` when it moved.
        order: position of the producer in QUANT's node list (topological).
        clip: the readers' view ``(a, b)`` the float twin is clipped to before comparing (module
            docstring); None: compared as it is.
    """

    name: str
    quant_tensor: str
    qparams: QuantParams | None
    node: str
    op: str
    how: str
    order: int
    clip: tuple[float, float] | None = None


@dataclass(frozen=True)
class Unmatched:
    """A quantized tensor of QUANT without a float twin, and why."""

    tensor: str
    op: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"tensor": self.tensor, "op": self.op, "reason": self.reason}


@dataclass
class MatchResult:
    """Every quantized tensor of QUANT, matched or not (in QUANT's topological order)."""

    matches: list[TensorMatch] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)

    @property
    def quantized(self) -> int:
        """Quantized tensors found in QUANT (matched or not)."""
        return sum(m.qparams is not None for m in self.matches) + len(self.unmatched)


def _static_names(nodes: Iterable[Node]) -> set[str]:
    """Tensors computable without inputs (Constant nodes, DequantizeLinear of a weight, ...)."""
    static: set[str] = set()
    for node in nodes:
        if ir.subgraphs_of(node):
            continue
        if all(not t.name or ir.is_constant(t) or t.name in static for t in node.inputs):
            static.update(t.name for t in node.outputs if t.name)
    return static


def _is_static(t: Tensor, static: set[str]) -> bool:
    return not t.name or ir.is_constant(t) or t.name in static


class _Float:
    """FLOAT's main graph, indexed for matching."""

    def __init__(self, model: Model, quant_names: set[str], quant_nodes: set[str]) -> None:
        graph = self.graph = model.graph
        self.static = _static_names(graph.nodes)
        self.tensors: dict[str, Tensor] = {t.name: t for t in graph.inputs}
        self.by_lineage: dict[tuple[str, tuple[str, ...]], Tensor] = {}
        for node in graph.nodes:
            for t in node.outputs:
                if t.name:
                    self.tensors.setdefault(t.name, t)
            if node.outputs and node.outputs[0].name not in self.static:
                self.by_lineage.setdefault(_key(normalized_op(node), [t.name for t in node.inputs if not _is_static(t, self.static)]), node.outputs[0])
        self.quant_names = quant_names
        self.quant_nodes = quant_nodes

    def advance(self, t: Tensor, linear: bool, absorbs: bool) -> tuple[Tensor, list[str]]:
        """``t``, moved through the folded ops after it: affine ones only after a ``linear`` producer,
        Relu/Clip only after one that ``absorbs`` activations (a QLinear op)."""
        folded: list[str] = []
        while len(t.outputs) == 1:
            reader = t.outputs[0]
            if not self._folded(reader, linear, absorbs):
                break
            absorbs = absorbs and reader.op not in _ACTIVATIONS  # one activation at most
            folded.append(reader.op)
            t = reader.outputs[0]
        return t, folded

    def _folded(self, node: Node, linear: bool, absorbs: bool) -> bool:
        if len(node.outputs) < 1 or node.outputs[0].name in self.quant_names or (node.name and node.name in self.quant_nodes):
            return False
        if node.op in _NO_OPS or (absorbs and node.op in _ACTIVATIONS):
            return True
        if not linear:
            return False
        if node.op == "BatchNormalization":
            return True
        if node.op in _FOLDABLE_BY_CONSTANT and len(node.inputs) == 2:
            return sum(_is_static(t, self.static) for t in node.inputs) == 1
        return False


def _key(op: str, inputs: list[str]) -> tuple[str, tuple[str, ...]]:
    return op, tuple(sorted(inputs)) if op in _COMMUTATIVE else tuple(inputs)


def _strip(name: str, suffix: str) -> str | None:
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else None


def _name_candidates(q: Tensor) -> list[str]:
    """Names the float twin of the integer tensor ``q`` may have (see the module docstring)."""
    names = [n for n in (_strip(q.name, "/q"),) if n]
    node = ir.producer(q)
    if node is not None and node.op == "QuantizeLinear":
        source = node.inputs[0].name
        names += [source] + [n for n in (_strip(source, "/float"),) if n]
    names += [dq.outputs[0].name for dq in q.outputs if dq.op == "DequantizeLinear" and dq.outputs]
    return list(dict.fromkeys(names))


def _value_node(q: Tensor) -> Node | None:
    """The node computing the value ``q`` quantizes: the producer of a QuantizeLinear's input, else q's producer."""
    node = ir.producer(q)
    if node is not None and node.op == "QuantizeLinear":
        return ir.producer(node.inputs[0])
    return node


class _Matcher:
    """One :func:`match_tensors` run: QUANT's quantized tensors in order, their twins so far."""

    def __init__(self, float_model: Model, quant_model: Model) -> None:
        self.graph = quant_model.graph
        names = {t.name for t in self.graph.inputs} | {t.name for n in self.graph.nodes for t in n.outputs}
        self.float = _Float(float_model, names, {n.name for n in self.graph.nodes if n.name})
        self.static = _static_names(self.graph.nodes)
        self.qparams: dict[str, QuantParams] = {}
        self.twin: dict[str, str] = {}  # QUANT tensor (integer, or its DequantizeLinear output) → float twin
        self.order = {id(n): i for i, n in enumerate(self.graph.nodes)}
        self.result = MatchResult()

    def run(self) -> MatchResult:
        for node in self.graph.nodes:
            for t in node.outputs:
                if not t.name or t.name in self.static:
                    continue
                qp = output_qparams(t, self.qparams)
                if qp is not None:
                    self.qparams[t.name] = qp
                    self._match(t, qp)
        self._outputs()
        return self.result

    def _match(self, q: Tensor, qp: QuantParams) -> None:
        value = _value_node(q)
        op = value.op if value is not None else "input"
        found = next((self.float.tensors[n] for n in _name_candidates(q) if n in self.float.tensors), None)
        how = "name"
        if found is None:
            key = self._lineage(value)
            found = self.float.by_lineage.get(key) if key is not None else None
            how = "lineage"
        if found is None:
            reason = f"no FLOAT tensor of the same name, nor a FLOAT {normalized_op(value) if value is not None else 'node'} reading the same inputs"
            if value is not None and self._lineage(value) is None:
                reason = "no FLOAT tensor of the same name, and its inputs have no FLOAT twins to trace its lineage"
            if value is not None and _expanded_hardswish(value):
                reason = "introduced by the conversion (HardSwish written as x · HardSigmoid(x)): FLOAT computes no such tensor"
            self.result.unmatched.append(Unmatched(q.name, op, reason))
            return
        linear = value is not None and normalized_op(value) in _LINEAR
        twin, folded = self.float.advance(found, linear, value is not None and value.op in _FLOAT_OP)
        if folded:
            how += f" through folded {'+'.join(folded)}"
        self.twin[q.name] = twin.name
        for reader in q.outputs:
            if reader.op == "DequantizeLinear" and reader.outputs:
                self.twin[reader.outputs[0].name] = twin.name
        node_name = (value.name or value.op) if value is not None else f"{twin.name} (graph input)"
        order = self.order[id(ir.producer(q))]
        clip = readers_clip(self.graph, q) or float_readers_clip(self.float.graph, twin)
        self.result.matches.append(TensorMatch(twin.name, q.name, qp, node_name, op, how, order, clip))

    def _lineage(self, node: Node | None) -> tuple[str, tuple[str, ...]] | None:
        """``(op, float twins of its run-time inputs)`` of a QUANT node; None when an input has no twin."""
        if node is None:
            return None
        inputs = []
        for t in node.inputs:
            if _is_static(t, self.static):
                continue
            twin = self.twin.get(t.name) or (t.name if t.name in self.float.tensors else None)
            if twin is None:
                return None
            inputs.append(twin)
        return _key(normalized_op(node), inputs)

    def _outputs(self) -> None:
        """Float graph outputs of QUANT not already compared as quantized tensors."""
        seen = {m.name for m in self.result.matches}
        for t in self.graph.outputs:
            if t.name in seen or t.name not in self.float.tensors or self.qparams.get(t.name) is not None:
                continue
            node = ir.producer(t)
            if node is None:
                continue
            source = self._through_dequantize(t)
            if source is not None and source in self.twin:
                continue  # a dequantized output: its quantized tensor is compared already
            order = self.order[id(node)]
            self.result.matches.append(TensorMatch(t.name, t.name, None, node.name or node.op, node.op, "output", order))
        self.result.matches.sort(key=lambda m: m.order)

    @staticmethod
    def _through_dequantize(t: Tensor) -> str | None:
        node = ir.producer(t)
        return node.inputs[0].name if node is not None and node.op == "DequantizeLinear" else None


_INF = float("inf")


def _source(t: Tensor) -> Tensor:
    """``t`` traced back through QuantizeLinear / DequantizeLinear to the value they carry."""
    while (p := ir.producer(t)) is not None and p.op in ("QuantizeLinear", "DequantizeLinear"):
        t = p.inputs[0]
    return t


def _expanded_hardswish(node: Node) -> bool:
    """``node`` is the gate of an expanded HardSwish: a HardSigmoid (or the ``Add`` close-float-islands
    writes for it) whose value is multiplied by its own input."""
    if node.op not in ("HardSigmoid", "Add") or not node.outputs:
        return False
    readers = [r for t in _dequantized(node.outputs[0]) for r in t.outputs]
    sources = [_source(node.inputs[0])] if node.op == "HardSigmoid" else [_source(i) for i in node.inputs]
    return any(r.op == "Mul" and any(_source(i) is src for i in r.inputs for src in sources) for r in readers)


def _dequantized(t: Tensor) -> list[Tensor]:
    """What readers of ``t`` see: ``t``, or the DequantizeLinear outputs of its QuantizeLinear."""
    out = [t]
    for q in t.outputs:
        if q.op == "QuantizeLinear" and q.outputs:
            out += [dq.outputs[0] for dq in q.outputs[0].outputs if dq.op == "DequantizeLinear" and dq.outputs]
    return out


def _bound(clip: Node, index: int, attr: str, default: float) -> float:
    """A Clip bound: its constant input (opset >= 11) or attribute (older), else ``default``."""
    if len(clip.inputs) > index and clip.inputs[index].name:
        value = ir.constant_array(clip.inputs[index])
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else default
    found = ir.attr(clip, attr)
    return default if found is None else float(found)


def _flat_outside(reader: Node, value: Tensor) -> tuple[float, float]:
    """The interval outside which ``reader`` is constant in its input ``value`` ((-inf, inf): nowhere)."""
    if reader.op == "Relu":
        return 0.0, _INF
    if reader.op == "HardSwish":
        return -3.0, _INF
    if reader.op == "HardSigmoid":
        alpha, beta = float(ir.attr(reader, "alpha", 0.2)), float(ir.attr(reader, "beta", 0.5))
        return (-beta / alpha, (1 - beta) / alpha) if alpha > 0 else (-_INF, _INF)
    if reader.op == "Clip" and reader.inputs and reader.inputs[0] is value:
        return _bound(reader, 1, "min", -_INF), _bound(reader, 2, "max", _INF)
    if reader.op == "Mul" and len(reader.inputs) == 2:
        other = reader.inputs[1] if reader.inputs[0] is value else reader.inputs[0]
        hs = ir.producer(_source(other))
        if hs is not None and hs.op == "HardSigmoid" and _source(hs.inputs[0]) is _source(value):
            alpha, beta = float(ir.attr(hs, "alpha", 0.2)), float(ir.attr(hs, "beta", 0.5))
            return (-beta / alpha, _INF) if alpha > 0 else (-_INF, _INF)  # x · HardSigmoid(x) is 0 below -β/α
    return -_INF, _INF


def readers_clip(graph: ir.Graph, q: Tensor) -> tuple[float, float] | None:
    """The readers' view of the integer tensor ``q`` (module docstring); None when it is the tensor itself."""
    values = [dq.outputs[0] for dq in q.outputs if dq.op == "DequantizeLinear" and dq.outputs]
    if len(values) != len(q.outputs) or not values:
        return None  # read by an integer op as well (a QLinear op): it sees everything
    if any(ir.is_graph_output(graph, value) or not value.outputs for value in values):
        return None
    return _widest_flat_interval((reader, value) for value in values for reader in value.outputs)


def float_readers_clip(graph: ir.Graph, twin: Tensor) -> tuple[float, float] | None:
    """The readers' view of ``twin`` in FLOAT, where QUANT's readers no longer show it: after
    close-float-islands a HardSigmoid gate is an ``Add`` whose output quantizer does the clipping."""
    if ir.is_graph_output(graph, twin) or not twin.outputs:
        return None
    return _widest_flat_interval((reader, twin) for reader in twin.outputs)


def _widest_flat_interval(reads: Iterable[tuple[Node, Tensor]]) -> tuple[float, float] | None:
    """The interval outside which every ``(reader, value)`` read is flat; None when it is everything."""
    lo, hi = _INF, -_INF
    for reader, value in reads:
        a, b = _flat_outside(reader, value)
        lo, hi = min(lo, a), max(hi, b)
    return None if lo == -_INF and hi == _INF else (lo, hi)


def match_tensors(float_model: Model, quant_model: Model) -> MatchResult:
    """Match every quantized tensor of ``quant_model`` to its twin in ``float_model`` (module docstring).

    Only the main graphs are compared (tensors inside If/Loop bodies are not). Neither model is modified.
    """
    return _Matcher(float_model, quant_model).run()
