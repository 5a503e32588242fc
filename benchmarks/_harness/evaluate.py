"""The one evaluation loop: every contender against fp32 on the same held-out feeds.

Feeds are streamed: for each feed fp32 runs once and every contender after it, and each contender's
accumulator (see ``metrics``) gets its outputs next to fp32's. A contender onnxruntime cannot load,
or that fails on a feed, is a result (an error string), not a crash; fp32 failing is a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import onnxq_api
from .metrics import Metric
from .report import one_line

__all__ = ["evaluate", "open_session"]


def open_session(model: Any, threads: int, where: str) -> tuple[Any, str | None]:
    """``(session, None)``, or ``(None, why)`` when onnxruntime refuses the model."""
    try:
        return onnxq_api.make_session(model, threads=threads, where=where), None
    except Exception as e:  # noqa: BLE001 - a file onnxruntime refuses is a result
        return None, f"onnxruntime cannot load: {one_line(e, 140)}"


def evaluate(
    sessions: dict[str, Any],
    reference: str,
    feeds: Sequence[Mapping[str, Any]],
    metric: Metric,
    *,
    labels: Sequence[Any] | None = None,
    outputs: list[str] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Score every session against ``sessions[reference]`` on ``feeds``.

    Args:
        sessions: name -> onnxruntime session; a contender that fails is removed from it.
        reference: the fp32 contender's name (its outputs are the reference; its score is against itself).
        metric: a fresh accumulator per contender (see ``metrics``).
        labels: one per feed, passed to the accumulators.
        outputs: the output names to compare (None: all, in order).

    Returns:
        ``(scores, errors)``: the metric result per contender that ran every feed, and why the others failed.
    """
    ref = sessions[reference]
    accs = {name: metric() for name in sessions}
    errors: dict[str, str] = {}
    for i, feed in enumerate(feeds):
        ref_out = onnxq_api.run_session(ref, feed, outputs)
        label = labels[i] if labels is not None else None
        for name in list(sessions):
            try:
                out = ref_out if name == reference else onnxq_api.run_session(sessions[name], feed, outputs)
                accs[name].update(out, ref_out, label)
            except Exception as e:  # noqa: BLE001 - a model that fails to run is a result
                errors[name] = f"onnxruntime fails on sample {i}: {one_line(e, 120)}"
                del sessions[name], accs[name]
    return {name: acc.result() for name, acc in accs.items()}, errors
