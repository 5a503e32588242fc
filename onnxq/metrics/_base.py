"""The metric contract, the registry and the ``name:key=value,...`` spec syntax.

A metric compares a candidate output with its reference (float) output, sample by sample:
``accumulator()`` returns a fresh :class:`Accumulator` whose ``update(ref, cand)`` folds one sample
in and whose ``result()`` gives the value over every sample seen so far (``None`` when the metric
does not apply to that output, e.g. top-1 agreement of a tensor without a class axis). Accumulators
keep running sums or per-slice sums — never the samples — so memory does not grow with the data.

Metrics are frozen dataclasses whose fields are their parameters, registered by name
(``@register_metric("cosine")``, :mod:`._registry`; duplicates refused). A spec names one with parameters:
``worst_slice_sqnr:axis=1,split=4+80`` (``+`` separates the items of a list; ``none``, ``true`` and
``false`` are read as such; numbers as numbers). Unknown names and parameters are
:class:`~onnxq.errors.ConfigError` listing the valid ones. ``module:function`` (any name that is
not registered, with a colon) imports a user metric: see :mod:`onnxq.metrics._user`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from ..config import coerce_option, parse_number
from ..errors import ConfigError

__all__ = ["Accumulator", "Direction", "Metric", "REGISTRY", "Ratio", "RatioMetric", "build_metric", "metric_names", "parse_params", "registered_metric"]

Direction = Literal["higher", "lower"]


class Accumulator(Protocol):
    """Streaming state of one metric on one output."""

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Fold in one sample (reference and candidate outputs of the same shape)."""

    def result(self) -> float | None:
        """The metric over the samples seen so far; None when it does not apply."""


class Ratio:
    """The accumulator of a metric that is a ratio of running sums: a share of agreeing rows, a mean
    over samples. ``counts(ref, cand)`` gives one sample's (numerator, denominator) terms; the
    result is their sums' ratio, ``empty`` while the denominator is 0.
    """

    def __init__(self, counts: Callable[[np.ndarray, np.ndarray], tuple[float, int]], empty: float | None = None) -> None:
        self.counts = counts
        self.empty = empty
        self.numerator = 0.0
        self.denominator = 0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        numerator, denominator = self.counts(ref, cand)
        self.numerator += numerator
        self.denominator += denominator

    def result(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else self.empty


@dataclass(frozen=True)
class Metric:
    """Base of every metric: subclasses are frozen dataclasses whose fields are its parameters.

    Class attributes:
        name: the registered name (set by :func:`register_metric`).
        direction: ``"higher"`` or ``"lower"`` is better.
        description: one line for ``--help`` and reports.
        unit: the size of a change that matters (1.0 for a share or a cosine, 10 dB for SQNR), so
            the tuner can weigh improvements of different metrics against each other; None for
            metrics in the output's own units (compared relative to their threshold instead).
        default_threshold: the guard's bar when the user gives none (None: a threshold is required).
    """

    name: ClassVar[str] = ""
    direction: ClassVar[Direction] = "higher"
    description: ClassVar[str] = ""
    unit: ClassVar[float | None] = 1.0
    default_threshold: ClassVar[float | None] = None

    def accumulator(self) -> Accumulator:
        """A fresh streaming accumulator."""
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The spec that rebuilds this metric: its name and the parameters that differ from their defaults."""
        params = [f"{f.name}={_text(getattr(self, f.name))}" for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        return f"{self.name}:{','.join(params)}" if params else self.name

    def meets(self, value: float | None, threshold: float) -> bool:
        """Whether ``value`` is at least as good as ``threshold`` (a metric that does not apply meets it)."""
        if value is None:
            return True
        if math.isnan(value):
            return False
        return value >= threshold if self.direction == "higher" else value <= threshold

    def evaluate(self, pairs: typing.Iterable[tuple[np.ndarray, np.ndarray]]) -> float | None:
        """The metric over ``(reference, candidate)`` pairs (a convenience for tests and scripts)."""
        acc = self.accumulator()
        for ref, cand in pairs:
            acc.update(np.asarray(ref), np.asarray(cand))
        return acc.result()

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class RatioMetric(Metric):
    """A metric whose value is a ratio of running sums (:class:`Ratio`): a subclass gives one sample's terms."""

    #: the value before any sample adds to the denominator
    empty: ClassVar[float | None] = None

    def counts(self, ref: np.ndarray, cand: np.ndarray) -> tuple[float, int]:
        """One sample's (numerator, denominator) terms."""
        raise NotImplementedError

    def accumulator(self) -> Ratio:
        return Ratio(self.counts, self.empty)


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(_text(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: name → factory taking the parsed parameters (a Metric subclass, or a wrapper for user functions);
#: filled by :func:`onnxq.metrics.register_metric`
REGISTRY: dict[str, Callable[..., Metric]] = {}


def metric_names() -> list[str]:
    """Registered metric names, sorted."""
    return sorted(REGISTRY)


def registered_metric(name: str) -> Callable[..., Metric]:
    """The factory registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown metric '{name}'; valid: {', '.join(metric_names())} (or module:function)") from None


def parse_params(text: str, where: str) -> dict[str, Any]:
    """``"axis=1,split=4+80"`` → ``{"axis": 1, "split": (4, 80)}``.

    Raises:
        ConfigError: an item without ``=`` or a repeated key, naming ``where`` (the whole spec).
    """
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"metric '{where}': parameters are KEY=VALUE separated by commas, got '{item}'")
        if key in params:
            raise ConfigError(f"metric '{where}': parameter '{key}' given twice")
        params[key] = _value(value.strip())
    return params


def _value(text: str) -> Any:
    if "+" in text.strip("+-") and not _is_number(text):
        return tuple(_value(v) for v in text.split("+"))
    lowered = text.lower()
    if lowered in ("none", "true", "false"):
        return {"none": None, "true": True, "false": False}[lowered]
    return parse_number(text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_metric(factory: Callable[..., Metric], params: dict[str, Any], where: str) -> Metric:
    """Call ``factory`` with ``params`` checked against its fields (types coerced, unknown keys refused)."""
    if isinstance(factory, type) and dataclasses.is_dataclass(factory):
        fields = {f.name: f for f in dataclasses.fields(factory)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            valid = ", ".join(fields) or "(none)"
            raise ConfigError(f"metric '{where}': unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
        hints = typing.get_type_hints(factory)
        for key, value in params.items():
            hint = hints.get(key, Any)
            if typing.get_origin(hint) is tuple and not isinstance(value, tuple):
                value = (value,)
            params[key] = coerce_option(f"metric '{where}'", key, value, hint)
    try:
        return factory(**params)
    except ConfigError as e:
        raise ConfigError(f"metric '{where}': {e}") from None
    except TypeError as e:
        raise ConfigError(f"metric '{where}': {e}") from e
