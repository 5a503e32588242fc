"""``choose-activation-forms``: run each quantized activation (SiLU, HardSwish, GELU, ``x·Sigmoid(x)``,
...) in the form onnxruntime runs fastest on this model, chosen by timing the model in each form.

An activation here is a region of a QDQ graph between one 8-bit tensor ``x_q`` and one
QuantizeLinear whose ops are element-wise with scalar constants (see
:mod:`._activation_expr`): its output code is a function of its input code, ``y_q = T[x_q]``.
Regions that are one op onnxruntime already runs as one int8 kernel (a lone Sigmoid is
QLinearSigmoid, itself a table) are left alone. Each region can take one of these forms:

=========  ====================================================================================
form       what onnxruntime 1.32's CPU provider runs, and its numerics
=========  ====================================================================================
qlinear    the graph as it is: e.g. SiLU = QLinearSigmoid (a 256-entry table kernel) + QLinearMul;
           HardSwish (after close-float-islands) = QLinearAdd + QLinearMul. Two roundings.
lut        ``GatherElements(T, Cast(x_q, int32))`` (on the flattened codes): the whole activation
           as one table lookup; ``T`` holds the codes the qlinear form computes (evaluated by
           onnxruntime on all 256 codes), so the output is bit-identical. onnxruntime has no
           generic int8 table op (its QLinearLookupBase serves only QLinearSigmoid /
           QLinearLeakyRelu), hence GatherElements (Gather copies element by element: 9x slower).
float      ``DQ(x_q) → float ops → Q``: interior Q/DQ pairs dropped (one rounding), and
           ``x·Sigmoid(x)`` written as com.microsoft ``QuickGelu(alpha=1)`` — onnxruntime's fp32
           SiLU fusion never fires on a QDQ graph (each reader of ``x`` gets its own DQ). Used
           for a region only when its table is within ``max_step_error`` output steps of the
           qlinear one (a HardSigmoid gate rewritten to an Add clips only in its Q: refused).
=========  ====================================================================================

Folding an activation into its producer's requantization (the fourth form one could think of) is
exact only for piecewise-linear ones whose pieces the output grid clips (Relu, Clip), which
onnxruntime's ClipQuantFusion already does; SiLU/GELU have no such form.

``form="measure"`` (default) times the model with every applicable form applied to all matching
activations (interleaved onnxruntime runs at ``threads``; the first calibration sample, or seeded
random inputs when the model's input shapes are static) and keeps the fastest; a form other than
qlinear must beat it by ``min_gain``. Measured on this AVX2 machine (1 thread, a [1,32,160,160]
SiLU): qlinear 0.52 ms, float (QuickGelu) 1.0 ms, lut 1.9 ms (Cast + GatherElements; with
Gather 11 ms). ``form`` set to a form applies it without timing (deterministic, for replay).
The decision, the timings and the per-region refusals are in the stats.

Runs on QDQ graphs after ``insert-qdq`` / ``close-float-islands``; ``convert-qlinear`` afterwards
turns what is left as QDQ into QLinear ops (Cast/Gather and QuickGelu islands stay as they are).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar

import numpy as np

from onnxq import ir
from onnxq.config import PassConfig
from onnxq.context import PassContext
from onnxq.errors import ConfigError
from onnxq.ir import Model, Node
from onnxq.pass_base import Pass, PassResult, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule
from onnxq.runtime.bench import bench_sessions
from onnxq.runtime.session import make_session

from ._activation_expr import Activation, Emitter, code_dtype, code_table, compute_ops, read_activation, to_float

__all__ = ["ChooseActivationForms", "ChooseActivationFormsConfig", "FORMS", "find_activations", "apply_form", "replayed_form"]

log = logging.getLogger(__name__)

#: The forms, today's first (it wins ties).
FORMS = ("qlinear", "lut", "float")


@dataclass(frozen=True)
class ChooseActivationFormsConfig(PassConfig):
    """Options of ``choose-activation-forms``.

    Attributes:
        form: ``measure`` (time every form, keep the fastest) or one of :data:`FORMS` (no timing).
        threads: intra-op threads for timing (1: the deployment setting the benchmarks use).
        budget_s: time budget of the timed runs.
        min_gain: a form other than qlinear is kept only when faster by at least this fraction.
        max_step_error: the float form is used for a region only when its output codes differ
            from the qlinear form's by at most this many steps on every input code.
        replay: a conversion report (JSON) whose ``choose-activation-forms`` record gives the form
            to apply without timing (``onnxq convert --replay``: the same bytes as that run).
    """

    form: str = "measure"
    threads: int = 1
    budget_s: float = 10.0
    min_gain: float = 0.05
    max_step_error: int = 1
    replay: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.form not in ("measure", *FORMS):
            raise ConfigError(f"choose-activation-forms: unknown form '{self.form}'; valid: measure, {', '.join(FORMS)}")
        if self.threads < 0 or self.budget_s <= 0 or not 0 <= self.min_gain < 1 or self.max_step_error < 0:
            raise ConfigError("choose-activation-forms: threads >= 0, budget_s > 0, 0 <= min_gain < 1 and max_step_error >= 0 required")


def _kind(act: Activation) -> str:
    """How stats name an activation: its float ops (``Mul+Sigmoid`` is SiLU)."""
    return "+".join(compute_ops(act.expr))


class _ActivationForm(Rule):
    """``x_q → element-wise region → Q`` ⇒ the region in ``form`` (see the module docstring)."""

    name = "activation"
    ops = ("QuantizeLinear",)

    def __init__(self, form: str, max_step_error: int) -> None:
        self.form = form
        self.max_step_error = max_step_error

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        act = read_activation(node, rw.graph)
        if not isinstance(act, Activation):
            return act
        dtype = code_dtype(act.expr)
        if not dtype:
            return "the activation's input is not 8-bit"
        table = code_table(act.expr, dtype, rw.model)
        expr: Any = act.expr
        if self.form == "float":
            expr = to_float(act.expr)
            worst = int(np.abs(code_table(expr, dtype, rw.model).astype(np.int32) - table.astype(np.int32)).max())
            if worst > self.max_step_error:
                return f"its float form is {worst} output steps from the qlinear form (max {self.max_step_error})"
        return Match(act.nodes, {"act": act, "expr": expr, "table": table}, label=f"{self.form}.{_kind(act)}")

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        act: Activation = match.values["act"]
        anchor = match.anchor
        em = Emitter(act.source, rw.name, anchor.name or "activation")
        if self.form == "lut":
            em.lookup(match.values["table"])
        else:
            em.emit(match.values["expr"])
        last = em.nodes[-1]
        last.outputs.clear()
        for node in em.nodes:
            rw.add(node)
        rw.take_output(anchor, last)
        rw.remove(*act.removable)


@dataclass(frozen=True)
class _FormConfig(PassConfig):
    form: str = "lut"
    max_step_error: int = 1


class _ApplyForm(RewritePass[_FormConfig]):
    """Rewrites every activation into one form (unregistered: the chooser's tool)."""

    counter = "rewritten"

    def rules(self) -> Sequence[Rule]:
        return [_ActivationForm(self.config.form, self.config.max_step_error)]

    def after(self, model: Model, counts: dict[str, int]) -> None:
        if any((n.domain or "") == ir.MS_DOMAIN for n in ir.iter_nodes(model.graph)):
            model.set_opset(ir.MS_DOMAIN, 1)  # QuickGelu lives in com.microsoft


def apply_form(model: Model, form: str, ctx: PassContext | None = None, *, max_step_error: int = 1) -> PassResult:
    """Rewrite every activation of ``model`` in place into ``form`` (qlinear: nothing to do)."""
    if form == "qlinear":
        return PassResult(model, False, {"rewritten": 0, "refused": 0})
    return _ApplyForm(_FormConfig(form, max_step_error)).run(model, ctx or PassContext())


def find_activations(model: Model) -> list[Activation]:
    """Every activation region of ``model`` (a dry run of the rule's pattern, every graph)."""
    found = []
    for graph in ir.iter_graphs(model.graph):
        for node in graph.nodes:
            if node.op == "QuantizeLinear":
                act = read_activation(node, graph)
                if isinstance(act, Activation):
                    found.append(act)
    return found


def replayed_form(path: str) -> str:
    """The form an earlier conversion's report recorded for this pass ("qlinear" when it found no activation).

    Raises:
        ConfigError: the report is unreadable or names no known form.
    """
    from .tune_latency import read_report  # the one reader of replay reports

    report = read_report(path, "choose-activation-forms")
    records = [p for p in report.get("passes") or [] if isinstance(p, dict) and p.get("pass") == "choose-activation-forms"]
    form = (records[0].get("stats") or {}).get("form", "qlinear") if records else "qlinear"
    if form not in FORMS:
        raise ConfigError(f"choose-activation-forms: replay report '{path}' records form {form!r}; valid: {', '.join(FORMS)}")
    return str(form)


def _sample(model: Model, ctx: PassContext) -> dict[str, np.ndarray] | str:
    """The first calibration sample, else seeded random inputs (symbolic dimensions 1, as a batch
    dimension usually is), else why not."""
    if ctx.calibration_data is not None:
        first = next(islice(iter(ctx.calibration_data), 1), None)
        if first is not None:
            return {k: np.asarray(v) for k, v in first.items()}
    rng = np.random.default_rng(0)
    feeds = {}
    for t in model.graph.inputs:
        if t.shape is None or t.dtype is None:
            return f"no calibration data and input '{t.name}' has no known shape"
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in t.shape]
        dtype = np.dtype(t.dtype)
        feeds[t.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return feeds


@register_pass("choose-activation-forms")
class ChooseActivationForms(Pass[ChooseActivationFormsConfig]):
    """Rewrite quantized activations into the form measured fastest here (see the module docstring)."""

    rounds: ClassVar[int] = 6

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        acts = find_activations(model)
        kinds: dict[str, int] = {}
        for act in acts:
            kinds[_kind(act)] = kinds.get(_kind(act), 0) + 1
        stats: dict[str, Any] = {"activations": len(acts), "kinds": dict(sorted(kinds.items()))}
        if not acts:
            return PassResult(model, False, {**stats, "form": "qlinear", "decision": "no activation regions"})
        timings: dict[str, float] = {}
        if self.config.replay:
            form, decision = replayed_form(self.config.replay), f"replayed from {self.config.replay}"
        elif self.config.form != "measure":
            form, decision = self.config.form, "forced by the form option"
        else:
            form, decision, timings = self._measure(model, ctx)
        stats.update(form=form, decision=decision, timings_ms=timings)
        ctx.note(f"activations ({len(acts)}: {', '.join(f'{k} x{n}' for k, n in stats['kinds'].items())}) run as {form}: {decision}")
        result = apply_form(model, form, ctx, max_step_error=self.config.max_step_error)
        return PassResult(model, result.modified, {**stats, **result.stats})

    def _measure(self, model: Model, ctx: PassContext) -> tuple[str, str, dict[str, float]]:
        """Time the model in every form that applies anywhere; returns (form, why, medians in ms)."""
        feeds = _sample(model, ctx)
        if isinstance(feeds, str):
            return "qlinear", f"not measured: {feeds}", {}
        variants: dict[str, Model] = {"qlinear": model}
        for form in FORMS[1:]:
            variant = ir.clone(model)
            if apply_form(variant, form, max_step_error=self.config.max_step_error).modified:
                variants[form] = ir.normalize(variant)
        if len(variants) == 1:
            return "qlinear", "no other form applies", {}
        names = list(variants)
        sessions = [make_session(variants[n], threads=self.config.threads, where=f"{model.source} ({n} activations)") for n in names]
        medians = self._time(sessions, feeds)
        timings = {n: round(m, 4) for n, m in zip(names, medians)}
        best = min(names, key=lambda n: timings[n])
        base = timings["qlinear"]
        if best != "qlinear" and timings[best] > (1 - self.config.min_gain) * base:
            return "qlinear", f"{best} {timings[best]:.3f} ms is within {self.config.min_gain:.0%} of qlinear {base:.3f} ms", timings
        others = ", ".join(f"{n} {timings[n]:.3f}" for n in names if n != best)
        return best, f"fastest: {best} {timings[best]:.3f} ms (vs {others} ms)", timings

    def _time(self, sessions: list[Any], feeds: Mapping[str, np.ndarray]) -> list[float]:
        """Medians (ms) of interleaved runs in rounds of 5, within ``budget_s`` (at least two rounds)."""
        samples: list[list[float]] = [[] for _ in sessions]
        deadline = time.perf_counter() + self.config.budget_s
        for round_ in range(self.rounds):
            timings = bench_sessions(sessions, [dict(feeds)], runs=5, warmup=2 if round_ == 0 else 0)
            for acc, t in zip(samples, timings):
                acc.extend(t.samples_ms)
            if round_ >= 1 and time.perf_counter() > deadline:
                break
        return [float(np.median(s)) for s in samples]
