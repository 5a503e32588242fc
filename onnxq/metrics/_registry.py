"""Registering metrics and making them from specs (the user-function wrapper included).

``register_metric`` takes a :class:`~onnxq.metrics.Metric` subclass or a plain
``fn(ref, cand) -> float``; ``make_metric`` turns a spec string, a metric or a function into a
metric. They live apart from :mod:`._base` because both need :mod:`._user`, which builds on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ._base import REGISTRY, Direction, Metric, build_metric, parse_params, registered_metric
from ._user import CallableMetric, import_metric

__all__ = ["register_metric", "make_metric"]


def register_metric(name: str, *, direction: Direction = "higher") -> Callable[[Any], Any]:
    """Register a :class:`Metric` subclass — or a plain ``fn(ref, cand) -> float`` — under ``name``.

    A function becomes a metric whose value is the mean of ``fn`` over samples (see
    :class:`~onnxq.metrics.CallableMetric`); ``direction`` says which way is better (a Metric
    subclass says it itself).

    Raises:
        ConfigError: ``name`` is already registered or is not a plain identifier.
    """
    if not name.isidentifier():
        raise ConfigError(f"metric name '{name}' must be an identifier (letters, digits, underscores)")

    def deco(obj: Any) -> Any:
        if name in REGISTRY:
            raise ConfigError(f"metric '{name}' is already registered")
        if isinstance(obj, type) and issubclass(obj, Metric):
            obj.name = name
            REGISTRY[name] = obj
        elif callable(obj):

            def factory(**params: Any) -> Metric:
                return CallableMetric(fn=obj, label=name, **({"direction": direction} | params))

            REGISTRY[name] = factory
        else:
            raise ConfigError(f"metric '{name}': register a Metric subclass or a function, not {type(obj).__name__}")
        return obj

    return deco


def make_metric(spec: str | Metric | Callable[..., Any]) -> Metric:
    """A metric from a spec string, a :class:`Metric` (returned as is) or a ``fn(ref, cand) -> float``.

    Spec strings: ``name`` or ``name:key=value,...`` for a registered metric; ``module:function`` or
    ``module:function:key=value`` for a user function (imported on first use).

    Raises:
        ConfigError: unknown metric or parameter, a bad value, a module or function that cannot be
            imported — the message names the spec.
    """
    if isinstance(spec, Metric):
        return spec
    if not isinstance(spec, str):
        if callable(spec):
            return CallableMetric(fn=spec)
        raise ConfigError(f"a metric is a spec string, a Metric or a function, not {type(spec).__name__}")
    text = spec.strip()
    name, _, rest = text.partition(":")
    if name in REGISTRY or ":" not in text:
        return build_metric(registered_metric(name), parse_params(rest, text), text)
    return import_metric(text)
