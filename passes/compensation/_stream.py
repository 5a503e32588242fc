"""Streaming the float model's intermediate tensors over calibration samples, one sample at a time.

The compensation passes need what a layer really sees: its float input (AdaRound, SmoothQuant's
alpha search) or a statistic of it (bias correction). :func:`stream_tensors` runs onnxruntime on an
in-memory copy with the tensors exposed as outputs (:func:`onnxq.calibration.expose.expose_tensors`,
which keeps an explicit output → tensor map) and yields one ``{tensor: value}`` per sample, so memory
holds one sample's tensors at a time whatever the number of samples. Graph inputs come straight
from the feed. Only tensors of the main graph are asked for (callers skip layers in subgraphs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import numpy as np

from onnxq.calibration.expose import expose_tensors
from onnxq.errors import CalibrationError
from onnxq.ir import Model
from onnxq.runtime.session import make_session, run_session

__all__ = ["stream_tensors", "main_graph_nodes"]


def main_graph_nodes(model: Model) -> set[int]:
    """``id`` of every node of the main graph (not inside an If/Loop/Scan body)."""
    return {id(n) for n in model.graph.nodes}


def stream_tensors(
    model: Model, names: Sequence[str], data: Iterable[Mapping[str, np.ndarray]], *, max_samples: int, threads: int = 1, where: str = ""
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{name: value}`` for each of the first ``max_samples`` samples of ``data``.

    Raises:
        CalibrationError: a tensor cannot be exposed, or a value is not finite (naming both).
    """
    inputs = {t.name for t in model.graph.inputs}
    wanted = [n for n in dict.fromkeys(names) if n not in inputs]
    exposed = expose_tensors(model, wanted)
    if exposed.unreachable:
        name, why = next(iter(exposed.unreachable.items()))
        raise CalibrationError(f"{where or model.source}: cannot read tensor '{name}' on onnxruntime: {why}")
    session = make_session(exposed.model, threads=threads, where=f"{model.source} ({where or 'exposed tensors'})")
    outputs = list(exposed.output_to_tensor)
    for index, sample in enumerate(islice(data, max_samples)):
        feed: dict[str, Any] = {k: np.asarray(v) for k, v in sample.items()}
        values = dict(zip((exposed.output_to_tensor[o] for o in outputs), run_session(session, feed, outputs)))
        for name in names:
            if name in inputs:
                values[name] = np.asarray(feed[name])
            if not np.isfinite(values[name]).all():
                raise CalibrationError(f"{where or model.source}: tensor '{name}' is not finite on calibration sample {index}")
        yield values
