"""Accuracy metrics as a registry: what ``onnxq eval`` reports and what the tuner's guard checks.

A metric compares a candidate's output with the reference (float) output over samples, streaming
(:class:`Accumulator`: ``update(ref, cand)`` per sample, ``result()``). Registered metrics, by family:

- whole tensor (:mod:`._tensor`): ``cosine``, ``sqnr``, ``max_abs``, ``mean_abs``;
- worst slice (:mod:`._slices`): ``worst_slice_sqnr``, ``worst_slice_cosine`` — per slice along an
  axis, the worst reported, so a small-range part of an output cannot hide behind a large one;
- decisions (:mod:`._decisions`): ``top1``, ``sequence_agreement``, ``topk``, ``threshold``;
- user functions (:mod:`._user`): ``fn(ref, cand) -> float`` as a callable, a registered name or a
  ``module:function`` spec.

Specs name a metric with parameters (``worst_slice_sqnr:axis=1,split=4+80``, ``topk:k=5``); guard
specs add a threshold and an output (``sequence_agreement>=0.95@log_probs``). :mod:`.guard` picks the
default guard of each output from its shape and producers.

This package is part of the framework: it never imports the pass library or the application layer.
"""

from __future__ import annotations

from . import _decisions, _slices, _tensor  # noqa: F401  (imported to register the metrics)
from ._base import Accumulator, Direction, Metric, metric_names, parse_params, registered_metric
from ._decisions import SequenceAgreement, ThresholdAgreement, Top1, TopK
from ._guardset import GuardReading, GuardSet
from ._registry import make_metric, register_metric
from ._slices import WorstSliceCosine, WorstSliceSQNR
from ._tensor import SQNR, Cosine, MaxAbs, MeanAbs, cosine_of, sqnr_of
from ._user import CallableMetric, import_metric
from .guard import Guard, GuardSpec, check_guard, choose_guards, default_guard, parse_guard

__all__ = [
    "Accumulator",
    "CallableMetric",
    "Cosine",
    "Direction",
    "Guard",
    "GuardReading",
    "GuardSet",
    "GuardSpec",
    "MaxAbs",
    "MeanAbs",
    "Metric",
    "SQNR",
    "SequenceAgreement",
    "ThresholdAgreement",
    "Top1",
    "TopK",
    "WorstSliceCosine",
    "WorstSliceSQNR",
    "check_guard",
    "choose_guards",
    "cosine_of",
    "default_guard",
    "import_metric",
    "make_metric",
    "metric_names",
    "parse_guard",
    "parse_params",
    "register_metric",
    "registered_metric",
    "sqnr_of",
]
