"""Per-layer sensitivity to quantization: what each unit of a static plan costs, in the output metric.

Given the full plan ``P`` that ``annotate-quantization`` wrote (its quantized tensors ``T(P)`` with
their scales and zero points, its stored weights ``W(P)``), a *unit* ``U`` is a quantized node — or a
fusion group: an anchor with the Relu/Clip that annotate folds into its requantization (Conv+Relu
run as one int8 kernel, so they are quantized or kept float together). Two evaluations per unit:

- ``only-quantized U``: the tensors ``U`` reads or writes in ``T(P)`` and ``U``'s stored weights are
  quantized, everything else is float;
- ``only-float U``: the full plan without ``U``: ``U``'s weights float, and a tensor of ``U`` stays
  quantized only while another quantized node reads or writes it (as ``build_plan`` would keep it).

Every evaluation uses the full plan's scales and zero points, so two evaluations differ only in
which values are quantized — and two that quantize the same values (floating a unit without weights
whose tensors its neighbours keep quantized is the full plan again) share one run. Each is an :class:`Evaluation` ``(kind, nodes)``: a pure function of
the prepared model, its ranges, the samples and the settings — units of work a caller may cache
or run elsewhere. ``only-float ()`` is the full plan; ``only-quantized ()`` is the float model.

Engines (how an evaluation is run on onnxruntime):

- ``switch`` (default): one session for every evaluation, the full plan materialized once with
  each quantized value behind a run-time switch (:mod:`._switchable`). Float reference outputs
  come from the same session with every switch off. Measures the QDQ model's ONNX semantics.
- ``rebuild``: per evaluation, the sub-plan is materialized into a copy of the model and run in its
  own session, so onnxruntime's int8 kernels compute it (slow: one session build per evaluation).

Metrics: each guard (output, metric) of :func:`onnxq.metrics.choose_guards` is read on every
evaluation against the float reference over the samples, and so is the SQNR of every float output
(decision metrics such as top-1 tie on a handful of samples; SQNR separates the units they tie).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from onnxq import ir
from onnxq.calibration.ranges import TensorRange
from onnxq.disjoint_sets import DisjointSets
from onnxq.errors import ConfigError
from onnxq.ir import Model
from onnxq.metrics import Guard, GuardSet, sqnr_of
from onnxq.plan import QuantPlan
from onnxq.runtime.session import make_session

from ._switchable import build_switchable
from .insert_qdq import materialize

__all__ = [
    "ENGINES", "KINDS", "Engine", "Evaluation", "EvaluationResult", "Evaluator", "Kind", "PlanIndex", "Selection", "Unit", "float_outputs", "fusion_units",
]

Kind = Literal["only-quantized", "only-float"]
KINDS: tuple[str, ...] = ("only-quantized", "only-float")
Engine = Literal["switch", "rebuild"]
ENGINES: tuple[str, ...] = ("switch", "rebuild")

Sample = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Evaluation:
    """One unit of work: the plan with only ``nodes`` quantized, or with only ``nodes`` kept float."""

    kind: Kind
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"evaluation kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "nodes", tuple(sorted(self.nodes)))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "nodes": list(self.nodes)}


@dataclass(frozen=True)
class Unit:
    """A quantized node, or a fusion group (anchor first, then what annotate folded into it)."""

    name: str
    nodes: tuple[str, ...]
    ops: tuple[str, ...]

    def evaluations(self) -> tuple[Evaluation, Evaluation]:
        return Evaluation("only-quantized", self.nodes), Evaluation("only-float", self.nodes)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": list(self.nodes), "ops": list(self.ops)}


@dataclass(frozen=True)
class EvaluationResult:
    """What one evaluation measured, and its cost.

    Attributes:
        values: one per guard (None: the metric does not apply to that output).
        sqnr_db: SQNR against float of each float output (:attr:`Evaluator.noise_outputs`): a
            continuous measure beside the guards, whose decision metrics (top-1, whole sequences)
            often tie on a few samples.
    """

    evaluation: Evaluation
    values: tuple[float | None, ...]
    sqnr_db: tuple[float | None, ...]
    seconds: float


@dataclass(frozen=True)
class Selection:
    """The full plan's quantized activations and stored weights one evaluation turns on."""

    activations: frozenset[str]
    weights: frozenset[tuple[str, int]]


