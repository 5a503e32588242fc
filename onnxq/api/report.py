"""``ConversionReport``: what one conversion did, as typed data with a versioned JSON form.

The report is built from the typed pass context once the pipeline has run — the passes' records,
the skip records, the plan, the tuner's steps, the calibration stats — and nothing adds keys to it
afterwards. ``to_dict()`` is the JSON written by ``onnxq convert --report`` (keys in a fixed order,
``schema_version`` first); :meth:`ConversionReport.from_dict` reads it back (``--replay``).

Fields (JSON keys):
    schema_version: bumped whenever a field changes meaning or disappears.
    onnxq_version: the onnxq that wrote the report.
    model / output: input path (or ``<ModelProto>``/``<bytes>``) and where the result was written.
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
    calibration: what calibration did (tensors, samples, groups, seconds, peak RSS, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..context import PassContext, Skip
from ..errors import ConfigError
from ..pass_manager import PassRecord

__all__ = ["ConversionReport", "SCHEMA_VERSION", "RangeEntry"]

#: Version of the report's JSON layout.
SCHEMA_VERSION = 1


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
    calibration: dict[str, Any] | None = None
    output: str | None = None
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
            calibration=ctx.calibration_stats.as_dict() if ctx.calibration_stats is not None else None,
        )

    def float_reasons(self) -> dict[str, int]:
        """How many nodes were left float for each reason."""
        counts: dict[str, int] = {}
        for s in self.float_nodes:
            counts[s.reason] = counts.get(s.reason, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema_version first, fixed key order)."""
        return {
            "schema_version": self.schema_version,
            "onnxq_version": self.onnxq_version,
            "model": self.model,
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
            "calibration": self.calibration,
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
                calibration=data.get("calibration"),
                output=data.get("output"),
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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the report: {e}") from e
        return cls.from_dict(data, str(path))


def _skip(d: Mapping[str, Any]) -> Skip:
    return Skip(str(d["node"]), str(d.get("op", "")), str(d["reason"]), str(d.get("pass", "")), d.get("kept", "float"))
