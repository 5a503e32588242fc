"""The mixed-precision search: which units keep a higher precision, found with few evaluations.

Units come ranked most sensitive first (:mod:`._mixed_rank`). An *assignment* gives each unit one
precision of its ladder (:mod:`._mixed_units`). With ``n`` units and ``L(u)`` the cheapest rung of
unit ``u``'s ladder:

1. ``all lowest``: every unit at ``L(u)``. If it meets the accuracy targets, go to 4.
2. ``all fp32`` (the float model through the same build): if even that misses the targets, the
   targets cannot be met; the best reading seen is returned, marked unmet.
3. bisect ``k``, the number of most-sensitive units kept fp32 (the rest at ``L(u)``), for the
   smallest ``k`` meeting the targets (``ceil(log2 n)`` evaluations; accuracy is assumed to grow
   with ``k``, which the ranking makes nearly true). Then the *re-quantize sweep*: each of the ``k``
   kept units, least sensitive first, is tried at each cheaper rung (``int8``, ``dynamic-int8``,
   ``int16``, ``fp16``) with the others as they stand; the first rung meeting the targets is kept —
   floating the more sensitive units often made a less sensitive one's fallback unnecessary. A
   *measured* rung (``int16``, ``fp16``: :data:`~._mixed_units.MEASURED`, not assumed faster than
   fp32) is kept only when it is also timed faster than the unit at fp32 by ``min_gain``, twice.
4. latency moves on the feasible assignment: for each class of nodes (tune-latency's
   :data:`~.tune_latency.NODE_CLASSES`: glue classes to ``fp32``; MatMul/Gemm ``int8`` units to
   ``dynamic-int8``), the moved assignment is evaluated and timed against the current one and kept
   when it still meets the targets and is faster by ``min_gain`` twice in a row (noise must not
   flip a decision).
5. The chosen point is the feasible one with the highest measured speedup over float (speedups
   within ``min_gain`` of the best count as equal: the one with the most 8-bit nodes, then the fewest
   at a measured rung, wins); it meets
   the latency constraints (``max_latency_ms``, ``min_speedup``) or the result says which it misses.

Every assignment is evaluated at most once (cached); accuracy evaluations stop at the budget,
after which the search keeps what it has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from onnxq.errors import ConfigError

from ._mixed_units import DYNAMIC, FP32, INT8, MEASURED, PRECISIONS, MixedUnit

__all__ = ["Assignment", "Measurer", "Point", "SearchResult", "search"]

Assignment = tuple[str, ...]


class Measurer(Protocol):
    """What the search needs from onnxruntime (see ``mixed_precision._MixedTrials``)."""

    def evaluate(self, assignment: Assignment) -> tuple[Mapping[str, float], Mapping[str, int]]:
        """Accuracy reading of ``assignment`` and how many nodes it puts at each precision."""
        ...

    def time_pair(self, a: Assignment | None, b: Assignment) -> tuple[float, float]:
        """Interleaved medians (ms) of ``a`` (None: float) and ``b``."""
        ...

    def meets(self, reading: Mapping[str, float]) -> bool: ...

    def gain(self, before: Mapping[str, float], after: Mapping[str, float]) -> float: ...

    def budget_left(self) -> int: ...


@dataclass
class Point:
    """One evaluated assignment (timed: ``float_ms`` / ``ms`` set); ``nodes``: precision → node count."""

    assignment: Assignment
    label: str
    reading: Mapping[str, float]
    meets: bool
    nodes: Mapping[str, int]
    float_ms: float | None = None
    ms: float | None = None

    @property
    def tie_key(self) -> tuple[int, int]:
        """Among plans the timer cannot tell apart: the most 8-bit nodes (the smallest file), then the
        fewest at a measured rung (``int16`` / ``fp16`` earn their place by speed alone)."""
        return self.nodes.get(INT8, 0) + self.nodes.get(DYNAMIC, 0), -sum(self.nodes.get(p, 0) for p in MEASURED)

    @property
    def speedup(self) -> float | None:
        return self.float_ms / self.ms if self.float_ms and self.ms else None


@dataclass
class SearchResult:
    """The chosen point, whether the accuracy / latency targets hold, and every point seen."""

    chosen: Point
    accuracy_met: bool
    latency_met: bool
    latency_shortfall: str
    points: list[Point] = field(default_factory=list)
    evaluations: int = 0
    timed: int = 0


class _Search:
    def __init__(self, units: Sequence[MixedUnit], m: Measurer, classes: Mapping[str, Callable[[MixedUnit], bool]], min_gain: float) -> None:
        self.units, self.m, self.classes, self.min_gain = list(units), m, classes, min_gain
        self.points: dict[Assignment, Point] = {}
        self.order: list[Point] = []
        self.evaluations = 0
        self.timed = 0

    def evaluate(self, assignment: Assignment, label: str) -> Point | None:
        """The point of ``assignment`` (evaluated now unless seen); None once the budget is spent."""
        if assignment in self.points:
            return self.points[assignment]
        if self.m.budget_left() <= 0:
            return None
        reading, nodes = self.m.evaluate(assignment)
        self.evaluations += 1
        point = Point(assignment, label, reading, self.m.meets(reading), {p: int(nodes.get(p, 0)) for p in PRECISIONS})
        self.points[assignment] = point
        self.order.append(point)
        return point

    def time(self, point: Point) -> Point:
        if point.ms is None:
            point.float_ms, point.ms = self.m.time_pair(None, point.assignment)
            self.timed += 1
        return point

    def kept_float(self, k: int) -> Assignment:
        """The ``k`` most sensitive units fp32, the others at their cheapest rung."""
        return tuple(FP32 if i < k else u.ladder[0] for i, u in enumerate(self.units))

    def feasible(self) -> Point | None:
        n = len(self.units)
        low = self.evaluate(self.kept_float(0), "all lowest")
        if low is not None and low.meets:
            return low
        high = self.evaluate(self.kept_float(n), "all fp32")
        if high is None or not high.meets:
            return None
        best, lo, hi = high, 1, n
        while lo < hi:
            mid = (lo + hi) // 2
            p = self.evaluate(self.kept_float(mid), f"top {mid} of {n} units fp32")
            if p is None:
                break
            if p.meets:
                best, hi = p, mid
            else:
                lo = mid + 1
        return self.requantize(best, hi)

    def requantize(self, current: Point, k: int) -> Point:
        """Try each kept unit (least sensitive first) at each cheaper rung; keep the first that meets."""
        for i in reversed(range(k)):
            unit = self.units[i]
            for rung in unit.ladder[:-1]:
                trial = _with(current.assignment, i, rung)
                p = self.evaluate(trial, f"{unit.name} back to {rung}")
                if p is None:
                    return current
                if p.meets and (rung not in MEASURED or self.faster(current.assignment, trial)):
                    current = p
                    break
        return current

    def faster(self, current: Assignment, trial: Assignment) -> bool:
        """``trial`` timed faster than ``current`` by ``min_gain``, and again (by half of it) in a second pair."""
        t_cur, t_new = self.m.time_pair(current, trial)
        if t_new >= t_cur * (1 - self.min_gain):
            return False
        t_cur, t_new = self.m.time_pair(current, trial)
        return t_new < t_cur * (1 - self.min_gain / 2)

    def latency_moves(self, current: Point) -> Point:
        """Class moves (glue to fp32, MatMul/Gemm int8 to dynamic) kept when measured faster."""
        self.time(current)
        for label, predicate in self.classes.items():
            target = DYNAMIC if label == "MatMul/Gemm" else FP32
            at = [i for i, u in enumerate(self.units) if current.assignment[i] == INT8 and predicate(u) and target in u.ladder]
            if not at:
                continue
            trial = current.assignment
            for i in at:
                trial = _with(trial, i, target)
            p = self.evaluate(trial, f"{label} {target}")
            if p is None:
                break
            if p.meets and self.faster(current.assignment, trial):
                self.time(p)
                current = p
        return current


def _with(assignment: Assignment, i: int, precision: str) -> Assignment:
    return assignment[:i] + (precision,) + assignment[i + 1 :]


def search(
    units: Sequence[MixedUnit],
    measurer: Measurer,
    *,
    classes: Mapping[str, Callable[[MixedUnit], bool]],
    min_gain: float,
    max_latency_ms: float | None,
    min_speedup: float | None,
) -> SearchResult:
    """Search precisions for ``units`` (most sensitive first); see the module docstring."""
    s = _Search(units, measurer, classes, min_gain)
    feasible = s.feasible()
    if feasible is None and not s.order:
        raise ConfigError("mixed-precision: no evaluation budget left (max_accuracy_trials)")
    if feasible is None:
        # unmet even all-float (or out of budget before a feasible point): the best reading seen
        best = s.order[0]
        for p in s.order[1:]:
            if measurer.gain(best.reading, p.reading) > 0:
                best = p
        s.time(best)
        return SearchResult(best, False, True, "", s.order, s.evaluations, s.timed)
    current = s.latency_moves(feasible)
    for p in [q for q in s.order if q.meets]:
        s.time(p)
    low = s.points.get(s.kept_float(0))
    if low is not None:
        s.time(low)  # the all-lowest speed is the frontier's other end, met or not
    candidates = [p for p in s.order if p.meets and p.speedup is not None]
    chosen = current
    if candidates:
        # speedups within min_gain of the best are one speed as far as the timer can tell: the
        # plan lowering the most nodes (the smallest file) wins among them
        fastest = max(_speed(p) for p in candidates)
        close = [p for p in candidates if _speed(p) >= fastest * (1 - min_gain)]
        chosen = max(close, key=lambda p: (*p.tie_key, _speed(p)))
    shortfall = []
    if max_latency_ms is not None and chosen.ms is not None and chosen.ms > max_latency_ms:
        shortfall.append(f"latency {chosen.ms:.3f} ms > {max_latency_ms:g} ms")
    if min_speedup is not None and (chosen.speedup or 0.0) < min_speedup:
        shortfall.append(f"speedup {chosen.speedup or 0.0:.2f}x < {min_speedup:g}x")
    return SearchResult(chosen, True, not shortfall, ", ".join(shortfall), s.order, s.evaluations, s.timed)


def _speed(p: Point) -> float:
    return p.speedup if p.speedup is not None else 0.0