def fusion_units(model: Model, plan: QuantPlan) -> list[Unit]:
    """The plan's quantized nodes as units, in graph order.

    A quantized node whose output is not quantized itself but read only by quantized nodes is
    fused with them (annotate folds a Relu/Clip into its anchor's requantization: the anchor's
    output gets no Q/DQ pair), so they form one unit.
    """
    quantized = set(plan.quantized_nodes)
    nodes = [n for n in ir.iter_nodes(model.graph) if n.name in quantized]
    units = DisjointSets(n.name for n in nodes)
    for node in nodes:
        for t in node.outputs:
            readers = list(t.outputs)
            if t.name and t.name not in plan.activations and readers and all(r.name in quantized for r in readers):
                for r in readers:
                    units.union(r.name, node.name)
    op_of = {n.name: n.op for n in nodes}
    return [Unit(names[0], tuple(names), tuple(op_of[n] for n in names)) for names in units.groups()]


def float_outputs(model: Model) -> list[str]:
    """The graph outputs of a floating-point type (those an SQNR is read on)."""
    return [t.name for t in model.graph.outputs if t.dtype is not None and np.issubdtype(np.dtype(t.dtype), np.floating)]


class PlanIndex:
    """Which of the full plan's tensors and weights belong to which quantized nodes."""

    def __init__(self, model: Model, plan: QuantPlan) -> None:
        quantized = set(plan.quantized_nodes)
        self.touching: dict[str, set[str]] = {name: set() for name in plan.activations}
        for node in ir.iter_nodes(model.graph):
            if node.name in quantized:
                for t in list(node.inputs) + list(node.outputs):
                    if t.name in self.touching:
                        self.touching[t.name].add(node.name)
        self.weights = frozenset((w.node, w.index) for w in plan.weights)

    def select(self, evaluation: Evaluation) -> Selection:
        """The quantized values of ``evaluation`` (see the module docstring)."""
        nodes = set(evaluation.nodes)
        if evaluation.kind == "only-quantized":
            acts = {t for t, who in self.touching.items() if who & nodes}
            weights = {k for k in self.weights if k[0] in nodes}
        else:  # a tensor no quantized node touches (none in practice) stays as the full plan has it
            acts = {t for t, who in self.touching.items() if not who or who - nodes}
            weights = {k for k in self.weights if k[0] not in nodes}
        return Selection(frozenset(acts), frozenset(weights))


class _SwitchRunner:
    """Every evaluation in one session: the switchable model (see :mod:`._switchable`)."""

    def __init__(self, model: Model, plan: QuantPlan, ranges: Mapping[str, TensorRange], threads: int) -> None:
        switchable, self.switches = build_switchable(model, plan, ranges)
        self.session = make_session(switchable, threads=threads, where=f"{model.source} (switchable int8)")
        self.names = [o.name for o in model.graph.outputs]
        self.sessions = 1

    def run(self, selection: Selection, samples: Sequence[Sample]) -> list[list[np.ndarray]]:
        switches = self.switches.feeds(selection.activations, selection.weights)
        inputs = {i.name for i in self.session.get_inputs()}
        return [self.session.run(self.names, {**{k: v for k, v in s.items() if k in inputs}, **switches}) for s in samples]


