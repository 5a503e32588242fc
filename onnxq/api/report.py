"""``ConversionReport``: what one conversion did, as typed data with a versioned JSON form.

The report is built from the typed pass context once the pipeline has run — the passes' records,
the skip records, the plan, the tuner's steps, the calibration stats — and nothing adds keys to it
afterwards. ``to_dict()`` is the JSON written by ``onnxq convert --report`` (keys in a fixed order,
``schema_version`` first); :meth:`ConversionReport.from_dict` reads it back (``--replay``).

Fields (JSON keys):
    schema_version: bumped whenever a field changes meaning or disappears.
    onnxq_version: the onnxq that wrote the report.
    model / output: input path (or ``<ModelProto>``/``<bytes>``) and where the result was written.
    model_digest: structural SHA-256 of the input model (:func:`model_digest`); ``--replay`` refuses
        a report whose digest is not the digest of the model it converts.
    mode: the conversion mode; options: every conversion option, defaults included.
    pipeline: the steps that ran (``{"pass": name, **options}``), after the opset fallback.
    notes: sentences about the run (a skipped step, an opset upgrade, a reverted rewrite).
    bytes_before / bytes_after: serialized model sizes; seconds: wall time of the conversion.
    passes: per pass: name, modified, seconds, stats.
    quantized_nodes: nodes the static plan quantized (None in other modes).
    float_nodes: nodes left float, each ``{"node", "op", "reason", "pass", "kept"}``.
    qdq_nodes: nodes quantized but left in QDQ form by convert-qlinear (same records).
    unchanged: nodes or layers a rewrite or pruning pass did not apply to (same records).
    ranges: activation ranges of the quantized tensors, ``{tensor: {"min", "max", "group"}}``.
    latency: the tuner's steps (``{"threads", "steps": [...]}``) or the report it replayed.
    accuracy_guards: per graph output, the metric that guarded it in the tuner, its threshold,
        direction, measured value (of the last plan measured: the final one when int8 was kept),
        whether it met the bar and why that metric (``{"output", "metric", "threshold",
        "direction", "value", "meets", "why", "worst"}``). Empty when the guard did not run.
    calibration: what calibration did (tensors, samples, groups, seconds, peak RSS, ...).
    mixed_precision: with an accuracy target or latency constraint (``mixed-precision``): the
        targets, whether they were met (``met``; ``unmet`` says what was not, plainly), the
        precision of every unit's node (``int8`` / ``dynamic-int8`` / ``fp32``), the evaluations
        spent and every point measured (``frontier``: label, latency_ms, float_ms, speedup, the
        target metric's value, int8 / dynamic node counts; see
        :class:`onnxq.plan.MixedPrecisionRecord`); None otherwise.
    target: with ``--target`` (or a recipe's ``target``): the profile, the profile settings the
        user overrode (``overrides``: ``{option: {"user", "profile"}}``, each also a note), the ops
        the target cannot run, its validation on the target's runtime (checks, load time, executed
        precisions, the ``.ort``'s required operators, ...) and the linter's findings
        (:meth:`onnxq.targets.check.TargetReport.to_dict`); None without a target.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..context import PassContext, Skip
from ..errors import ConfigError
from ..ir import Model
from ..pass_manager import PassRecord

__all__ = ["ConversionReport", "SCHEMA_VERSION", "RangeEntry", "GuardEntry", "model_digest"]

#: Version of the report's JSON layout. 2: ``accuracy_guards`` added; the tuner's ``agreement`` /
#: ``cosine`` step values cover only the outputs those metrics guard (sequence and concatenated
#: outputs now have their own metrics).
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class GuardEntry:
    """Which metric guarded one output, its bar and the value measured (see :meth:`onnxq.metrics.Guard.record`)."""

    output: str
    metric: str
    threshold: float
    direction: str
    value: float | None
    meets: bool
    why: str
    worst: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GuardEntry:
        value = d.get("value")
        return cls(
            str(d["output"]), str(d["metric"]), float(d["threshold"]), str(d.get("direction", "higher")),
            None if value is None else float(value), bool(d.get("meets", False)), str(d.get("why", "")), str(d.get("worst", "")),
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in ("output", "metric", "threshold", "direction", "value", "meets", "why")}
        if self.worst:
            out["worst"] = self.worst
        return out


@dataclass(frozen=True)
class RangeEntry:
    """The calibrated range of one quantized activation and its share group."""

    min: float
    max: float
    group: str


@dataclass
class ConversionReport:
    """What a conversion did (see the module docstring for every field)."""

    model: str
    mode: str
    options: dict[str, Any]
    pipeline: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    passes: list[PassRecord] = field(default_factory=list)
    quantized_nodes: int | None = None
    float_nodes: list[Skip] = field(default_factory=list)
    qdq_nodes: list[Skip] = field(default_factory=list)
    unchanged: list[Skip] = field(default_factory=list)
    ranges: dict[str, RangeEntry] = field(default_factory=dict)
    latency: dict[str, Any] | None = None
    accuracy_guards: list[GuardEntry] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    mixed_precision: dict[str, Any] | None = None
    output: str | None = None
    model_digest: str = ""
    schema_version: int = SCHEMA_VERSION
    onnxq_version: str = __version__

    @classmethod
    def from_context(
        cls, *, model: str, mode: str, options: dict[str, Any], pipeline: list[dict[str, Any]], ctx: PassContext, records: list[PassRecord], notes: list[str]
    ) -> ConversionReport:
        """Build the report of a finished run from its pass context and pass records."""
        plan, ranges = ctx.plan, ctx.ranges
        entries: dict[str, RangeEntry] = {}
        if plan is not None and ranges is not None:
            entries = {name: RangeEntry(ranges[name].min, ranges[name].max, tq.group) for name, tq in sorted(plan.activations.items()) if name in ranges}
        return cls(
            model=model,
            mode=mode,
            options=options,
            pipeline=pipeline,
            notes=notes + [n for n in ctx.notes if n not in notes],
            passes=records,
            quantized_nodes=len(plan.quantized_nodes) if plan is not None else None,
            float_nodes=ctx.skipped("float"),
            qdq_nodes=ctx.skipped("qdq"),
            unchanged=ctx.skipped("unchanged"),
            ranges=entries,
            latency=ctx.tuning.as_dict() if ctx.tuning is not None else None,
            accuracy_guards=[GuardEntry.from_dict(g) for g in ctx.tuning.guards] if ctx.tuning is not None else [],
            calibration=ctx.calibration_stats.as_dict() if ctx.calibration_stats is not None else None,
            mixed_precision=ctx.tuning.mixed.as_dict() if ctx.tuning is not None and ctx.tuning.mixed is not None else None,
        )

    def float_reasons(self) -> dict[str, int]:
        """How many nodes were left float for each reason."""
        return dict(Counter(s.reason for s in self.float_nodes))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema_version first, fixed key order)."""
        return {
            "schema_version": self.schema_version,
            "onnxq_version": self.onnxq_version,
            "model": self.model,
            "model_digest": self.model_digest,
            "output": self.output,
            "mode": self.mode,
            "options": self.options,
            "pipeline": self.pipeline,
            "notes": self.notes,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "seconds": round(self.seconds, 3),
            "passes": [r.as_dict() for r in self.passes],
            "quantized_nodes": self.quantized_nodes,
            "float_nodes": [s.as_dict() for s in self.float_nodes],
            "qdq_nodes": [s.as_dict() for s in self.qdq_nodes],
            "unchanged": [s.as_dict() for s in self.unchanged],
            "ranges": {k: {"min": v.min, "max": v.max, "group": v.group} for k, v in self.ranges.items()},
            "latency": self.latency,
            "accuracy_guards": [g.as_dict() for g in self.accuracy_guards],
            "calibration": self.calibration,
            "target": self.target,
            "mixed_precision": self.mixed_precision,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "report") -> ConversionReport:
        """Read a report written by :meth:`to_dict` (e.g. for ``--replay``).

        Raises:
            ConfigError: not a conversion report, or one of a newer schema.
        """
        if not isinstance(data, Mapping) or "schema_version" not in data:
            raise ConfigError(f"{where}: not an onnxq conversion report (no schema_version)")
        version = data["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ConfigError(f"{where}: report schema_version {version!r} is newer than this onnxq understands ({SCHEMA_VERSION})")
        try:
            return cls(
                model=str(data["model"]),
                mode=str(data["mode"]),
                options=dict(data.get("options") or {}),
                pipeline=list(data.get("pipeline") or []),
                notes=[str(n) for n in data.get("notes") or []],
                bytes_before=int(data.get("bytes_before", 0)),
                bytes_after=int(data.get("bytes_after", 0)),
                seconds=float(data.get("seconds", 0.0)),
                passes=[PassRecord(str(p["pass"]), bool(p["modified"]), float(p["seconds"]), dict(p.get("stats") or {})) for p in data.get("passes") or []],
                quantized_nodes=data.get("quantized_nodes"),
                float_nodes=[_skip(d) for d in data.get("float_nodes") or []],
                qdq_nodes=[_skip(d) for d in data.get("qdq_nodes") or []],
                unchanged=[_skip(d) for d in data.get("unchanged") or []],
                ranges={k: RangeEntry(float(v["min"]), float(v["max"]), str(v.get("group", ""))) for k, v in (data.get("ranges") or {}).items()},
                latency=data.get("latency"),
                accuracy_guards=[GuardEntry.from_dict(g) for g in data.get("accuracy_guards") or []],
                calibration=data.get("calibration"),
                target=data.get("target"),
                mixed_precision=data.get("mixed_precision"),
                output=data.get("output"),
                model_digest=str(data.get("model_digest") or ""),
                schema_version=version,
                onnxq_version=str(data.get("onnxq_version", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{where}: malformed conversion report ({type(e).__name__}: {e})") from e

    @classmethod
    def load(cls, path: str | Path) -> ConversionReport:
        """Read a report JSON file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            detail = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise ConfigError(f"{path}: cannot read the report: {type(e).__name__}: {detail}") from e
        return cls.from_dict(data, str(path))


def model_digest(model: Model) -> str:
    """Structural SHA-256 of ``model`` (ops, names, connections, weight shapes), the digest ranges
    files carry too: enough to recognize a report made for another model."""
    from ..calibration.collector import _model_digest  # one definition, shared with ranges files

    return _model_digest(model)


def _skip(d: Mapping[str, Any]) -> Skip:
    return Skip(str(d["node"]), str(d.get("op", "")), str(d["reason"]), str(d.get("pass", "")), d.get("kept", "float"))
