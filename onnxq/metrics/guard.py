"""Accuracy guards: which metric, with which bar, decides that an output is still good enough.

A guard is (output, metric, threshold). :func:`choose_guards` gives one per graph output: the
user's (``--metric``) where given, else :func:`default_guard`, a pure function of the output's
shape, dtype and producers in the float model (and, when known, the calibrated ranges):

============================================================  ==========================================
output                                                        default guard
============================================================  ==========================================
``Concat`` (through Identity) of inputs of different kinds    ``worst_slice_sqnr`` along the Concat axis,
(probabilities from Sigmoid/Softmax next to unbounded          one slice per Concat input (``split``)
values such as pixel boxes) or ranges > 10x apart
class scores (Softmax/LogSoftmax/Gemm/MatMul, through         ``sequence_agreement`` (class axis last;
reshapes) of rank >= 3 with a position axis: a recurrent      ``batch_axis`` where the batch dim is)
op (LSTM/GRU/RNN) upstream, or a Softmax/LogSoftmax whose
position dim is symbolic (it grows with the input)
other class scores                                            ``top1``
anything else                                                 ``cosine``
============================================================  ==========================================

Thresholds, when a spec does not write one (``metric>=T`` / ``metric<=T``):

- decision metrics (``top1``, ``sequence_agreement``, ``topk``, ``threshold``) share the guard's
  ``min_agreement`` (0.98): the share of decisions — a row's class, a whole string, a top-k set,
  the detections above a threshold — that must agree with float. For a sequence the decision is
  the whole sequence: at 0.98 per step a 40-step string agrees only 0.98^40 = 45 % of the time, so
  requiring 0.98 of *strings* is what keeps the recogniser's output as float's.
- ``cosine`` / ``worst_slice_cosine`` use ``min_cosine`` (0.97, about 12 dB of SQNR).
- ``worst_slice_sqnr`` defaults to 30 dB (noise RMS 3 % of the slice's RMS). The bar is higher than
  the whole-output cosine's 12 dB because a slice of a heterogeneous Concat is read by a decision
  (a score threshold, an IoU), not averaged. On the ``yolo-detector`` builder (outlier gain 1 to
  120), detection F1 against float goes 0.97 / 0.94 / 0.91 / 0.82 / 0.67 as the score segment's
  SQNR goes 33 / 28 / 23 / 17 / 10 dB: 30 dB is where F1 0.95 is reached. Ordinary int8 keeps every
  segment of such outputs at 32-38 dB (the ``detector`` builder and ``yolo-detector`` without
  outliers), so the bar catches a broken segment without floating a healthy one.
- other metrics use their ``default_threshold``; those without one (``max_abs``, ``mean_abs``,
  user functions) need the threshold written in the spec.

Guard specs: ``METRIC[>=T|<=T][@OUTPUT]`` where METRIC is a metric spec (``topk:k=5``,
``mymodule:f1``). Without ``@OUTPUT`` a spec guards every output; several specs may guard one
output (all must hold). A user function's direction follows the comparison written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .. import ir
from ..errors import ConfigError
from ..ir import Model, Node, Tensor
from ._base import Metric
from ._decisions import SequenceAgreement, ThresholdAgreement, Top1, TopK
from ._registry import make_metric
from ._slices import WorstSliceCosine, WorstSliceSQNR
from ._tensor import Cosine
from ._user import CallableMetric

__all__ = ["Guard", "GuardSpec", "check_guard", "choose_guards", "default_guard", "parse_guard", "SCORE_OPS"]

#: Ops whose output is read as class scores (arg-max decisions).
SCORE_OPS = frozenset({"Softmax", "LogSoftmax", "Gemm", "MatMul"})
_PASS_THROUGH = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_RECURRENT = frozenset({"LSTM", "GRU", "RNN"})
_BOUNDED = frozenset({"Sigmoid", "Softmax", "HardSigmoid", "Tanh"})
_AGREEMENT = (Top1, SequenceAgreement, TopK, ThresholdAgreement)
_COSINE = (Cosine, WorstSliceCosine)


@dataclass(frozen=True)
class GuardSpec:
    """A parsed ``METRIC[>=T|<=T][@OUTPUT]``."""

    metric: Metric
    threshold: float | None = None
    output: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Guard:
    """One output's guard: ``metric`` measured against float must meet ``threshold``.

    Attributes:
        why: how it was chosen (the default rule that fired, or the user's spec).
    """

    output: str
    metric: Metric
    threshold: float
    why: str

    @property
    def key(self) -> str:
        """The name the tuner's records use: ``agreement`` / ``cosine`` for the classic guards, else the spec."""
        if isinstance(self.metric, Top1) and self.metric.axis == -1:
            return "agreement"
        return "cosine" if type(self.metric) is Cosine else self.metric.spec

    def meets(self, value: float | None) -> bool:
        return self.metric.meets(value, self.threshold)

    def record(self, value: float | None, detail: str = "") -> dict[str, Any]:
        """The JSON record of this guard with its measured ``value`` (rounded; None: not applicable)."""
        out: dict[str, Any] = {
            "output": self.output,
            "metric": self.metric.spec,
            "threshold": self.threshold,
            "direction": self.metric.direction,
            "value": None if value is None else (value if math.isinf(value) else round(value, 6)),
            "meets": self.meets(value),
            "why": self.why,
        }
        if detail:
            out["worst"] = detail
        return out


def parse_guard(spec: str | GuardSpec) -> GuardSpec:
    """``"worst_slice_sqnr:axis=1>=25@detections"`` → GuardSpec(metric, 25.0, "detections").

    Raises:
        ConfigError: a bad metric spec, a threshold that is not a number, or a comparison against
            the metric's direction (``max_abs>=0.1``).
    """
    if isinstance(spec, GuardSpec):
        return spec
    text = spec.strip()
    body, at, output = text.partition("@")
    if at and not output.strip():
        raise ConfigError(f"metric '{text}': nothing after '@' (expected an output name)")
    threshold: float | None = None
    direction = None
    for op in (">=", "<="):
        if op in body:
            body, _, value = body.rpartition(op)
            try:
                threshold = float(value)
            except ValueError:
                raise ConfigError(f"metric '{text}': threshold '{value.strip()}' after '{op}' is not a number") from None
            if math.isnan(threshold):
                raise ConfigError(f"metric '{text}': threshold is NaN")
            direction = "higher" if op == ">=" else "lower"
            break
    metric = make_metric(body)
    if direction is not None and metric.direction != direction:
        if isinstance(metric, CallableMetric) and ":direction=" not in body:
            metric = replace(metric, direction=direction)  # type: ignore[arg-type]
        else:
            better = "higher" if metric.direction == "higher" else "lower"
            op = ">=" if better == "higher" else "<="
            raise ConfigError(f"metric '{text}': {better} is better for {metric.spec}; write '{metric.spec}{op}{threshold:g}'")
    return GuardSpec(metric, threshold, output.strip() or None, text)


def check_guard(spec: str | GuardSpec) -> GuardSpec:
    """:func:`parse_guard`, and a bar to check against: written, or the metric's default.

    Raises:
        ConfigError: see :func:`parse_guard`; or a metric without a default threshold given none.
    """
    parsed = parse_guard(spec)
    _threshold(parsed, 0.0, 0.0)
    return parsed


def _through(t: Tensor, ops: frozenset[str]) -> tuple[Tensor, Node | None]:
    """Follow ``t`` back through single-input ``ops``: the first tensor and producer that are not."""
    node = ir.producer(t)
    while node is not None and node.op in ops and node.inputs:
        t = node.inputs[0]
        node = ir.producer(t)
    return t, node


def _kind(t: Tensor) -> tuple[bool, str]:
    """(bounded, producing op) of ``t``: bounded for probabilities (Sigmoid/Softmax/HardSigmoid/Tanh),
    looking through reshapes and through Concats whose inputs are all of one kind."""
    _, node = _through(t, _PASS_THROUGH)
    if node is None:
        return False, "graph input" if not ir.is_constant(t) else "constant"
    if node.op in _BOUNDED:
        return True, node.op
    if node.op == "Concat":
        kinds = {_kind(i) for i in node.inputs}
        if len({bounded for bounded, _ in kinds}) == 1:
            return kinds.pop()
    return False, node.op


def _has_recurrent_ancestor(t: Tensor, limit: int = 100_000) -> bool:
    seen: set[int] = set()
    stack = [t]
    while stack and len(seen) < limit:
        node = ir.producer(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op in _RECURRENT:
            return True
        stack.extend(node.inputs)
    return False


def default_guard(model: Model, output: str | Tensor, ranges: Mapping[str, Any] | None = None) -> tuple[Metric, str]:
    """The default metric for ``output`` and the rule that chose it (see the module docstring).

    ``ranges`` (tensor name → object with ``min``/``max``) lets a Concat count as heterogeneous when
    its inputs' calibrated ranges are more than 10x apart even if their producers look alike.
    """
    out = output if not isinstance(output, str) else next(t for t in model.graph.outputs if t.name == output)
    concat = _concat_guard(model, out, ranges or {})
    if concat is not None:
        return concat
    _, producer = _through(out, _PASS_THROUGH)
    if producer is None or producer.op not in SCORE_OPS:
        return Cosine(), "default: not class scores"
    rank = len(out.shape) if out.shape is not None else None
    if rank is not None and rank >= 3:
        batch_axis = _batch_axis(model, out)
        if _has_recurrent_ancestor(out):
            return SequenceAgreement(batch_axis=batch_axis), f"default: {producer.op} scores over positions after a recurrent op"
        if producer.op in ("Softmax", "LogSoftmax") and _symbolic_position(out, batch_axis):
            return SequenceAgreement(batch_axis=batch_axis), f"default: {producer.op} scores over a symbolic position axis"
    return Top1(), f"default: {producer.op} class scores"


def _batch_axis(model: Model, out: Tensor) -> int | None:
    """The output axis whose dim is the inputs' batch symbol (None if not exactly one)."""
    symbols = {i.shape[0] for i in model.graph.inputs if i.shape and isinstance(i.shape[0], str)}
    hits = [k for k, d in enumerate((out.shape or [])[:-1]) if isinstance(d, str) and d in symbols]
    return hits[0] if len(hits) == 1 else None


def _symbolic_position(out: Tensor, batch_axis: int | None) -> bool:
    dims = list(out.shape or [])[:-1]
    return any(isinstance(d, str) or d is None for k, d in enumerate(dims) if k != batch_axis)


def _concat_guard(model: Model, out: Tensor, ranges: Mapping[str, Any]) -> tuple[Metric, str] | None:
    _, node = _through(out, frozenset({"Identity"}))
    if node is None or node.op != "Concat" or len(node.inputs) < 2:
        return None
    kinds = [_kind(i) for i in node.inputs]
    mixed = len({bounded for bounded, _ in kinds}) > 1
    spans = [max(abs(ranges[i.name].min), abs(ranges[i.name].max)) for i in node.inputs if i.name in ranges]
    apart = len(spans) == len(node.inputs) and min(spans) > 0 and max(spans) / min(spans) > 10
    if not mixed and not apart:
        return None
    rank = len(out.shape) if out.shape is not None else None
    axis = int(node.attrs.get("axis", 0))
    axis = axis % rank if rank else axis
    split = _segment_sizes(model, node, axis)
    reasons = [r for r, hit in (("probabilities beside unbounded values", mixed), ("ranges more than 10x apart", apart)) if hit]
    why = f"default: Concat along axis {axis} of {' and '.join(reasons)} (from {', '.join(op for _, op in kinds)})"
    return WorstSliceSQNR(axis=axis, split=split), why


def _segment_sizes(model: Model, concat: Node, axis: int) -> tuple[int, ...]:
    """Sizes of the Concat's inputs along ``axis`` (from the shapes, inferred on a copy if needed);
    empty when one is unknown (then every index is a slice)."""
    sizes = _sizes(concat.inputs, axis)
    if sizes is None:
        copy = ir.clone(model)
        if ir.infer_shapes(copy):
            twin = next((n for n in ir.iter_nodes(copy.graph) if n.name == concat.name and n.op == "Concat"), None)
            sizes = _sizes(twin.inputs, axis) if twin is not None else None
    return tuple(sizes or ())


def _sizes(inputs: Sequence[Tensor], axis: int) -> list[int] | None:
    sizes = []
    for t in inputs:
        shape = t.shape
        if shape is None or not -len(shape) <= axis < len(shape) or not isinstance(shape[axis], int):
            return None
        sizes.append(int(shape[axis]))
    return sizes


def _threshold(spec: GuardSpec, min_agreement: float, min_cosine: float) -> float:
    if spec.threshold is not None:
        return spec.threshold
    if isinstance(spec.metric, _AGREEMENT):
        return min_agreement
    if isinstance(spec.metric, _COSINE):
        return min_cosine
    if spec.metric.default_threshold is not None:
        return spec.metric.default_threshold
    op = ">=" if spec.metric.direction == "higher" else "<="
    raise ConfigError(f"metric '{spec.text or spec.metric.spec}' has no default threshold: write '{spec.metric.spec}{op}VALUE'")


def choose_guards(
    model: Model,
    specs: Sequence[str | GuardSpec] = (),
    *,
    min_agreement: float = 0.98,
    min_cosine: float = 0.97,
    ranges: Mapping[str, Any] | None = None,
    chooser: Callable[[Model, Tensor, Mapping[str, Any] | None], tuple[Metric, str]] = default_guard,
) -> list[Guard]:
    """The guards of every graph output of ``model`` (the float model), in output order.

    Raises:
        ConfigError: a bad spec, a spec naming an output the model does not have (the message lists
            them), or a metric without a default threshold given none.
    """
    parsed = [parse_guard(s) for s in specs]
    names = [t.name for t in model.graph.outputs]
    for p in parsed:
        if p.output is not None and p.output not in names:
            raise ConfigError(f"metric '{p.text}': the model has no output '{p.output}'; outputs: {', '.join(names)}")
    guards: list[Guard] = []
    for out in model.graph.outputs:
        mine = [p for p in parsed if p.output == out.name] or [p for p in parsed if p.output is None]
        if not mine:
            metric, why = chooser(model, out, ranges)
            mine, whys = [GuardSpec(metric)], [why]
        else:
            whys = [f"given: {p.text or p.metric.spec}" for p in mine]
        guards += [Guard(out.name, p.metric, _threshold(p, min_agreement, min_cosine), why) for p, why in zip(mine, whys)]
    return guards
