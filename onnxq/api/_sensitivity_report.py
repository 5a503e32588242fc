"""The sensitivity report: typed dataclasses, ranked units, and JSON with a ``schema_version``.

Scores (both in the guards' units, summed over the guards; see :class:`GuardInfo`):

- ``damage`` of a unit: how much worse than float the output metric is with only the unit
  quantized, ``Σ_g sign_g · (float_g - only_quantized_g) / unit_g``;
- ``recovery``: how much better than the full int8 plan it is with only the unit kept float,
  ``Σ_g sign_g · (only_float_g - int8_g) / unit_g``;

where ``sign_g`` is +1 when higher is better, ``unit_g`` the metric's meaningful step (1 for shares
and cosines, 10 dB for SQNR) or, for metrics without one (user functions, errors in the output's
units), the full plan's loss ``|float_g - int8_g|``; an infinite SQNR counts as 100 dB.

Ranking: by damage; ties (decision metrics such as top-1 or whole-sequence agreement often do not
move on a few samples) by the worst output SQNR with only the unit quantized, lowest first; then
by recovery, then by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SENSITIVITY_SCHEMA_VERSION", "GuardInfo", "Measured", "SensitivityReport", "UnitSensitivity", "rank_key", "score"]

#: Version of the JSON report's layout.
SENSITIVITY_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GuardInfo:
    """One (output, metric) pair every evaluation reads.

    Attributes:
        output: graph output name.
        metric: the metric's spec.
        direction: ``higher`` or ``lower`` is better.
        unit: the metric's meaningful step (None: measured in the output's units).
        why: how it was chosen (the default rule, or the user's spec).
    """

    output: str
    metric: str
    direction: str
    unit: float | None
    why: str

    @property
    def label(self) -> str:
        return f"{self.metric}@{self.output}"

    def as_dict(self) -> dict[str, Any]:
        return {"output": self.output, "metric": self.metric, "direction": self.direction, "unit": self.unit, "why": self.why}


@dataclass(frozen=True)
class Measured:
    """One evaluation: a value per guard (None where the metric does not apply), the SQNR of each
    float output against float (dB), its cost, and whether it came from the cache."""

    values: tuple[float | None, ...]
    sqnr_db: tuple[float | None, ...]
    seconds: float
    cached: bool = False

    @property
    def worst_sqnr_db(self) -> float:
        """The lowest SQNR over the outputs (inf: no noise, or no float output)."""
        return min((v for v in self.sqnr_db if v is not None and not math.isnan(v)), default=math.inf)

    def as_dict(self) -> dict[str, Any]:
        return {
            "values": [_json_number(v) for v in self.values],
            "sqnr_db": [_json_number(v) for v in self.sqnr_db],
            "seconds": round(self.seconds, 6),
            "cached": self.cached,
        }


@dataclass(frozen=True)
class UnitSensitivity:
    """One unit's two evaluations and scores."""

    name: str
    nodes: tuple[str, ...]
    ops: tuple[str, ...]
    only_quantized: Measured
    only_float: Measured
    damage: float
    recovery: float

    @property
    def seconds(self) -> float:
        return self.only_quantized.seconds + self.only_float.seconds

    def as_dict(self, rank: int) -> dict[str, Any]:
        return {
            "rank": rank,
            "name": self.name,
            "nodes": list(self.nodes),
            "ops": list(self.ops),
            "damage": round(self.damage, 6),
            "only_quantized_sqnr_db": _json_number(round(self.only_quantized.worst_sqnr_db, 3)),
            "recovery": round(self.recovery, 6),
            "only_quantized": self.only_quantized.as_dict(),
            "only_float": self.only_float.as_dict(),
        }


@dataclass
class SensitivityReport:
    """What :func:`onnxq.sensitivity` found, ranked most sensitive first.

    Attributes:
        model: where the model came from.
        model_digest: content digest of the input model (structure and weights).
        data: the data used (a description) and its digest.
        settings: every setting the results depend on (the cache key hashes them).
        guards: the (output, metric) pairs each evaluation reads, in the order of every ``values``.
        float_values / int8_values: the float model's and the full plan's values (the baselines).
        noise_outputs: the float outputs, in the order of every ``sqnr_db``.
        units: ranked, most sensitive first.
        engine: ``switch`` or ``rebuild``.
        evaluations: evaluations the report rests on; ``evaluated`` of them ran now, ``cached``
            came from the cache.
        shared: evaluations run now whose plan quantized the very values of an earlier one (their
            outputs are the same, so they reuse its reading; e.g. floating a unit without weights
            whose tensors its neighbours keep quantized changes nothing).
        sessions: onnxruntime sessions built (0 when everything was cached).
        setup_seconds: preparation (calibration, plan) and session building; ``seconds`` in total.
        notes: sentences about the run (the pipeline's notes, cache warnings).
    """

    model: str
    model_digest: str
    data: str
    data_digest: str
    settings: dict[str, Any]
    guards: list[GuardInfo]
    noise_outputs: list[str]
    float_values: Measured
    int8_values: Measured
    units: list[UnitSensitivity]
    engine: str
    evaluations: int
    evaluated: int
    cached: int
    sessions: int
    setup_seconds: float
    seconds: float
    shared: int = 0
    notes: list[str] = field(default_factory=list)
    schema_version: int = SENSITIVITY_SCHEMA_VERSION

    @property
    def evaluations_per_second(self) -> float:
        """Evaluations run now per second of evaluating (cache reads and setup excluded)."""
        busy = sum(m.seconds for u in self.units for m in (u.only_quantized, u.only_float) if not m.cached)
        busy += sum(m.seconds for m in (self.float_values, self.int8_values) if not m.cached)
        return self.evaluated / busy if self.evaluated and busy > 0 else 0.0

    def ranked(self) -> list[UnitSensitivity]:
        """The units, most sensitive first (they are stored so)."""
        return list(self.units)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``schema_version`` first)."""
        return {
            "schema_version": self.schema_version,
            "model": self.model,
            "model_digest": self.model_digest,
            "data": self.data,
            "data_digest": self.data_digest,
            "settings": self.settings,
            "engine": self.engine,
            "guards": [g.as_dict() for g in self.guards],
            "noise_outputs": list(self.noise_outputs),
            "baseline": {"float": self.float_values.as_dict(), "int8": self.int8_values.as_dict()},
            "units": [u.as_dict(rank) for rank, u in enumerate(self.units, start=1)],
            "stats": {
                "units": len(self.units),
                "evaluations": self.evaluations,
                "evaluated": self.evaluated,
                "cached": self.cached,
                "shared": self.shared,
                "sessions": self.sessions,
                "setup_seconds": round(self.setup_seconds, 4),
                "seconds": round(self.seconds, 4),
                "evaluations_per_second": round(self.evaluations_per_second, 3),
            },
            "notes": list(self.notes),
        }


def _json_number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)  # JSON has no inf / nan


def _finite(value: float) -> float:
    return max(min(value, 100.0), -100.0) if math.isinf(value) else value


def score(guards: Sequence[GuardInfo], better: Sequence[float | None], worse: Sequence[float | None], scales: Mapping[int, float]) -> float:
    """``Σ_g sign_g · (better_g - worse_g) / unit_g`` over the guards where both values exist
    (``scales`` gives ``unit_g`` for guards without a unit of their own)."""
    total = 0.0
    for k, g in enumerate(guards):
        a, b = better[k], worse[k]
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            continue
        delta = _finite(a) - _finite(b)
        unit = g.unit if g.unit is not None else scales.get(k, 1.0)
        total += (delta if g.direction == "higher" else -delta) / unit
    return total


def rank_key(unit: UnitSensitivity) -> tuple[float, float, float, str]:
    """Most sensitive first: damage, then the lowest SQNR quantized alone, then recovery, then name."""
    return (-unit.damage, unit.only_quantized.worst_sqnr_db, -unit.recovery, unit.name)