class _RebuildRunner:
    """One session per evaluation: the sub-plan materialized, run by onnxruntime's int8 kernels."""

    def __init__(self, model: Model, plan: QuantPlan, ranges: Mapping[str, TensorRange], threads: int) -> None:
        self.model, self.plan, self.ranges, self.threads = model, plan, ranges, threads
        self.intervals = _full_plan_intervals(plan, ranges)
        self.names = [o.name for o in model.graph.outputs]
        self.sessions = 0

    def run(self, selection: Selection, samples: Sequence[Sample]) -> list[list[np.ndarray]]:
        variant = ir.clone(self.model)
        materialize(variant, _sub_plan(self.plan, selection, self.intervals), self.ranges)
        ir.normalize(variant)
        session = make_session(variant, threads=self.threads, where=f"{self.model.source} (int8 candidate)")
        self.sessions += 1
        inputs = {i.name for i in session.get_inputs()}
        return [session.run(self.names, {k: v for k, v in s.items() if k in inputs}) for s in samples]


def _full_plan_intervals(plan: QuantPlan, ranges: Mapping[str, TensorRange]) -> dict[str, tuple[float, float]]:
    """The interval each activation's scale and zero point come from in the full plan.

    Mirrors :func:`.insert_qdq.activation_qparams`: a share group takes the union of its members'
    ranges (fixed intervals widened by the other members' ranges), a lone tensor its clamp.
    """
    out: dict[str, tuple[float, float]] = {}
    for members in plan.groups.values():
        tqs = [plan.activations[m] for m in members]
        fixed = [tq.fixed for tq in tqs if tq.fixed is not None]
        if fixed:
            lo, hi = min(f[0] for f in fixed), max(f[1] for f in fixed)
            free = [ranges[m] for m in members if m in ranges and not plan.activations[m].fixed]
            lo, hi = min([lo, *(r.min for r in free)]), max([hi, *(r.max for r in free)])
        else:
            lo, hi = min(ranges[m].min for m in members), max(ranges[m].max for m in members)
        if len(tqs) == 1 and tqs[0].clamp is not None:
            lo, hi = max(lo, tqs[0].clamp[0]), min(hi, tqs[0].clamp[1])
        out.update(dict.fromkeys(members, (float(lo), float(hi))))
    return out


def _sub_plan(plan: QuantPlan, selection: Selection, intervals: Mapping[str, tuple[float, float]]) -> QuantPlan:
    """The full plan restricted to ``selection``; each activation is pinned (as a fixed interval) to
    the full plan's interval, so a share group cut in parts keeps its scale and zero point."""
    acts = {k: dataclasses.replace(v, group=k, fixed=intervals[k], clamp=None) for k, v in plan.activations.items() if k in selection.activations}
    weights = [w for w in plan.weights if (w.node, w.index) in selection.weights]
    return QuantPlan(activations=acts, weights=weights, decisions=dict(plan.decisions), groups={k: [k] for k in acts})


