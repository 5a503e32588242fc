"""``tune-latency``: keep float wherever int8 is measured slower — and where it costs too much accuracy.

int8 is not free: every boundary between int8 and float regions costs a Quantize/Dequantize pass
over the tensor, and some int8 kernels (depthwise convolutions, ops without QLinear kernels such as
HardSwish) are not faster than their float versions. A MobileNetV3-style net can come out slower
than fp32. This pass measures instead of guessing:

1. time the float model and the planned int8 model (interleaved runs on the same inputs, stopping
   early once the difference is clear);
2. for each class of quantized glue nodes (depthwise Conv, activations without int8 kernels,
   element-wise Add/Mul, pooling, data movement, Sigmoid/Softmax), time the plan with that class
   kept float and accept it when it is faster by at least ``min_gain`` (confirmed by a second
   measurement, so noise does not flip decisions);
3. if the best plan is still not faster than float, keep the whole model float;
4. accuracy guard: on the first ``eval_samples`` calibration samples, every output must meet its
   guard against float — a metric from :mod:`onnxq.metrics` and a bar. By default each output's
   metric follows from its shape and producers (:func:`onnxq.metrics.default_guard`): top-1
   agreement ≥ ``min_agreement`` (0.98) for class scores (Softmax, LogSoftmax, Gemm, MatMul),
   whole-sequence agreement ≥ ``min_agreement`` for scores over positions (a CTC recogniser's
   [T, N, C]), worst-segment SQNR ≥ 30 dB for a Concat of heterogeneous inputs (a detector's pixel
   boxes beside its probabilities), cosine ≥ ``min_cosine`` (0.97) otherwise; ``accuracy_metric``
   replaces them (``--metric``). While a guard fails, the node class whose return to float gains
   the most is kept float — within a class of several nodes only its most sensitive ones, while
   the trial budget allows. The defaults catch broken quantization (an attention mask, a crushed
   branch, flipped detections or strings) without trading speed for noise a task does not see.

Every decision (class, nodes, both medians, accuracy before/after) is recorded as a
:class:`~onnxq.plan.TuningStep` in ``ctx.tuning`` and the nodes kept float carry the measurement as their
reason. Timings make decisions machine dependent; ``replay`` takes a previous report and re-applies
its decisions without measuring, so the same inputs give a byte-identical file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from onnxq import ir
from onnxq.calibration.ranges import TensorRange
from onnxq.errors import ConfigError
from onnxq.ir import Model, Node
from onnxq.metrics import GuardSet, choose_guards
from onnxq.pass_base import Pass, PassContext, PassResult, register_pass
from onnxq.plan import AccuracyGuardConfig, QuantizationConfig, QuantPlan, TuningRecord, TuningStep
from onnxq.progress import status
from onnxq.runtime.backends import make_runtime_session, runtime_names
from onnxq.runtime.bench import bench_sessions

from .annotate import build_plan
from .close_float_islands import close_islands
from .drop_qdq_before_float_ops import drop_pairs
from .insert_qdq import materialize

__all__ = [
    "TuneLatency", "TuneLatencyConfig", "LatencyTrials", "PlanTuningPass", "TuningInputs", "NODE_CLASSES", "score_like_outputs", "read_report",
    "check_tuner_options", "shipped_candidate",
]

log = logging.getLogger(__name__)

#: Prefix of every reason this pass writes (``replay`` recognizes its own decisions by it).
KEPT_FLOAT = "kept float:"


def _is_depthwise(node: Node) -> bool:
    if node.op != "Conv":
        return False
    group = int(node.attrs.get("group", 1))
    w = ir.constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return group > 1 and w is not None and w.shape[1] == 1


#: Node classes tried in order. Latency tuning tries the glue classes; the accuracy guard may also
#: return anchors (Conv, MatMul/Gemm) to float.
NODE_CLASSES: dict[str, Callable[[Node], bool]] = {
    "depthwise Conv": _is_depthwise,
    "activations without int8 kernels (HardSigmoid/HardSwish/Clip/ReduceMean)": lambda n: n.op in ("HardSigmoid", "HardSwish", "Clip", "ReduceMean"),
    "element-wise Add/Mul": lambda n: n.op in ("Add", "Mul"),
    "pooling": lambda n: n.op in ("AveragePool", "GlobalAveragePool", "MaxPool"),
    "data movement (Concat/Resize/Reshape/Transpose/Slice/...)": lambda n: n.op
    in ("Concat", "Resize", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Pad", "Gather"),
    "Sigmoid/Softmax/LeakyRelu/Relu": lambda n: n.op in ("Sigmoid", "Softmax", "LeakyRelu", "Relu", "Where"),
    "Conv/ConvTranspose": lambda n: n.op in ("Conv", "ConvTranspose") and not _is_depthwise(n),
    "MatMul/Gemm": lambda n: n.op in ("MatMul", "Gemm"),
}
_ANCHOR_CLASSES = ("Conv/ConvTranspose", "MatMul/Gemm")
_SCORE_OPS = frozenset({"Softmax", "LogSoftmax", "Gemm", "MatMul"})
_PASS_THROUGH = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class TuneLatencyConfig(AccuracyGuardConfig):
    """Options of ``tune-latency`` (besides the accuracy guard's, see :class:`AccuracyGuardConfig`).

    Attributes:
        threads: intra-op threads for timing (1: timings at 2 threads swing on small machines).
        budget_s: time budget of the latency search.
        min_gain: a class is kept float only when that is faster by at least this fraction.
        accuracy: run the accuracy guard (its targets: see the module docstring).
        replay: a previous conversion report (JSON); its decisions are applied without measuring.
        runtime: where trials run (:data:`onnxq.runtime.backends.RUNTIMES`): ``onnxruntime``, the
            deployment target's runtime when it runs here (``openvino``), or
            ``onnxruntime-reference`` (exact QDQ numerics) for a target that does not.
        latency: time int8 against float; off where the target's runtime does not run here (the
            accuracy guard still runs, on ``runtime``'s numerics).
        float_activations: the target's ``drop-qdq-before-float-ops`` readers: candidates are timed
            without those pairs, as the pipeline ships them (empty: onnxruntime keeps every pair).
    """

    threads: int = 1
    budget_s: float = 15.0
    min_gain: float = 0.05
    accuracy: bool = True
    replay: str = ""
    runtime: str = "onnxruntime"
    latency: bool = True
    float_activations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_tuner_options("tune-latency", self)


def check_tuner_options(who: str, c: Any) -> None:
    """The options both plan tuners (``tune-latency``, ``mixed-precision``) share: timing, runtime, replay.

    Raises:
        ConfigError: a negative thread count, a non-positive budget, ``min_gain`` outside [0, 1), an
            unknown runtime or a replay report that does not exist.
    """
    if c.threads < 0 or c.budget_s <= 0 or not 0 <= c.min_gain < 1:
        raise ConfigError(f"{who}: threads >= 0, budget_s > 0 and 0 <= min_gain < 1 required")
    if c.runtime not in runtime_names():
        raise ConfigError(f"{who}: unknown runtime '{c.runtime}'; valid: {', '.join(runtime_names())}")
    if c.replay and not Path(c.replay).is_file():
        raise ConfigError(f"{who}: replay report '{c.replay}' does not exist")


def _first_sample(data: Any) -> Mapping[str, np.ndarray] | None:
    if data is None:
        return None
    if isinstance(data, (list, tuple)):
        return data[0] if data else None
    try:
        return next(iter(data), None)
    except TypeError:
        return None


def score_like_outputs(model: Model) -> set[str]:
    """Graph outputs that are class scores (produced by Softmax/LogSoftmax/Gemm/MatMul)."""
    found = set()
    for out in model.graph.outputs:
        producer = ir.producer(out)
        while producer is not None and producer.op in _PASS_THROUGH:
            producer = ir.producer(producer.inputs[0])
        if producer is not None and producer.op in _SCORE_OPS:
            found.add(out.name)
    return found


def shipped_candidate(model: Model, plan: QuantPlan, ranges: Mapping[str, TensorRange], float_activations: tuple[str, ...] = ()) -> Model:
    """The Q/DQ model the static pipeline would write for ``plan``, on a copy of ``model``: what a
    pass that measures candidate plans must run. insert-qdq, then close-float-islands, then (for a
    target with ``float_activations``) drop-qdq-before-float-ops, as the pipeline orders them."""
    variant = ir.clone(model)
    materialize(variant, plan, ranges)
    close_islands(variant)
    if float_activations:
        drop_pairs(variant, float_activations)
    ir.normalize(variant)
    return variant


class LatencyTrials:
    """Builds sessions for candidate plans, times and evaluates them against float (shared with mixed-precision)."""

    def __init__(
        self, model: Model, ranges: Mapping[str, TensorRange], cfg: QuantizationConfig, samples: list[Mapping[str, np.ndarray]], tcfg: TuneLatencyConfig
    ) -> None:
        self.model = model
        self.ranges = dict(ranges)
        self.cfg = cfg
        self.samples = samples
        self.tcfg = tcfg
        self.deadline = time.perf_counter() + tcfg.budget_s
        self.float_session = make_runtime_session(model, tcfg.runtime, threads=tcfg.threads, where=f"{model.source} (float)")
        guards = choose_guards(model, tcfg.accuracy_metric, min_agreement=tcfg.min_agreement, min_cosine=tcfg.min_cosine, ranges=ranges)
        self.guards = GuardSet(guards, min_agreement=tcfg.min_agreement, min_cosine=tcfg.min_cosine)
        # Large inputs: fewer accuracy samples (decided from the input size, not from a timing, so
        # the same samples always give the same decisions).
        elements = sum(int(np.asarray(v).size) for v in samples[0].values())
        keep = max(2, min(len(samples), 4_000_000 // max(elements, 1)))
        self.samples = samples[:keep]
        self.float_outputs = [self.float_session.run(None, dict(s)) for s in self.samples]
        self.trials_left = tcfg.max_accuracy_trials

    def start_clock(self) -> None:
        """The time budget covers the latency search only."""
        self.deadline = time.perf_counter() + self.tcfg.budget_s

    def build(self, forced: dict[str, str]) -> tuple[Any, QuantPlan]:
        plan = build_plan(self.model, self.ranges, self.cfg, forced)
        variant = shipped_candidate(self.model, plan, self.ranges, self.tcfg.float_activations)
        return make_runtime_session(variant, self.tcfg.runtime, threads=self.tcfg.threads, where=f"{self.model.source} (int8 candidate)"), plan

    def time(self, a: Any, b: Any) -> tuple[float, float]:
        """Medians of interleaved runs, in rounds of 5, stopping once the verdict is clear.

        After the second round: a gap above twice ``min_gain`` is a clear difference, one below half
        of it clearly none (either way the decision cannot change); otherwise up to 6 rounds.
        """
        feeds = [dict(self.samples[0])]
        ta: list[float] = []
        tb: list[float] = []
        gain = self.tcfg.min_gain
        for round_ in range(6):
            timings = bench_sessions([a, b], feeds, runs=5, warmup=2 if round_ == 0 else 0)
            ta += timings[0].samples_ms
            tb += timings[1].samples_ms
            if round_ < 1:
                continue
            ma, mb = float(np.median(ta)), float(np.median(tb))
            gap = abs(ma - mb) / max(min(ma, mb), 1e-9)
            if gap > 2 * gain or gap < gain / 2 or time.perf_counter() > self.deadline:
                break
        return float(np.median(ta)), float(np.median(tb))

    def accuracy(self, session: Any) -> dict[str, float]:
        """Every output's guard against float: the worst value per guard metric, with per-output records."""
        self.trials_left -= 1
        names = [o.name for o in self.float_session.get_outputs()]
        return self.guards.read(names, ((ref, session.run(None, dict(s))) for s, ref in zip(self.samples, self.float_outputs)))

    def meets(self, acc: Mapping[str, float]) -> bool:
        return self.guards.meets(acc)

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline


def _records(acc: Mapping[str, float]) -> list[dict[str, Any]]:
    """The per-output guard records of an accuracy reading (none for a plain dict)."""
    return list(getattr(acc, "records", []))


def _replayed(path: str) -> dict[str, str]:
    """The tuning decisions recorded in a previous conversion report (``onnxq.api.convert`` has
    already checked that it is a report of this model; a recipe's ``replay`` gets this check only)."""
    report = read_report(path, "tune-latency")
    if report.get("mixed_precision"):
        targets = " ".join(f"--accuracy-target '{t}'" for t in report["mixed_precision"].get("targets", []) if t != "default guards")
        raise ConfigError(
            f"tune-latency: replay report '{path}' records a mixed-precision search; replay it with its targets ({targets or 'any --accuracy-target'})"
        )
    try:
        return {d["node"]: d["reason"] for d in report.get("float_nodes", []) if str(d.get("reason", "")).startswith(KEPT_FLOAT)}
    except (AttributeError, KeyError, TypeError) as e:
        raise ConfigError(f"tune-latency: replay report '{path}' is not a conversion report ({type(e).__name__}: {e})") from e


def read_report(path: str, who: str) -> dict[str, Any]:
    """A conversion report (JSON) to replay, as plain data.

    Raises:
        ConfigError: unreadable, not JSON, or not a JSON object.
    """
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{who}: replay report '{path}' is not a conversion report ({type(e).__name__}: {e})") from e
    if not isinstance(report, dict):
        raise ConfigError(f"{who}: replay report '{path}' is not a conversion report (a JSON {type(report).__name__}, not an object)")
    return report


@dataclass(frozen=True)
class TuningInputs:
    """What a plan-tuning pass works from: the static plan, its config, the ranges and the sample
    inputs (empty when replaying: a replay measures nothing)."""

    plan: QuantPlan
    cfg: QuantizationConfig
    ranges: Mapping[str, TensorRange]
    samples: list[Mapping[str, np.ndarray]]


GC = TypeVar("GC", bound=AccuracyGuardConfig)


class PlanTuningPass(Pass[GC]):
    """A pass that rewrites the quantization plan from measurements on sample inputs (``tune-latency``,
    ``mixed-precision``): it reads the plan, its config and the ranges, writes the plan and a
    :class:`TuningRecord`, and is skipped, with a note saying why, when any of them or the samples are missing.

    :meth:`run` checks those inputs once for both; a subclass implements :meth:`tune` (measure) and
    :meth:`replay` (re-apply a report's decisions, measuring nothing) and names the report in
    :attr:`replay_from`."""

    changes_structure = False
    reads = ("plan", "quant_config", "ranges")
    writes = ("plan", "tuning")
    #: what the skip notes call the pass's work ("latency tuning skipped: ...")
    activity: ClassVar[str]

    def skip(self, model: Model, ctx: PassContext, reason: str, hint: str = "") -> PassResult:
        """An unmodified result whose stats give ``reason``, noted with ``hint`` (what the user can do)."""
        ctx.note(f"{self.activity} skipped: {reason}{hint}")
        return PassResult(model, False, {"skipped": reason})

    def sample_inputs(self, ctx: PassContext) -> list[Mapping[str, np.ndarray]]:
        """The first ``eval_samples`` calibration inputs (none without calibration data)."""
        data = ctx.calibration_data
        return list(islice(data, self.config.eval_samples)) if data is not None else []

    @property
    def replay_from(self) -> str:
        """The report whose decisions to re-apply ("": measure): the config's ``replay`` option, which
        both tuners' configs have (the shared guard config cannot: ``ConversionOptions`` inherits it)."""
        return str(getattr(self.config, "replay", "") or "")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan, cfg, ranges = ctx.plan, ctx.quant_config, ctx.ranges
        if plan is None or cfg is None or ranges is None:
            return self.skip(model, ctx, "no quantization plan")
        if self.replay_from:
            return self.replay(model, ctx, TuningInputs(plan, cfg, ranges, []))
        samples = self.sample_inputs(ctx)
        if not samples:
            return self.skip(model, ctx, "no sample inputs", " (give --data)")
        return self.tune(model, ctx, TuningInputs(plan, cfg, ranges, samples))

    def tune(self, model: Model, ctx: PassContext, given: TuningInputs) -> PassResult:
        """Measure candidates on ``given.samples`` and write the plan and the tuning record."""
        raise NotImplementedError

    def replay(self, model: Model, ctx: PassContext, given: TuningInputs) -> PassResult:
        """Write the plan :attr:`replay_from` records, without measuring."""
        raise NotImplementedError


@register_pass("tune-latency")
class TuneLatency(PlanTuningPass[TuneLatencyConfig]):
    """Keep float where int8 measures slower (on onnxruntime, or the ``runtime`` option's), or costs more accuracy than the targets allow."""

    activity = "latency tuning"

    def replay(self, model: Model, ctx: PassContext, given: TuningInputs) -> PassResult:
        replayed = _replayed(self.config.replay)
        ctx.plan = build_plan(model, given.ranges, given.cfg, replayed)
        ctx.tuning = TuningRecord(threads=self.config.threads, replayed=self.config.replay, replayed_nodes=len(replayed))
        return PassResult(model, False, {"replayed": len(replayed)})

    def tune(self, model: Model, ctx: PassContext, given: TuningInputs) -> PassResult:
        plan, cfg, ranges, samples = given.plan, given.cfg, given.ranges, given.samples
        if not plan.quantized_nodes:
            return PassResult(model, False, {"skipped": "nothing quantized"})
        with status("tuning: checking int8 accuracy against float", ctx.progress) as shown:
            trials = LatencyTrials(model, ranges, cfg, samples, self.config)
            for note in trials.guards.coverage_notes([o.name for o in trials.float_session.get_outputs()], trials.float_outputs):
                ctx.note(note)
            forced: dict[str, str] = {}
            steps: list[TuningStep] = []
            # Accuracy first: it is deterministic (same samples, same decisions), and latency
            # decisions then only ever add float nodes on top of it.
            if self.config.accuracy:
                forced, plan, steps = self._accuracy(model, trials, forced, plan)
            if plan.quantized_nodes and self.config.latency:
                shown.update(f"tuning: timing int8 against float on {self.config.runtime}")
                forced, plan, lat_steps = self._latency(model, trials, plan, forced)
                steps += lat_steps
        if plan.quantized_nodes and not self.config.latency:
            session, plan = trials.build(forced)
            acc = trials.accuracy(session)
            steps.append(TuningStep("final (latency not measured)", accuracy=acc, meets_targets=trials.meets(acc), guards=_records(acc)))
        elif plan.quantized_nodes:
            session, plan = trials.build(forced)  # the plan with the accepted steps' measured reasons
            t_float, t_final = trials.time(trials.float_session, session)
            if t_final >= t_float:
                reason = f"{KEPT_FLOAT} int8 measured slower than float on this model ({t_final:.3f} ms vs {t_float:.3f} ms)"
                forced = {**{n: reason for n in plan.quantized_nodes}, **forced}
                plan = build_plan(model, ranges, cfg, forced)
                steps.append(TuningStep("whole model float", int8_ms=round(t_final, 4), float_ms=round(t_float, 4), accepted=True))
            else:
                acc = trials.accuracy(session)
                speedup = round(t_float / t_final, 3)
                steps.append(TuningStep("final", int8_ms=round(t_final, 4), float_ms=round(t_float, 4), speedup=speedup, accuracy=acc, guards=_records(acc)))
        ctx.plan = plan
        guards = next((s.guards for s in reversed(steps) if s.guards), [])
        ctx.tuning = TuningRecord(threads=self.config.threads, steps=steps, guards=guards)
        kept_float = sum(1 for d in plan.float_nodes() if d.reason.startswith(KEPT_FLOAT))
        return PassResult(model, False, {"kept_float": kept_float, "steps": len(steps)})

    def _latency(self, model: Model, trials: LatencyTrials, plan: QuantPlan, forced: dict[str, str]) -> tuple[dict[str, str], QuantPlan, list[TuningStep]]:
        node_of = {n.name: n for n in ir.iter_nodes(model.graph)}
        trials.start_clock()
        current, current_plan = trials.build(forced)
        t_float, t_current = trials.time(trials.float_session, current)
        steps = [TuningStep("full plan", int8_ms=round(t_current, 4), float_ms=round(t_float, 4))]
        for label, predicate in NODE_CLASSES.items():
            if label in _ANCHOR_CLASSES or trials.out_of_time():
                continue
            members = [n for n in current_plan.quantized_nodes if predicate(node_of[n])]
            if not members:
                continue
            trial_forced = {**forced, **{n: f"{KEPT_FLOAT} int8 {label} measured slower" for n in members}}
            trial, trial_plan = trials.build(trial_forced)
            if not trial_plan.quantized_nodes:
                continue
            t_cur, t_trial = trials.time(current, trial)
            accepted = t_trial < t_cur * (1 - self.config.min_gain)
            if accepted:  # confirm: noise must not flip a decision
                t_cur, t_trial = trials.time(current, trial)
                accepted = t_trial < t_cur * (1 - self.config.min_gain / 2)
            steps.append(TuningStep(f"keep {label} float", nodes=len(members), with_ms=round(t_cur, 4), without_ms=round(t_trial, 4), accepted=accepted))
            if accepted:
                for n in members:
                    trial_forced[n] = f"{KEPT_FLOAT} int8 {label} measured slower ({t_cur:.3f} ms with, {t_trial:.3f} ms without)"
                forced, current, current_plan = trial_forced, trial, trial_plan
        return forced, current_plan, steps

    def _accuracy(self, model: Model, trials: LatencyTrials, forced: dict[str, str], plan: QuantPlan) -> tuple[dict[str, str], QuantPlan, list[TuningStep]]:
        """Return node classes (then single nodes) to float until the accuracy targets hold."""
        node_of = {n.name: n for n in ir.iter_nodes(model.graph)}
        session, _ = trials.build(forced)
        acc = trials.accuracy(session)
        steps = [TuningStep("accuracy check", accuracy=acc, meets_targets=trials.meets(acc), guards=_records(acc))]
        while not trials.meets(acc) and plan.quantized_nodes:
            best = self._best_class(trials, node_of, forced, plan, acc) if trials.trials_left > 0 else None
            if best is None:
                reason = f"{KEPT_FLOAT} int8 missed the accuracy targets ({trials.guards.shortfall(acc)})"
                forced = {**{n: reason for n in plan.quantized_nodes}, **forced}
                plan = build_plan(model, trials.ranges, trials.cfg, forced)
                steps.append(TuningStep("whole model float (accuracy)", accuracy=acc, guards=_records(acc)))
                break
            label, members = best
            reason = f"{KEPT_FLOAT} int8 {label} cost too much accuracy"
            if len(members) > 1 and trials.trials_left > len(members) + 8:
                forced, plan, acc, chosen = self._fewest_nodes(trials, forced, members, acc, reason)
                steps.append(
                    TuningStep(f"keep {chosen} of {len(members)} {label} float (accuracy)", accuracy=acc, meets_targets=trials.meets(acc), guards=_records(acc))
                )
            else:
                forced = {**forced, **{n: reason for n in members}}
                session, plan = trials.build(forced)
                acc = trials.accuracy(session)
                steps.append(TuningStep(f"keep {label} float (accuracy)", accuracy=acc, meets_targets=trials.meets(acc), guards=_records(acc)))
        return forced, plan, steps

    def _best_class(
        self, trials: LatencyTrials, node_of: dict[str, Node], forced: dict[str, str], plan: QuantPlan, acc: Mapping[str, float]
    ) -> tuple[str, list[str]] | None:
        """The node class whose return to float improves accuracy most (None if none does).

        A class holding every quantized node is not measured (floating it is floating the model);
        it is returned only when no other class helps and it has several members, so the caller's
        fewest-nodes search can float part of it (an all-MatMul MLP floats its one sensitive
        MatMul, not all of them). The trial budget is a hard cap.
        """
        best: tuple[float, str, list[str]] | None = None
        whole: tuple[str, list[str]] | None = None
        for label, predicate in NODE_CLASSES.items():
            members = [n for n in plan.quantized_nodes if predicate(node_of[n])]
            if not members:
                continue
            if len(members) == len(plan.quantized_nodes):
                whole = whole or ((label, members) if len(members) > 1 else None)
                continue
            if trials.trials_left <= 1:  # the last evaluation is kept for the plan this choice builds
                break
            trial, _ = trials.build({**forced, **{n: "trial" for n in members}})
            gain = trials.guards.gain(acc, trials.accuracy(trial))
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, label, members)
        return (best[1], best[2]) if best is not None else whole

    def _fewest_nodes(
        self, trials: LatencyTrials, forced: dict[str, str], members: list[str], acc: Mapping[str, float], reason: str
    ) -> tuple[dict[str, str], QuantPlan, dict[str, float], int]:
        """Float the fewest of ``members`` (most sensitive first) that meet the targets.

        Each member's gain alone ranks them; a binary search over how many of the top-ranked to
        float finds the smallest count meeting the targets (all of them if none does).
        """
        gains = []
        for n in members:
            trial, _ = trials.build({**forced, n: "trial"})
            gains.append((trials.guards.gain(acc, trials.accuracy(trial)), n))
        ranked = [n for _, n in sorted(gains, key=lambda g: (-g[0], g[1]))]

        def attempt(k: int) -> tuple[dict[str, str], QuantPlan, dict[str, float]]:
            f = {**forced, **{n: reason for n in ranked[:k]}}
            session, p = trials.build(f)
            return f, p, trials.accuracy(session)

        lo, hi = 1, len(ranked)
        best = attempt(hi)
        if not trials.meets(best[2]):
            return (*best, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            trial = attempt(mid)
            if trials.meets(trial[2]):
                best, hi = trial, mid
            else:
                lo = mid + 1
        return (*best, hi)
