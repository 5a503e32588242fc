"""``mixed-precision``: the fastest per-unit precisions that still meet an accuracy target.

Runs in the static pipeline in place of ``tune-latency`` when an accuracy target or a latency
constraint is given (``onnxq convert --accuracy-target 'cosine>=0.999' --min-speedup 1.5``).
Where tune-latency floats whole node classes until its default guards hold, this pass chooses a
precision per *unit* (a fusion group of the static plan, or a MatMul/Gemm/LSTM only dynamic
quantization can take) among ``int8`` (static Q/DQ), ``dynamic-int8``, ``int16`` (16-bit
activation Q/DQ), ``fp16`` and ``fp32`` (:mod:`._mixed_units`; written by :mod:`._mixed_apply`),
and minimizes latency measured on ``runtime`` (onnxruntime, or the deployment target's runtime
when it runs here) subject to the target:

1. rank the units by sensitivity (:mod:`._mixed_rank`: each lowered alone, against float);
2. search (:mod:`._mixed_search`): all lowest; else bisect how many of the most sensitive units
   stay fp32, then try each of those back at a cheaper precision; then class moves kept only when
   measured faster; the fastest point meeting the target is chosen;
3. write the plan (units at ``dynamic-int8``, ``fp16`` or ``fp32`` are kept out of it, each with its
   reason; ``int16`` units' activations are 16-bit in it) and the precision map;
   ``apply-precision-map``, after ``insert-qdq``, rewrites the ``dynamic-int8`` nodes as
   ``quantize-dynamic`` does and computes the ``fp16`` nodes in float16.

The sensitivity ranking reads the static plan's int8 numerics on onnxruntime (it only orders the
units); every candidate plan is evaluated and timed on ``runtime``.

Replay: the record keeps the search's decision per unit (``MixedPrecisionRecord.assignment``);
``replay`` (a previous report) re-applies it without evaluating or timing anything, so the same
model, data and options give a byte-identical file.

Targets (``accuracy_target``, each one guard spec ``METRIC>=T[@OUTPUT]`` of :mod:`onnxq.metrics`,
plus ``agreement>=T``: the bar of every class-score output's default decision metric — top-1, or
whole-sequence agreement after a recurrent op) are read against the float model on the first
``eval_samples`` calibration samples, like tune-latency's guard; the default guards apply to outputs
no target names. Latency is the interleaved median of one sample at ``threads`` threads
(tune-latency's timer), the speedup that median's ratio to float's in the same round.

When the target cannot be met even with every unit fp32, the best plan seen is written, the record
says so plainly (``MixedPrecisionRecord.unmet``) and ``onnxq convert`` exits with code 3; the same
when no feasible plan meets ``max_latency_ms`` / ``min_speedup`` (the fastest feasible one is written).
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.calibration.ranges import TensorRange
from onnxq.errors import ConfigError
from onnxq.ir import Model
from onnxq.metrics import SequenceAgreement, ThresholdAgreement, Top1, TopK, check_guard, sqnr_of
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.plan import AccuracyGuardConfig, FrontierPoint, MixedPrecisionRecord, QuantizationConfig, QuantPlan, TuningRecord, TuningStep
from onnxq.progress import status
from onnxq.runtime.backends import make_runtime_session

from ._mixed_apply import apply_dynamic, apply_fp16, dynamic_config, node_precisions, widen_activations
from ._mixed_rank import rank_units
from ._mixed_search import Assignment, Point, search
from ._mixed_units import DYNAMIC, FP16, FP32, INT8, INT16, PRECISIONS, MixedUnit, check_precisions, counts, mixed_units, search_space, wide_dtype
from .annotate import build_plan
from .close_float_islands import close_islands
from .insert_qdq import materialize
from .tune_latency import NODE_CLASSES, LatencyTrials, PlanTuningPass, TuneLatencyConfig, TuningInputs, check_tuner_options, read_report

__all__ = [
    "MixedPrecision", "MixedPrecisionConfig", "ApplyPrecisionMap", "ApplyPrecisionMapConfig", "MIXED", "PRECISIONS", "INT16", "parse_targets", "search_space",
]

log = logging.getLogger(__name__)

#: Prefix of every reason this pass writes.
MIXED = "mixed precision:"
_AGREEMENT = re.compile(r"\s*agreement\s*>=\s*([^@]+?)\s*")
#: Metrics an ``agreement>=T`` target bars (through ``min_agreement``).
_DECISIONS = (Top1, SequenceAgreement, TopK, ThresholdAgreement)
#: Glue classes tried as latency moves (tune-latency's classes, without the anchors).
_GLUE = tuple(k for k in NODE_CLASSES if k not in ("Conv/ConvTranspose", "MatMul/Gemm"))


def parse_targets(targets: Sequence[str]) -> tuple[tuple[str, ...], float | None]:
    """``("cosine>=0.999", "agreement>=0.99")`` → (guard specs, the agreement bar or None).

    Raises:
        ConfigError: a spec :func:`onnxq.metrics.check_guard` refuses, an ``agreement`` bar outside
            [0, 1], or a target without a bar.
    """
    specs: list[str] = []
    agreement: float | None = None
    for text in targets:
        m = _AGREEMENT.fullmatch(text)
        if m is not None:
            try:
                agreement = float(m[1])
            except ValueError:
                raise ConfigError(f"accuracy target '{text}': '{m[1]}' is not a number") from None
            if not 0.0 <= agreement <= 1.0:
                raise ConfigError(f"accuracy target '{text}': an agreement bar is a share in [0, 1]")
            continue
        parsed = check_guard(text)
        if parsed.threshold is None:
            raise ConfigError(f"accuracy target '{text}' has no bar: write METRIC>=VALUE (or <=), e.g. 'cosine>=0.999'")
        specs.append(text)
    return tuple(specs), agreement


@dataclass(frozen=True)
class MixedPrecisionConfig(AccuracyGuardConfig):
    """Options of ``mixed-precision`` (besides the accuracy guard's, see :class:`AccuracyGuardConfig`).

    Attributes:
        accuracy_target: targets ``METRIC>=T[@OUTPUT]`` or ``agreement>=T`` (see the module docstring);
            empty: the default guards (``min_agreement`` / ``min_cosine``).
        max_latency_ms: the chosen plan's median must not exceed this (None: no bound).
        min_speedup: the chosen plan must be at least this much faster than float (None: no bound).
        threads: intra-op threads for timing.
        budget_s: time budget of each timing (a pair of medians stops early past it).
        min_gain: a latency move is kept only when faster by at least this fraction.
        runtime: where candidates run (:data:`onnxq.runtime.backends.RUNTIMES`).
        precisions: the search space: the precisions a unit may take (``fp32`` is always one; a
            deployment target removes those its runtime cannot run).
        replay: a previous conversion report (JSON); its recorded assignment is re-applied without
            measuring.
    """

    accuracy_target: tuple[str, ...] = ()
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    threads: int = 1
    budget_s: float = 30.0
    min_gain: float = 0.05
    runtime: str = "onnxruntime"
    precisions: tuple[str, ...] = PRECISIONS
    replay: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.accuracy_target, str):
            object.__setattr__(self, "accuracy_target", (self.accuracy_target,))
        object.__setattr__(self, "precisions", check_precisions((self.precisions,) if isinstance(self.precisions, str) else self.precisions, "mixed-precision"))
        super().__post_init__()
        parse_targets(self.accuracy_target)
        for name in ("max_latency_ms", "min_speedup"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"mixed-precision: {name} must be a positive number, got {value}")
        check_tuner_options("mixed-precision", self)

    def guard_config(self) -> TuneLatencyConfig:
        """The tuner's config carrying these targets (its guards and timer are reused)."""
        specs, agreement = parse_targets(self.accuracy_target)
        return TuneLatencyConfig(
            min_agreement=self.min_agreement if agreement is None else agreement, min_cosine=self.min_cosine, eval_samples=self.eval_samples,
            max_accuracy_trials=self.max_accuracy_trials, accuracy_metric=tuple(self.accuracy_metric) + specs, threads=self.threads,
            budget_s=self.budget_s, min_gain=self.min_gain, runtime=self.runtime,
        )


class _MixedTrials(LatencyTrials):
    """tune-latency's trials (float session, guards, samples, timer) building mixed assignments."""

    def __init__(
        self, model: Model, ranges: Mapping[str, TensorRange], cfg: QuantizationConfig, samples: list[Mapping[str, np.ndarray]], mcfg: MixedPrecisionConfig
    ) -> None:
        super().__init__(model, ranges, cfg, samples, mcfg.guard_config())
        self.dcfg = dynamic_config(cfg)
        self.units: list[MixedUnit] = []
        self.names = [o.name for o in self.float_session.get_outputs()]
        self.float_values = [r["value"] for r in self.guards.read(self.names, zip(self.float_outputs, self.float_outputs)).records]
        self._sessions: OrderedDict[Assignment, tuple[Any, QuantPlan, dict[str, str]]] = OrderedDict()

    def precisions(self, assignment: Assignment) -> dict[str, str]:
        return unit_precisions(self.units, assignment)

    def build_precisions(self, precisions: Mapping[str, str]) -> tuple[Any, QuantPlan, dict[str, str]]:
        """A session of the model with ``precisions`` (node → precision; others as the plan has them),
        its static plan and what each of those nodes actually got (a refused rewrite: ``fp32``)."""
        plan = plan_for(self.model, self.ranges, self.cfg, precisions)
        variant = ir.clone(self.model)
        materialize(variant, plan, self.ranges)
        ir.normalize(variant)
        got = node_precisions(plan, precisions)
        refused = apply_dynamic(variant, [n for n, p in got.items() if p == DYNAMIC], self.dcfg) if DYNAMIC in got.values() else {}
        refused.update(apply_fp16(variant, [n for n, p in got.items() if p == FP16], quiet=True))
        got.update(dict.fromkeys(refused, FP32))
        close_islands(variant)  # as the pipeline ships it: close-float-islands runs after apply-precision-map
        session = make_runtime_session(variant, self.tcfg.runtime, threads=self.tcfg.threads, where=f"{self.model.source} (mixed-precision candidate)")
        return session, plan, got

    def session(self, assignment: Assignment) -> tuple[Any, QuantPlan, dict[str, str]]:
        if assignment not in self._sessions:
            self._sessions[assignment] = self.build_precisions(self.precisions(assignment))
            while len(self._sessions) > 4:  # sessions hold the weights: keep a few
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(assignment)
        return self._sessions[assignment]

    # the search's Measurer protocol
    def evaluate(self, assignment: Assignment) -> tuple[Mapping[str, float], Mapping[str, int]]:
        session, plan, got = self.session(assignment)
        nodes = counts(got)
        # quantized glue outside every unit (none today: every quantized node is in a unit) counts as int8
        nodes[INT8] += len(set(plan.quantized_nodes) - set(got))
        return self.accuracy(session), nodes

    def time_pair(self, a: Assignment | None, b: Assignment) -> tuple[float, float]:
        first = self.float_session if a is None else self.session(a)[0]
        return self.time(first, self.session(b)[0])

    def gain(self, before: Mapping[str, float], after: Mapping[str, float]) -> float:
        return self.guards.gain(before, after)

    def budget_left(self) -> int:
        return self.trials_left

    def measure_alone(self, unit: MixedUnit) -> tuple[list[float | None], float]:
        """Guard values and worst output SQNR with only ``unit`` dynamic (every other unit fp32)."""
        precisions = {n: FP32 for u in self.units for n in u.nodes}
        precisions.update(unit.precisions(DYNAMIC))
        session, _, _ = self.build_precisions(precisions)
        outs = [session.run(None, dict(s)) for s in self.samples]
        values = [r["value"] for r in self.guards.read(self.names, zip(self.float_outputs, outs)).records]
        worst = math.inf
        for i in range(len(self.names)):
            ref = [np.asarray(o[i], np.float64) for o in self.float_outputs]
            if not ref or not np.issubdtype(ref[0].dtype, np.floating):
                continue
            signal = sum(float(np.sum(r * r)) for r in ref)
            noise = sum(float(np.sum((r - np.asarray(o[i], np.float64)) ** 2)) for r, o in zip(ref, outs))
            worst = min(worst, sqnr_of(signal, noise))
        return values, worst


def unit_precisions(units: Sequence[MixedUnit], assignment: Sequence[str]) -> dict[str, str]:
    """Node → precision of every unit's node when unit ``i`` takes ``assignment[i]``."""
    out: dict[str, str] = {}
    for unit, p in zip(units, assignment):
        out.update(unit.precisions(p))
    return out


_KEPT_OUT = {DYNAMIC: "dynamic int8", FP16: "fp16", FP32: "kept fp32"}


def plan_for(model: Model, ranges: Mapping[str, TensorRange], cfg: QuantizationConfig, precisions: Mapping[str, str]) -> QuantPlan:
    """The static plan for ``precisions``: nodes at ``dynamic-int8`` / ``fp16`` / ``fp32`` kept out, each
    with its reason; the activations of ``int16`` nodes 16-bit (:func:`._mixed_apply.widen_activations`)."""
    forced = {n: f"{MIXED} {_KEPT_OUT[p]}" for n, p in precisions.items() if p not in (INT8, INT16)}
    plan = build_plan(model, ranges, cfg, forced)
    wide = [n for n, p in precisions.items() if p == INT16]
    if wide:
        widen_activations(model, plan, wide, wide_dtype(cfg) or "uint16", cfg.activation_dtype)
    return plan


def _classes(model: Model) -> dict[str, Callable[[MixedUnit], bool]]:
    """The latency moves' classes over units: a unit is in a class when its first node is."""
    nodes = {n.name: n for n in model.graph.nodes}

    def of(predicate: Callable[[ir.Node], bool]) -> Callable[[MixedUnit], bool]:
        return lambda u: u.name in nodes and predicate(nodes[u.name])

    return {label: of(NODE_CLASSES[label]) for label in (*_GLUE, "MatMul/Gemm")}


@register_pass("mixed-precision")
class MixedPrecision(PlanTuningPass[MixedPrecisionConfig]):
    """Choose int8 / dynamic int8 / int16 / fp16 / fp32 per unit: the fastest plan measured that meets the accuracy target."""

    activity = "mixed-precision search"

    def tune(self, model: Model, ctx: PassContext, given: TuningInputs) -> PassResult:
        plan, cfg, ranges = given.plan, given.cfg, given.ranges
        units = mixed_units(model, plan, cfg, ranges, precisions=self.config.precisions)
        if not units:
            return PassResult(model, False, {"skipped": "nothing to quantize"})
        with status("mixed precision: ranking units by sensitivity", ctx.progress) as shown:
            trials = _MixedTrials(model, ranges, cfg, given.samples, self.config)
            trials.units = units
            if parse_targets(self.config.accuracy_target)[1] is not None and not any(isinstance(g.metric, _DECISIONS) for g in trials.guards.guards):
                ctx.note(
                    "mixed precision: an 'agreement' target bars class-score outputs, and this model has none; its outputs keep "
                    f"their default guards ({', '.join(sorted({g.metric.spec for g in trials.guards.guards}))}): give e.g. 'cosine>=0.999' instead"
                )
            ranked, ranking_evaluations = rank_units(
                model, plan, ranges, trials.samples, trials.guards.guards, units, trials.measure_alone, trials.float_values, threads=self.config.threads
            )
            trials.units = [r.unit for r in ranked]
            shown.update(f"mixed precision: searching {len(units)} units on {self.config.runtime}")
            trials.start_clock()
            result = search(
                trials.units, trials, classes=_classes(model), min_gain=self.config.min_gain,
                max_latency_ms=self.config.max_latency_ms, min_speedup=self.config.min_speedup,
            )
        chosen = result.chosen
        _, final_plan, _ = trials.session(chosen.assignment)
        by_unit = dict(zip((u.name for u in trials.units), chosen.assignment))
        assignment = {u.name: by_unit[u.name] for u in units}  # graph order
        record = self._record(result, node_precisions(final_plan, unit_precisions(units, list(assignment.values()))), ranking_evaluations)
        record.assignment = assignment
        for line in _notes(record):
            ctx.note(line)
        ctx.plan = final_plan
        steps = [_step(p) for p in result.points]
        ctx.tuning = TuningRecord(threads=self.config.threads, steps=steps, guards=list(getattr(chosen.reading, "records", [])), mixed=record)
        stats = {"units": len(units), "evaluations": result.evaluations + ranking_evaluations, "timed": result.timed, "met": record.met}
        stats.update(counts(record.precisions))
        return PassResult(model, False, stats)

    def replay(self, model: Model, ctx: PassContext, given: TuningInputs) -> PassResult:
        """Re-apply the assignment a previous report recorded: same plan, same map, nothing measured."""
        recorded = _recorded(self.config.replay)
        units = {u.name: u for u in mixed_units(model, given.plan, given.cfg, given.ranges)}
        assignment: dict[str, str] = recorded["assignment"]
        unknown = sorted(set(assignment) - set(units))
        if unknown:
            raise ConfigError(f"mixed-precision: replay report '{self.config.replay}' assigns unit(s) this model does not have: {', '.join(unknown[:5])}")
        bad = sorted({p for p in assignment.values() if p not in PRECISIONS})
        if bad:
            raise ConfigError(f"mixed-precision: replay report '{self.config.replay}' has unknown precision(s) {', '.join(bad)}")
        precisions = unit_precisions([units[n] for n in assignment], list(assignment.values()))
        ctx.plan = plan_for(model, given.ranges, given.cfg, precisions)
        record = MixedPrecisionRecord(
            targets=list(recorded.get("targets", [])), max_latency_ms=recorded.get("max_latency_ms"), min_speedup=recorded.get("min_speedup"),
            met=bool(recorded.get("met", True)), unmet=str(recorded.get("unmet", "")), precisions=node_precisions(ctx.plan, precisions),
            chosen=str(recorded.get("chosen", "")), assignment=dict(assignment), runtime=str(recorded.get("runtime", "onnxruntime")),
            replayed=self.config.replay,
        )
        ctx.tuning = TuningRecord(threads=self.config.threads, replayed=self.config.replay, replayed_nodes=len(precisions), mixed=record)
        ctx.note(f"mixed precision: replayed the assignment of '{self.config.replay}' ({len(assignment)} units; nothing evaluated or timed)")
        return PassResult(model, False, {"replayed": len(assignment), **counts(record.precisions)})

    def _record(self, result: Any, precisions: dict[str, str], ranking_evaluations: int) -> MixedPrecisionRecord:
        targets = list(self.config.accuracy_target) or ["default guards"]
        chosen = result.chosen
        unmet = ""
        if not result.accuracy_met:
            where = "even with every unit fp32" if chosen.assignment and all(p == FP32 for p in chosen.assignment) else "within the evaluation budget"
            unmet = (
                f"accuracy target {', '.join(targets)} not met {where} "
                f"(best seen: {_shortfall(chosen)}); wrote the best plan found ('{chosen.label}')"
            )
        elif not result.latency_met:
            met = ", ".join(targets)
            unmet = f"latency constraint not met: {result.latency_shortfall} for the fastest plan meeting {met} ('{chosen.label}'); wrote that plan"
        key = next(iter(k for k in chosen.reading if k not in ("agreement", "cosine")), None) or _primary_key(chosen.reading)
        frontier = [
            FrontierPoint(
                p.label, _value(p.reading, key), key, p.meets, p.nodes[INT8], p.nodes[DYNAMIC],
                _round(p.ms), _round(p.float_ms), None if p.speedup is None else round(p.speedup, 3), p.nodes[INT16], p.nodes[FP16],
            )
            for p in result.points
        ]
        return MixedPrecisionRecord(
            targets=targets, max_latency_ms=self.config.max_latency_ms, min_speedup=self.config.min_speedup,
            met=result.accuracy_met and result.latency_met, unmet=unmet, precisions=precisions,
            evaluations={"sensitivity": ranking_evaluations, "search": result.evaluations, "timed": result.timed},
            frontier=frontier, chosen=chosen.label, runtime=self.config.runtime,
        )


def _recorded(path: str) -> dict[str, Any]:
    """The mixed-precision record of a previous report, with its per-unit assignment."""
    report = read_report(path, "mixed-precision")
    mixed = report.get("mixed_precision")
    if not isinstance(mixed, dict):
        raise ConfigError(
            f"mixed-precision: replay report '{path}' records no mixed-precision search (a tune-latency report?); "
            "replay it without --accuracy-target / --max-latency-ms / --min-speedup"
        )
    if not isinstance(mixed.get("assignment"), dict) or not mixed["assignment"]:
        raise ConfigError(f"mixed-precision: replay report '{path}' has no per-unit assignment (written by an older onnxq); convert again with --report")
    return mixed


def _primary_key(reading: Mapping[str, float]) -> str:
    """``agreement`` when a decision output is guarded (its value moved off 1.0 or is read), else ``cosine``."""
    records = getattr(reading, "records", [])
    metrics = {r.get("metric") for r in records}
    return "agreement" if "top1" in metrics else "cosine"


def _value(reading: Mapping[str, float], key: str) -> float | None:
    value = reading.get(key)
    return None if value is None else float(value)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _shortfall(p: Point) -> str:
    records = getattr(p.reading, "records", [])
    missed = [f"{r['metric']}@{r['output']} {r['value']} vs {r['threshold']:g}" for r in records if not r.get("meets", True)]
    return ", ".join(missed) or ", ".join(f"{k} {v:g}" for k, v in p.reading.items())


def _step(p: Point) -> TuningStep:
    return TuningStep(
        p.label, float_ms=_round(p.float_ms), int8_ms=_round(p.ms), speedup=None if p.speedup is None else round(p.speedup, 3),
        accuracy=dict(p.reading), meets_targets=p.meets, guards=list(getattr(p.reading, "records", [])),
    )


def _notes(record: MixedPrecisionRecord) -> list[str]:
    n = counts(record.precisions)
    spent = record.evaluations
    line = (
        f"mixed precision: {n[INT8]} nodes int8, {n[DYNAMIC]} dynamic int8, {n[INT16]} int16, {n[FP16]} fp16, {n[FP32]} fp32 "
        f"({spent.get('sensitivity', 0)} sensitivity + {spent.get('search', 0)} search evaluations, {spent.get('timed', 0)} plans timed "
        f"on {record.runtime})"
    )
    return [line] + ([record.unmet] if record.unmet else [])


@dataclass(frozen=True)
class ApplyPrecisionMapConfig(PassConfig):
    """Options of ``apply-precision-map``.

    Attributes:
        format: ``fused`` (com.microsoft.DynamicQuantizeMatMul) or ``standard`` ONNX ops.
    """

    format: str = "fused"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in ("fused", "standard"):
            raise ConfigError(f"apply-precision-map: format must be 'fused' or 'standard', got '{self.format}'")


@register_pass("apply-precision-map")
class ApplyPrecisionMap(Pass[ApplyPrecisionMapConfig]):
    """Rewrite the nodes ``mixed-precision`` chose ``dynamic-int8`` for, and compute its ``fp16`` nodes
    in float16 (after ``insert-qdq``: both are float in the static plan)."""

    reads = ("tuning",)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        mixed = ctx.tuning.mixed if ctx.tuning is not None else None
        if mixed is None:
            return PassResult(model, False, {"skipped": "no precision map"})
        dynamic = sorted(n for n, p in mixed.precisions.items() if p == DYNAMIC)
        half = sorted(n for n, p in mixed.precisions.items() if p == FP16)
        ops = {n.name: n.op for n in model.graph.nodes}
        refused = apply_dynamic(model, dynamic, dynamic_config(ctx.quant_config, self.config.format)) if dynamic else {}
        refused_half = apply_fp16(model, half)
        done = {n for n in dynamic if n not in refused}
        # insert-qdq recorded these nodes as left float (the static plan kept them out); they are
        # dynamic int8 now, so those records no longer describe the model (fp16 nodes are float: theirs stay)
        ctx.skips[:] = [s for s in ctx.skips if not (s.node in done | set(refused_half) and s.reason.startswith(MIXED))]
        for node, reason in refused.items():
            ctx.skip(node, ops.get(node, ""), f"{MIXED} dynamic int8 refused: {reason}")
        for node, reason in refused_half.items():
            ctx.skip(node, ops.get(node, ""), f"{MIXED} fp16 refused: {reason}")
        stats = {"dynamic": len(done), "fp16": len(half) - len(refused_half)}
        stats.update({k: v for k, v in (("refused", len(refused)), ("fp16_refused", len(refused_half))) if v})
        return PassResult(model, bool(done) or len(half) > len(refused_half), stats)