class Evaluator:
    """Runs :class:`Evaluation` s of one prepared model against its float reference.

    Args:
        model: the model as the static pipeline prepared it (what ``plan`` names).
        plan: the full quantization plan (annotate's, before tuning).
        ranges: the calibrated ranges ``plan`` was built from.
        samples: the evaluation samples.
        guards: the (output, metric) pairs to read (:func:`onnxq.metrics.choose_guards`).
        engine: ``switch`` (one session) or ``rebuild`` (one session per evaluation).
        threads: onnxruntime intra-op threads.
    """

    def __init__(
        self, model: Model, plan: QuantPlan, ranges: Mapping[str, TensorRange], samples: Sequence[Sample], guards: Sequence[Guard],
        *, engine: Engine = "switch", threads: int = 1,
    ) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"unknown sensitivity engine '{engine}'; valid: {', '.join(ENGINES)}")
        if not samples:
            raise ConfigError("sensitivity analysis needs at least one sample to evaluate on")
        self.model, self.plan, self.ranges = model, plan, ranges
        self.samples = list(samples)
        self.guards = GuardSet(list(guards))
        self.noise_outputs = float_outputs(model)
        self._energy: list[list[float]] = []  # Σ r² of each sample's float outputs, computed once
        self.engine, self.threads = engine, threads
        self.index = PlanIndex(model, plan)
        self.units = fusion_units(model, plan)
        self.names = [o.name for o in model.graph.outputs]
        self._runner: _SwitchRunner | _RebuildRunner | None = None
        #: selection → (values, SQNRs): evaluations that quantize the same values share one run (floating a
        #: unit without weights whose tensors its neighbours keep quantized changes nothing, for one)
        self._measured: dict[Selection, tuple[tuple[float | None, ...], tuple[float | None, ...]]] = {}
        self.shared = 0
        self._reference: list[list[np.ndarray]] | None = None

    @property
    def sessions(self) -> int:
        """onnxruntime sessions built so far (the reference's included)."""
        if self._runner is None:
            return 0
        return self._runner.sessions + (1 if self.engine == "rebuild" and self._reference is not None else 0)

    def start(self) -> None:
        """Build the engine's session and the float reference now (else the first evaluation does)."""
        self._ready()

    def _ready(self) -> tuple[_SwitchRunner | _RebuildRunner, list[list[np.ndarray]]]:
        if self._runner is None:
            runner_type = _SwitchRunner if self.engine == "switch" else _RebuildRunner
            self._runner = runner_type(self.model, self.plan, self.ranges, self.threads)
        if self._reference is None:
            if isinstance(self._runner, _SwitchRunner):  # every switch off: the float model, same session
                self._reference = self._runner.run(Selection(frozenset(), frozenset()), self.samples)
            else:
                float_session = make_session(self.model, threads=self.threads, where=f"{self.model.source} (float)")
                inputs = {i.name for i in float_session.get_inputs()}
                self._reference = [float_session.run(self.names, {k: v for k, v in s.items() if k in inputs}) for s in self.samples]
            at = [self.names.index(n) for n in self.noise_outputs]
            self._energy = [[_sum_sq(outputs[i]) for i in at] for outputs in self._reference]
        return self._runner, self._reference

    def _sqnr(self, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> tuple[float | None, ...]:
        """SQNR of each float output over the samples: ``10 log10(Σ r² / Σ (r - c)²)`` (the
        registered ``sqnr`` metric, with the reference's energy computed once instead of per evaluation)."""
        at = [self.names.index(n) for n in self.noise_outputs]
        out: list[float | None] = []
        for k, i in enumerate(at):
            signal = sum(e[k] for e in self._energy)
            noise = sum(_sum_sq(np.subtract(ref[i], cand[i], dtype=np.float32)) for ref, cand in zip(reference, candidate))
            out.append(round(sqnr_of(signal, noise), 6) if math.isfinite(noise) else None)
        return tuple(out)

    def evaluate(self, evaluation: Evaluation) -> EvaluationResult:
        """Run ``evaluation`` on every sample and read every guard against float.

        Raises:
            ConfigError: a metric fails (a user function raising names itself, the output and the sample).
        """
        start = time.perf_counter()
        runner, reference = self._ready()
        selection = self.index.select(evaluation)
        if selection in self._measured:  # the same values quantized as an earlier evaluation: the same outputs
            self.shared += 1
            values, noise = self._measured[selection]
            return EvaluationResult(evaluation, values, noise, time.perf_counter() - start)
        if not selection.activations and not selection.weights:
            candidate = reference  # nothing quantized: the float model itself
        else:
            candidate = runner.run(selection, self.samples)
        values = tuple(r["value"] for r in self.guards.read(self.names, zip(reference, candidate)).records)
        self._measured[selection] = (values, self._sqnr(reference, candidate))
        return EvaluationResult(evaluation, values, self._measured[selection][1], time.perf_counter() - start)


def _sum_sq(array: np.ndarray) -> float:
    flat = np.ravel(np.asarray(array, np.float32))
    return float(np.dot(flat, flat))
