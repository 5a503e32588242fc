"""Reading a set of guards on candidate outputs: the numbers the tuner decides with.

A :class:`GuardSet` holds one :class:`~onnxq.metrics.guard.Guard` per (output, metric) and reads them
all on ``(reference outputs, candidate outputs)`` sample pairs into a :class:`GuardReading`: a dict
``key → worst value`` over the outputs guarded by that key (``agreement`` and ``cosine``, the
classic guards' keys, are always present — 1.0 when no output uses them — so records stay
comparable with earlier reports), and the per-output records (metric, threshold, value, whether it
meets it) for reports.

Comparing readings: a reading meets the targets when every key meets its threshold; the *gain*
from reading ``a`` to ``b`` — how the tuner ranks what to return to float — is
``Σ_key sign · (b_key - a_key) / unit_key``, where ``sign`` is +1 for higher-is-better metrics and
``unit`` is the metric's meaningful step (1 for shares and cosines, 10 dB for SQNR; the threshold's
size for metrics in the output's own units), so a 0.01 cosine gain weighs as much as 0.1 dB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._decisions import SequenceAgreement
from .guard import Guard

__all__ = ["GuardSet", "GuardReading", "LEGACY_KEYS"]

#: The classic guards' keys and how many decimals their records keep.
LEGACY_KEYS = {"agreement": 5, "cosine": 6}


class GuardReading(dict[str, float]):
    """``key → worst value`` of one evaluation, with the per-output ``records``."""

    records: list[dict[str, Any]]

    def __init__(self, values: Mapping[str, float], records: list[dict[str, Any]]) -> None:
        super().__init__(values)
        self.records = records


class GuardSet:
    """The guards of a model's outputs, keyed for the tuner's records."""

    def __init__(self, guards: Sequence[Guard], *, min_agreement: float = 0.98, min_cosine: float = 0.97) -> None:
        self.guards = list(guards)
        keys = [g.key for g in self.guards]
        thresholds: dict[str, set[float]] = {}
        for g, k in zip(self.guards, keys):
            thresholds.setdefault(k, set()).add(g.threshold)
        # one key per (metric, threshold): outputs with different bars get their own key
        self.keys = [k if len(thresholds[k]) == 1 else f"{k}@{g.output}" for g, k in zip(self.guards, keys)]
        self.bar: dict[str, tuple[float, str, float]] = {"agreement": (min_agreement, "higher", 1.0), "cosine": (min_cosine, "higher", 1.0)}
        for g, k in zip(self.guards, self.keys):
            unit = g.metric.unit if g.metric.unit is not None else max(abs(g.threshold), 1e-12)
            self.bar[k] = (g.threshold, g.metric.direction, unit)

    def read(self, names: Sequence[str], pairs: Iterable[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]]) -> GuardReading:
        """Evaluate every guard over ``(reference outputs, candidate outputs)`` pairs (outputs by position in ``names``).

        Raises:
            ConfigError: a guard names an output not in ``names``, or a metric fails (named with
                the output and the sample).
        """
        index = {n: i for i, n in enumerate(names)}
        missing = sorted({g.output for g in self.guards} - set(index))
        if missing:
            raise ConfigError(f"guarded output(s) {', '.join(missing)} not among the model's outputs {', '.join(names)}")
        accs = [g.metric.accumulator() for g in self.guards]
        for sample, (ref, cand) in enumerate(pairs):
            for g, acc in zip(self.guards, accs):
                i = index[g.output]
                try:
                    acc.update(np.asarray(ref[i]), np.asarray(cand[i]))
                except ConfigError as e:
                    raise ConfigError(f"output '{g.output}', sample #{sample}: {e}") from e
        values: dict[str, float] = dict.fromkeys(LEGACY_KEYS, 1.0)
        seen: set[str] = set()
        records = []
        for g, k, acc in zip(self.guards, self.keys, accs):
            value = acc.result()
            records.append(g.record(value, acc.detail() if hasattr(acc, "detail") else ""))
            if value is None:
                continue
            value = _rounded(k, value)
            worse = min if g.metric.direction == "higher" else max
            values[k] = worse(values[k], value) if k in seen else value
            seen.add(k)
        return GuardReading(values, records)

    def coverage_notes(self, names: Sequence[str], reference_outputs: Iterable[Sequence[np.ndarray]]) -> list[str]:
        """Sentences about guards the samples cannot support: a share bar ``b`` on whole sequences
        only tells one disagreement from none with at least ``1 / (1 - b)`` sequences (50 for 0.98)."""
        counts: dict[int, int] = {}
        seq = [(k, g, g.metric) for k, g in enumerate(self.guards) if isinstance(g.metric, SequenceAgreement) and g.threshold < 1]
        for outputs in reference_outputs:
            for k, g, metric in seq:
                out = np.asarray(outputs[list(names).index(g.output)])
                axis = metric.batch_axis
                counts[k] = counts.get(k, 0) + (int(out.shape[axis]) if axis is not None and -out.ndim <= axis < out.ndim else 1)
        notes = []
        for k, g, _ in seq:
            needed = math.ceil(1 / (1 - g.threshold) - 1e-9)
            if counts.get(k, 0) < needed:
                notes.append(
                    f"accuracy guard: '{g.output}' is compared as whole sequences, but the guard sees only {counts.get(k, 0)}; "
                    f"a bar of {g.threshold:g} needs {needed} or more (more --eval-samples, or batched samples)"
                )
        return notes

    def meets(self, reading: Mapping[str, float]) -> bool:
        """Every key of ``reading`` that has a bar meets it."""
        return all(_meets(reading[k], *self.bar[k][:2]) for k in reading if k in self.bar)

    def gain(self, before: Mapping[str, float], after: Mapping[str, float]) -> float:
        """How much ``after`` improves on ``before`` (see the module docstring)."""
        total = 0.0
        for k in before.keys() & after.keys():
            if k not in self.bar:
                continue
            a, b = before[k], after[k]
            if math.isinf(a) and math.isinf(b):
                continue
            _, direction, unit = self.bar[k]
            delta = _finite(b) - _finite(a)
            total += (delta if direction == "higher" else -delta) / unit
        return total

    def shortfall(self, reading: Mapping[str, float]) -> str:
        """The keys of ``reading`` that miss their bar, e.g. ``worst_slice_sqnr:split=4+4 9.53 < 30``."""
        missed = []
        for k in reading:
            if k in self.bar and not _meets(reading[k], *self.bar[k][:2]):
                threshold, direction, _ = self.bar[k]
                missed.append(f"{k} {reading[k]:g} {'<' if direction == 'higher' else '>'} {threshold:g}")
        return ", ".join(missed) or "none"


def _rounded(key: str, value: float) -> float:
    if math.isinf(value) or math.isnan(value):
        return value
    return round(float(value), LEGACY_KEYS.get(key, 4))


def _finite(value: float) -> float:
    """inf dB (no noise at all) counts as 100 dB when measuring a gain."""
    return max(min(value, 100.0), -100.0) if math.isinf(value) else value


def _meets(value: float, threshold: float, direction: str) -> bool:
    if math.isnan(value):
        return False
    return value >= threshold if direction == "higher" else value <= threshold
