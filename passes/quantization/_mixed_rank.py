"""Rank mixed-precision units most sensitive first, by what lowering each one alone costs.

Static units are measured by sensitivity analysis (:class:`.sensitivity.Evaluator`, ``switch``
engine: one session for all of them): ``only-quantized U`` against float. Dynamic-only units
(an LSTM, a MatMul annotate refused) are not in the static plan; each is measured in its own
session with only it dynamic (``measure_alone``). Scores, as in ``onnxq sensitivity``:

    damage(U) = Σ_g sign_g · (float_g - lowered_g) / unit_g

over the accuracy guards ``g`` (``sign`` +1 when higher is better; ``unit`` the metric's step, or
the size of its bar for metrics in the output's units), ties broken by the worst output SQNR of
``lowered`` (lowest first), then by name. A unit with nothing but ``fp32`` on its ladder (the search
space leaves it no other rung) is not measured: it ranks last, with no damage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from onnxq.calibration.ranges import TensorRange
from onnxq.ir import Model
from onnxq.metrics import Guard
from onnxq.plan import QuantPlan

from ._mixed_units import MixedUnit
from .sensitivity import Evaluation, Evaluator

__all__ = ["Ranked", "rank_units", "damage"]


@dataclass(frozen=True)
class Ranked:
    """A unit with its damage and the worst output SQNR with only it lowered (dB)."""

    unit: MixedUnit
    damage: float
    sqnr_db: float


def damage(guards: Sequence[Guard], reference: Sequence[float | None], lowered: Sequence[float | None]) -> float:
    """``Σ_g sign_g · (reference_g - lowered_g) / unit_g`` over the guards both values exist for."""
    total = 0.0
    for g, a, b in zip(guards, reference, lowered):
        if a is None or b is None:
            continue
        a, b = _finite(a), _finite(b)
        unit = g.metric.unit if g.metric.unit is not None else max(abs(g.threshold), 1e-12)
        total += (a - b if g.metric.direction == "higher" else b - a) / unit
    return total


def _finite(v: float) -> float:
    return max(min(v, 100.0), -100.0) if math.isinf(v) else v


def rank_units(
    model: Model,
    plan: QuantPlan,
    ranges: Mapping[str, TensorRange],
    samples: Sequence[Mapping[str, object]],
    guards: Sequence[Guard],
    units: Sequence[MixedUnit],
    measure_alone: Callable[[MixedUnit], tuple[Sequence[float | None], float]],
    float_values: Sequence[float | None],
    *,
    threads: int = 1,
) -> tuple[list[Ranked], int]:
    """``units`` most sensitive first, and how many evaluations that took.

    ``measure_alone(unit)`` returns, for a dynamic-only unit, the guards' values and the worst
    output SQNR with only that unit dynamic; ``float_values`` are the guards' values of float
    against itself (the reference its damage is counted from).
    """
    static = [u for u in units if u.static and len(u.ladder) > 1]
    ranked: list[Ranked] = [Ranked(u, 0.0, math.inf) for u in units if len(u.ladder) == 1]
    evaluations = 0
    if static:
        evaluator = Evaluator(model, plan, ranges, samples, guards, engine="switch", threads=threads)  # type: ignore[arg-type]
        reference = evaluator.evaluate(Evaluation("only-quantized", ())).values
        for u in static:
            result = evaluator.evaluate(Evaluation("only-quantized", u.nodes))
            evaluations += 1
            worst = min((v for v in result.sqnr_db if v is not None), default=math.inf)
            ranked.append(Ranked(u, damage(guards, reference, result.values), worst))
    for u in units:
        if u.static or len(u.ladder) == 1:
            continue
        values, worst = measure_alone(u)
        evaluations += 1
        ranked.append(Ranked(u, damage(guards, float_values, values), worst))
    ranked.sort(key=lambda r: (-round(r.damage, 9), r.sqnr_db, r.unit.name))
    return ranked, evaluations
