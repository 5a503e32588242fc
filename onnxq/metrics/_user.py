"""User metrics: a Python function ``fn(ref, cand) -> float`` called once per sample.

The function gets one sample's reference (float model) and candidate outputs as numpy arrays and
returns a number; the metric's value is the mean over samples (a running sum: nothing else is
kept). ``direction`` says whether higher (default) or lower is better; as a guard the comparison
written in the spec sets it (``mymod:f1>=0.9``, ``mymod:err<=0.1``).

Given as ``module:function`` (``--metric`` on the CLI), the module is imported on first use; any
failure — no such module, an error while importing it, no such function, not callable — is a
:class:`~onnxq.errors.ConfigError` naming the spec. So is a call that raises or returns something
that is not a finite number, with the exception's type and message.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ._base import Direction, RatioMetric, parse_params

__all__ = ["CallableMetric", "import_metric"]


@dataclass(frozen=True)
class CallableMetric(RatioMetric):
    """A metric from ``fn(ref, cand) -> float``: the mean of ``fn`` over samples.

    Attributes:
        fn: the function.
        label: how specs and reports name it (default ``module:qualname`` of ``fn``).
        direction: ``"higher"`` or ``"lower"`` is better.
    """

    unit: ClassVar[float | None] = None
    #: (a default only because ``direction`` keeps the base class's place among the fields)
    fn: Callable[[np.ndarray, np.ndarray], Any] | None = field(default=None, compare=False)
    label: str = ""
    direction: Direction = "higher"  # type: ignore[misc]  # a parameter here, a class attribute elsewhere

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"metric '{self.label}': {self.fn!r} is not callable")
        if self.direction not in ("higher", "lower"):
            raise ConfigError(f"metric '{self.label}': direction must be 'higher' or 'lower', got {self.direction!r}")
        if not self.label:
            module = getattr(self.fn, "__module__", None) or "?"
            object.__setattr__(self, "label", f"{module}:{getattr(self.fn, '__qualname__', type(self.fn).__name__)}")

    @property
    def spec(self) -> str:
        return self.label if self.direction == "higher" else f"{self.label}:direction=lower"

    def counts(self, ref: np.ndarray, cand: np.ndarray) -> tuple[float, int]:
        """(``fn(ref, cand)``, 1), the call checked to return a finite number."""
        name, fn = self.label, self.fn
        assert fn is not None  # checked in __post_init__
        try:
            value = fn(ref, cand)
        except Exception as e:
            message = " ".join(str(e).split()) or "(no message)"
            raise ConfigError(f"metric '{name}' raised {type(e).__name__}: {message}") from e
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"metric '{name}' must return a number, returned {type(value).__name__} {value!r:.60}") from None
        if not math.isfinite(number):
            raise ConfigError(f"metric '{name}' returned {number}, not a finite number")
        return number, 1


def import_metric(spec: str) -> CallableMetric:
    """``module:function[:key=value,...]`` → a :class:`CallableMetric` (parameters: ``direction``).

    Raises:
        ConfigError: a malformed spec, a module that cannot be imported, a missing or non-callable
            function — naming the spec.
    """
    module_name, _, rest = spec.partition(":")
    function, _, params = rest.partition(":")
    if not module_name or not all(p.isidentifier() for p in module_name.split(".")) or not function.isidentifier():
        raise ConfigError(f"metric '{spec}': expected a registered metric name or module:function")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # whatever the user's module does on import is the user's to fix
        message = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"metric '{spec}': cannot import module '{module_name}': {type(e).__name__}: {message}") from e
    fn = getattr(module, function, None)
    if fn is None:
        raise ConfigError(f"metric '{spec}': module '{module_name}' has no attribute '{function}'")
    if not callable(fn):
        raise ConfigError(f"metric '{spec}': '{module_name}:{function}' is a {type(fn).__name__}, not a function")

    kwargs = parse_params(params, spec)
    unknown = sorted(set(kwargs) - {"direction"})
    if unknown:
        raise ConfigError(f"metric '{spec}': unknown parameter(s) {', '.join(unknown)}; valid: direction")
    return CallableMetric(fn=fn, label=f"{module_name}:{function}", **kwargs)
