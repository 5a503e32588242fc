"""``onnxq.sensitivity``: rank the units of a static int8 plan by what quantizing each one costs.

The model is prepared exactly as ``onnxq convert`` prepares it — the static pipeline's own steps
(:func:`~onnxq.api.pipelines.build_steps`: opset upgrade, cleanup, smoothing, HardSwish expansion,
calibration, annotation), run by the pass manager and stopped after ``annotate-quantization`` — and
the full plan's units are evaluated by :mod:`onnxq.passes.quantization.sensitivity` (one session
for every evaluation with the default ``switch`` engine). Results are cached on disk
(:mod:`._sensitivity_cache`): a repeated run neither calibrates nor evaluates.

Time bound: with ``budget_s`` the units' evaluations stop once the analysis has run that long
(the two baselines always run, preparation is never cut). Units not evaluated, or evaluated only
one way, are left out of the ranking; a note says whether the budget cut the analysis short, how
many units it left out and the seconds spent. Evaluations already run are cached, so running again
continues where the budget stopped.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, cast

from .. import ir
from ..calibration.collector import replayable
from ..calibration.ranges import RangeSet
from ..context import PassContext
from ..errors import CalibrationDataError, ConfigError
from ..ir import Model
from ..metrics import CallableMetric, GuardSpec, Metric, check_guard, choose_guards, make_metric, parse_guard
from ..passes.quantization.sensitivity import ENGINES, Engine, Evaluation, Evaluator, Unit, float_outputs, fusion_units
from ..pipeline import pipeline_from_data
from ..plan import QuantPlan
from ..progress import track
from ._loading import load_model, raise_ir_floor
from ._sensitivity_cache import SensitivityCache, content_digest, data_digest, default_cache_dir, ranges_digest, stable_hash
from ._sensitivity_report import GuardInfo, Measured, SensitivityReport, UnitSensitivity, rank_key, score
from .conversion import _refuse_quantized, _with_opset_fallback, open_conversion_data
from .options import APPLIES_TO, ConversionOptions
from .pipelines import PipelineInputs, build_steps

__all__ = ["SENSITIVITY_ENGINES", "MetricArg", "SensitivityReport", "sensitivity"]

log = logging.getLogger(__name__)

#: A metric as the API takes it: a spec string (``cosine``, ``topk:k=5@logits``, ``mymod:f1``), a
#: :class:`~onnxq.metrics.Metric` or a function ``fn(ref, cand) -> float``.
MetricArg = str | Metric | Callable[..., Any]
#: How evaluations run: ``switch`` (one session) or ``rebuild`` (a session each).
SENSITIVITY_ENGINES: tuple[str, ...] = ENGINES
_LAST_STEP = "annotate-quantization"
_FULL_PLAN = Evaluation("only-float", ())
_FLOAT = Evaluation("only-quantized", ())
#: Static options that do not change any value sensitivity reads (timing, tuning, the output format, guard bars).
_NOT_SETTINGS = frozenset({"threads", "tune", "replay", "max_accuracy_trials", "accuracy_metric", "format", "min_agreement", "min_cosine", "mode"})
_RUN_FIELDS = ("prepared_digest", "ranges_digest", "units", "guards", "noise_outputs", "notes")
_GUARD_KEYS = frozenset({"output", "metric", "direction", "unit", "why"})
_EVAL_FIELDS = ("evaluation", "values", "sqnr_db", "seconds")


@dataclass
class _Prepared:
    model: Model
    plan: QuantPlan
    ranges: RangeSet
    notes: list[str]


def sensitivity(
    model: Any,
    data: Any,
    *,
    metric: MetricArg | Sequence[MetricArg] = (),
    engine: str = "switch",
    cache: str | Path | None = None,
    use_cache: bool = True,
    dims: Mapping[str, int] | None = None,
    image_preprocess: str | None = None,
    progress: bool = False,
    budget_s: float | None = None,
    options: ConversionOptions | None = None,
    **option_values: Any,
) -> SensitivityReport:
    """Evaluate every unit of ``model``'s static int8 plan quantized alone and kept float alone.

    Args:
        model: a path, ModelProto, bytes or :class:`~onnxq.ir.Model` (never modified).
        data: samples, in any form :func:`onnxq.convert` takes; all of them calibrate, the first
            ``eval_samples`` (an option, default 8) are evaluated on.
        metric: what to read on the outputs (``SPEC[@OUTPUT]``, repeatable; a bar is accepted and
            ignored); default: each output's accuracy guard metric (:func:`onnxq.metrics.choose_guards`).
        engine: ``switch`` (one onnxruntime session for everything, fake-quantized QDQ semantics) or
            ``rebuild`` (a session per evaluation, onnxruntime's int8 kernels).
        cache / use_cache: the cache folder (default ``$ONNXQ_CACHE_DIR/sensitivity`` or
            ``~/.cache/onnxq/sensitivity``); ``use_cache=False`` neither reads nor writes it.
        dims / image_preprocess: how a data spec is opened.
        progress: draw progress bars (on a terminal).
        budget_s: seconds for the whole analysis, after which no further unit is evaluated (see
            the module docstring); None: no limit.
        options / option_values: static conversion options (:class:`ConversionOptions`), as for
            :func:`onnxq.convert`.

    Raises:
        ConfigError: an unknown metric or engine, options of another mode, a metric that fails.
        CalibrationDataError: data that does not fit the model (as ``convert`` reports it).
    """
    start = time.perf_counter()
    if options is not None and option_values:
        raise ConfigError("give either options=ConversionOptions(...) or option keywords, not both")
    opts = options if options is not None else ConversionOptions.from_values(option_values)
    if opts.mode != "static":
        raise ConfigError(f"sensitivity analysis is of static int8 plans, not --mode {opts.mode}")
    if engine not in ENGINES:
        raise ConfigError(f"unknown sensitivity engine '{engine}'; valid: {', '.join(ENGINES)}")
    if budget_s is not None and not budget_s > 0:
        raise ConfigError(f"sensitivity: budget_s must be > 0 seconds, got {budget_s}")
    specs = _guard_specs(metric)  # a bad metric fails before any work
    source_model = load_model(model)
    _refuse_quantized(source_model, opts)
    samples = replayable(open_conversion_data(data, source_model, samples=opts.samples, dims=dims, image_preprocess=image_preprocess))
    digest = content_digest(source_model)
    d_digest, count = data_digest(samples)
    if count == 0:
        raise CalibrationDataError(f"{_describe(data)}: no samples to calibrate and evaluate on")
    settings = _settings(opts, specs, engine)
    store = SensitivityCache((cache if cache is not None else default_cache_dir()) if use_cache else None)
    run = _Run(source_model, samples, opts, specs, cast(Engine, engine), store, stable_hash("run", digest, d_digest, settings), progress)
    deadline = None if budget_s is None else start + budget_s
    key_of: Callable[[Evaluation], str] = lambda ev: stable_hash(  # noqa: E731
        "evaluation", run.info["prepared_digest"], run.info["ranges_digest"], d_digest, settings, ev.as_dict()
    )
    entries = run.evaluate(key_of, deadline)
    report = _report(run, entries, settings, source=(source_model.source, digest, _describe(data), d_digest))
    report.seconds = time.perf_counter() - start
    if budget_s is not None:
        report.notes.append(_budget_note(budget_s, report.seconds, len(run.units) - len(report.units)))
    return report


def _budget_note(budget_s: float, seconds: float, left_out: int) -> str:
    """Whether the time budget cut the analysis short, in the report's notes."""
    if left_out:
        return (f"time budget {budget_s:g} s cut the analysis short after {seconds:.1f} s: {left_out} unit(s) not evaluated "
                "and left out of the ranking (run again to continue: finished evaluations are cached)")
    return f"time budget {budget_s:g} s not reached ({seconds:.1f} s): every unit evaluated"


def _guard_specs(metric: MetricArg | Sequence[MetricArg]) -> list[GuardSpec]:
    """The metrics as guard specs; sensitivity reads values only, so a missing bar is filled with a placeholder."""
    items: Iterable[MetricArg] = [metric] if isinstance(metric, (str, Metric)) or callable(metric) else metric
    specs = []
    for item in items:
        spec = parse_guard(item) if isinstance(item, str) else GuardSpec(make_metric(item), text=getattr(item, "spec", ""))
        if spec.threshold is None:
            try:
                check_guard(spec)
            except ConfigError:  # no default bar (a user function): never checked here
                spec = replace(spec, threshold=0.0)
        specs.append(spec)
    return specs


def _settings(opts: ConversionOptions, specs: Sequence[GuardSpec], engine: str) -> dict[str, Any]:
    """Everything the results depend on besides the model and the data (hashed into the cache keys)."""
    options = {k: v for k, v in opts.as_dict().items() if "static" in APPLIES_TO.get(k, {"static"}) and k not in _NOT_SETTINGS}
    if opts.recipe is not None:
        options["recipe_sha256"] = hashlib.sha256(Path(opts.recipe).read_bytes()).hexdigest()
    metrics = [{"metric": s.metric.spec, "output": s.output, "code": _code_digest(s.metric)} for s in specs]
    return {"options": options, "metrics": metrics, "engine": engine}


def _code_digest(metric: Metric) -> str | None:
    """A user function's source (so editing it misses the cache); None for built-in metrics."""
    if not isinstance(metric, CallableMetric):
        return None
    try:
        return hashlib.sha256(inspect.getsource(metric.fn).encode()).hexdigest()  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None


def _describe(data: Any) -> str:
    return str(data) if isinstance(data, (str, Path)) else type(data).__name__


class _Run:
    """One analysis: the cached run entry, or the model prepared now (lazily: only on a miss)."""

    def __init__(
        self, model: Model, samples: Any, opts: ConversionOptions, specs: list[GuardSpec], engine: Engine, store: SensitivityCache, key: str, progress: bool
    ) -> None:
        self.model, self.samples, self.opts, self.specs, self.engine = model, samples, opts, specs, engine
        self.store, self.key, self.progress = store, key, progress
        self.prepared: _Prepared | None = None
        self.evaluator: Evaluator | None = None
        self.setup_seconds = 0.0
        cached = store.load("runs", key, _RUN_FIELDS)
        if cached is not None and not _valid_run(cached):
            log.warning("sensitivity cache: ignoring malformed entry %s", key)
            cached = None
        self.info: dict[str, Any] = cached or self._prepare()

    def _prepare(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.prepared = _prepare(self.model, self.samples, self.opts, self.progress)
        p = self.prepared
        guards = choose_guards(p.model, self.specs, ranges=p.ranges)
        info = {
            "prepared_digest": content_digest(p.model),
            "ranges_digest": ranges_digest(p.ranges),
            "units": [u.as_dict() for u in fusion_units(p.model, p.plan)],
            "guards": [GuardInfo(g.output, g.metric.spec, g.metric.direction, g.metric.unit, g.why).as_dict() for g in guards],
            "noise_outputs": float_outputs(p.model),
            "notes": list(p.notes),
        }
        self.store.store("runs", self.key, info)
        self.setup_seconds += time.perf_counter() - start
        return info

    @property
    def units(self) -> list[Unit]:
        return [Unit(u["name"], tuple(u["nodes"]), tuple(u["ops"])) for u in self.info["units"]]

    @property
    def guards(self) -> list[GuardInfo]:
        return [GuardInfo(**g) for g in self.info["guards"]]

    def evaluate(self, key_of: Callable[[Evaluation], str], deadline: float | None = None) -> dict[Evaluation, Measured]:
        """Every evaluation of the analysis: from the cache where it has them, run now otherwise.

        Past ``deadline`` (a ``time.perf_counter()`` value) no unit evaluation runs: those are missing
        from the result (the baselines always run).
        """
        wanted = [_FLOAT, _FULL_PLAN] + [ev for u in self.units for ev in u.evaluations()]
        found: dict[Evaluation, Measured] = {}
        for ev in wanted:
            entry = self.store.load("evaluations", key_of(ev), _EVAL_FIELDS)
            measured = _measured(entry, len(self.info["guards"]), len(self.info["noise_outputs"])) if entry is not None else None
            if measured is not None:
                found[ev] = measured
        missing = [ev for ev in wanted if ev not in found]
        if not missing:
            return found
        if self.prepared is None:  # the run entry was cached, some evaluations were not
            cached = self.info
            self.info = self._prepare()
            if (cached["prepared_digest"], cached["ranges_digest"]) != (self.info["prepared_digest"], self.info["ranges_digest"]):
                log.warning("sensitivity cache: the model prepared now differs from the cached run's; evaluating afresh")
                return self.evaluate(key_of, deadline)  # every key changed (once: the model is prepared now)
        evaluator = self._evaluator()
        for ev in track(missing, "sensitivity: evaluating", total=len(missing), enabled=self.progress):
            if deadline is not None and ev not in (_FLOAT, _FULL_PLAN) and time.perf_counter() >= deadline:
                break
            result = evaluator.evaluate(ev)
            found[ev] = Measured(result.values, result.sqnr_db, result.seconds)
            entry = {"evaluation": ev.as_dict(), "values": list(result.values), "sqnr_db": list(result.sqnr_db), "seconds": result.seconds}
            self.store.store("evaluations", key_of(ev), entry)
        return found

    def _evaluator(self) -> Evaluator:
        p = self.prepared
        assert p is not None
        start = time.perf_counter()
        eval_samples = list(islice(self.samples, self.opts.eval_samples))
        guards = choose_guards(p.model, self.specs, ranges=p.ranges)
        self.evaluator = Evaluator(p.model, p.plan, p.ranges, eval_samples, guards, engine=self.engine, threads=self.opts.threads)
        self.evaluator.start()
        self.setup_seconds += time.perf_counter() - start
        return self.evaluator


def _valid_run(info: Mapping[str, Any]) -> bool:
    """Whether a cached run entry has the shape :meth:`_Run._prepare` writes."""

    def strings(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    def unit(u: Any) -> bool:
        return isinstance(u, dict) and isinstance(u.get("name"), str) and strings(u.get("nodes")) and strings(u.get("ops"))

    units, guards = info["units"], info["guards"]
    return (
        isinstance(info["prepared_digest"], str) and isinstance(info["ranges_digest"], str)
        and strings(info["noise_outputs"]) and strings(info["notes"])
        and isinstance(units, list) and all(unit(u) for u in units)
        and isinstance(guards, list) and all(isinstance(g, dict) and set(g) == _GUARD_KEYS for g in guards)
    )


def _measured(entry: Mapping[str, Any], guards: int, outputs: int) -> Measured | None:
    """A cached evaluation, or None (warned) when its entry does not have the run's shape."""
    values, noise, seconds = entry["values"], entry["sqnr_db"], entry["seconds"]
    numbers = [v for v in (values, noise) if isinstance(v, list) and all(x is None or isinstance(x, (int, float)) for x in v)]
    if len(numbers) != 2 or len(values) != guards or len(noise) != outputs or not isinstance(seconds, (int, float)):
        log.warning("sensitivity cache: ignoring an evaluation entry of another shape (%s)", entry.get("key"))
        return None
    return Measured(_floats(values), _floats(noise), float(seconds), cached=True)


def _floats(values: list[Any]) -> tuple[float | None, ...]:
    return tuple(None if v is None else float(v) for v in values)


def _prepare(model: Model, samples: Any, opts: ConversionOptions, progress: bool) -> _Prepared:
    """The static pipeline's steps up to ``annotate-quantization``, through the pass manager."""
    steps = build_steps(opts, PipelineInputs(has_data=True, has_ranges=False))
    names = [s["pass"] for s in steps]
    if _LAST_STEP not in names:
        raise ConfigError(f"sensitivity analysis needs a pipeline with '{_LAST_STEP}' (this one runs: {', '.join(names)})")
    steps = steps[: names.index(_LAST_STEP) + 1]
    work = raise_ir_floor(ir.clone(model))
    steps, notes = _with_opset_fallback(steps, work)
    ctx = PassContext(calibration_data=samples, progress=progress)
    result = pipeline_from_data(steps, where="sensitivity preparation").run(work, ctx)
    if ctx.plan is None or ctx.ranges is None:
        raise ConfigError("sensitivity analysis: the pipeline left no quantization plan")
    if not isinstance(ctx.ranges, RangeSet):
        raise ConfigError("sensitivity analysis: the pipeline left ranges of an unexpected kind")
    return _Prepared(result.model, ctx.plan, ctx.ranges, notes + list(ctx.notes))


def _report(
    run: _Run, found: Mapping[Evaluation, Measured], settings: dict[str, Any], source: tuple[str, str, str, str]
) -> SensitivityReport:
    """The ranked report; ``source`` is (model, its digest, data, its digest)."""
    guards = run.guards
    float_m, int8_m = found[_FLOAT], found[_FULL_PLAN]
    scales = {}
    for k in range(len(guards)):
        a, b = float_m.values[k], int8_m.values[k]
        scales[k] = abs(a - b) if a is not None and b is not None and abs(a - b) > 0 else 1.0
    units = []
    for u in run.units:
        if not all(ev in found for ev in u.evaluations()):
            continue  # not evaluated within the time budget
        q, f = (found[ev] for ev in u.evaluations())
        damage = score(guards, float_m.values, q.values, scales)
        recovery = score(guards, f.values, int8_m.values, scales)
        units.append(UnitSensitivity(u.name, u.nodes, u.ops, q, f, damage, recovery))
    units.sort(key=rank_key)
    evaluated = sum(1 for m in found.values() if not m.cached)
    return SensitivityReport(
        model=source[0], model_digest=source[1], data=source[2], data_digest=source[3], settings=settings, guards=guards,
        noise_outputs=list(run.info["noise_outputs"]), float_values=float_m, int8_values=int8_m, units=units, engine=settings["engine"],
        evaluations=len(found), evaluated=evaluated, cached=len(found) - evaluated,
        sessions=run.evaluator.sessions if run.evaluator is not None else 0, setup_seconds=run.setup_seconds, seconds=0.0,
        shared=run.evaluator.shared if run.evaluator is not None else 0, notes=list(run.info["notes"]),
    )
