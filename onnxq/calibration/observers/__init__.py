"""Range observers: streaming statistics that turn calibration activations into a :class:`TensorRange`.

Every observer has the same life cycle: ``update(array)`` per calibration batch, ``compute_range()``
at the end, ``merge(other)`` to combine observers that saw different shards of the data (parallel
calibration), ``reset()`` to start over. ``per_channel_axis=a`` keeps one range per index along axis
``a`` (reducing over all other axes) in addition to the per-tensor one.

Data hygiene, common to all observers:

* NaN/Inf elements are counted in ``TensorRange.nonfinite`` and excluded from every statistic; the
  collector decides whether that is an error.
* Finite elements with ``|x| >= EXTREME_ABS`` (1e30; e.g. the -3.4e38 of attention masks) are counted in
  ``TensorRange.extreme``. They stay in ``data_min``/``data_max`` and in the min-max observers' ranges,
  but are left out of histograms, where they would stretch every bin to uselessness.

Methods:

* ``minmax``: exact running min/max.
* ``moving-average``: exponential moving average of per-batch min/max.
* ``percentile``, ``entropy``, ``mse``: a search over an exact, mergeable histogram
  (:mod:`onnxq.calibration._histogram`) for a clipping range that ignores rare outliers.

Modules: ``_base`` (the :class:`Observer` contract and shared per-batch statistics), ``_minmax``
(the min-max family), ``_histogram_observers`` (percentile / entropy / MSE); this package holds the
registry (:data:`OBSERVERS`, :func:`make_observer`).
"""

from __future__ import annotations

import inspect
from typing import Any

from onnxq.calibration._histogram import entropy_threshold, mse_range, percentile_range
from onnxq.errors import ConfigError

from ._base import Observer
from ._histogram_observers import EntropyObserver, MSEObserver, PercentileObserver
from ._minmax import MinMaxObserver, MovingAverageMinMaxObserver

__all__ = [
    "OBSERVERS",
    "EntropyObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "Observer",
    "PercentileObserver",
    "entropy_threshold",
    "make_observer",
    "mse_range",
    "percentile_range",
]


#: Observer classes by method name.
OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving-average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def _option_names(cls: type[Observer]) -> list[str]:
    """Keyword options accepted by ``cls`` and its bases (``**options`` is forwarded up the MRO)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                names.append(p.name)
    return names


def make_observer(method: str, **options: Any) -> Observer:
    """Build the observer registered as ``method`` with keyword ``options``.

    Raises:
        ConfigError: unknown method (the message lists the valid ones), unknown option names, or
            invalid option values.
    """
    cls = OBSERVERS.get(method)
    if cls is None:
        raise ConfigError(f"unknown calibration method {method!r}; valid: {', '.join(OBSERVERS)}")
    valid = _option_names(cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for calibration method {method!r}; valid: {', '.join(valid)}"
        )
    return cls(**options)
