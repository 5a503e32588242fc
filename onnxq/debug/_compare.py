"""``compare_layers``: run FLOAT, QUANT and QUANT's layers on float inputs side by side, streamed.

For each group of compared tensors (:mod:`._match`) three in-memory models run every sample: FLOAT
with the float twins exposed as outputs (and those of the group's frontiers), QUANT with the integer
tensors exposed, and the group's cut model (:mod:`._local`) fed ``quantize(float twin)``. Every
output goes into its tensor's :class:`~._stats.TensorAccumulator` before the next sample runs, so
memory holds one sample's exposed tensors of one group plus fixed-size statistics — never all
activations of all samples. Groups are planned like calibration's (:mod:`onnxq.calibration`): the
exposed bytes of a group (twice its float twins: the twins themselves, QUANT's and the cut model's
integer copies, the dequantized temporaries) stay within ``max_memory_mb``, and the data is read
once per group.

Exposing QUANT's *integer* tensors (not the dequantized ones) keeps onnxruntime's QDQ fusions
(``DQ → Conv → Q`` into QLinearConv) intact, so the values compared are those a deployment
computes; the dequantization ``(q - z) · s`` happens in numpy. All three run with onnxruntime's
optimizations (unlike calibration, which turns them off so ranges cannot depend on the grouping):
speed matters more here than the last digits, which can differ between groupings because exposing
other FLOAT tensors changes what onnxruntime fuses (float rounding, ~1e-4 dB).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import ir
from ..calibration._groups import plan_tensor_groups, tensor_nbytes
from ..calibration.collector import replayable
from ..calibration.expose import expose_tensors
from ..errors import CalibrationDataError, CalibrationError, InvalidModelError, PreconditionError
from ..ir import Model
from ..progress import track
from ..runtime.session import make_session
from ._local import CutModel, Segment, cut_model, layer_of, segments
from ._match import MatchResult, TensorMatch, match_tensors
from ._report import LayerReport, TensorStats, mark_jumps
from ._stats import TensorAccumulator

__all__ = ["compare_layers", "NothingQuantizedError", "DEFAULT_JUMP_DB"]

log = logging.getLogger(__name__)

DEFAULT_JUMP_DB = 10.0
DEFAULT_MAX_MEMORY_MB = 1024.0


class NothingQuantizedError(PreconditionError):
    """QUANT has no quantized activation to compare (a float model, or weights-only quantization)."""


def _load(model: Any, role: str) -> Model:
    """A Model as it is (never modified), anything else loaded and checked."""
    if isinstance(model, Model):
        return model
    try:
        return ir.load(model)
    except OSError as e:
        raise InvalidModelError(f"{role} '{model}': cannot read the model: {e.strerror or e}") from e


def _signature(tensors: list[Any]) -> list[str]:
    """``name[1x3x?x?]`` of each tensor, for messages."""
    out = []
    for t in tensors:
        shape = "?" if t.shape is None else "x".join(str(d) if isinstance(d, int) else "?" for d in t.shape)
        out.append(f"{t.name}[{shape}]")
    return out


def check_correspondence(float_model: Model, quant_model: Model) -> None:
    """Refuse two models that cannot be compared: other input or output names, or other fixed sizes.

    Raises:
        InvalidModelError: one line naming both models and what differs.
    """
    where = f"FLOAT '{float_model.source}' and QUANT '{quant_model.source}' do not correspond"
    for kind in ("inputs", "outputs"):
        fa, qa = getattr(float_model.graph, kind), getattr(quant_model.graph, kind)
        if [t.name for t in fa] != [t.name for t in qa]:
            raise InvalidModelError(f"{where}: {kind} differ (FLOAT: {', '.join(t.name for t in fa)}; QUANT: {', '.join(t.name for t in qa)})")
        for a, b in zip(fa, qa):
            if a.shape is not None and b.shape is not None and not _compatible(a.shape, b.shape):
                found = f"FLOAT: {_signature([a])[0]}; QUANT: {_signature([b])[0]}"
                raise InvalidModelError(f"{where}: {kind[:-1]} shapes differ ({found})")


def _compatible(a: Any, b: Any) -> bool:
    if len(a) != len(b):
        return False
    return all(not (isinstance(x, int) and isinstance(y, int)) or x == y or x < 0 or y < 0 for x, y in zip(a, b))


def _open_samples(data: Any, model: Model, samples: int | None, dims: Mapping[str, int] | None, image_preprocess: str | None) -> Any:
    if isinstance(data, (str, Path)):
        from ..data import open_source

        return open_source(str(data), ir.to_proto(model, weights=False), dims=dict(dims or {}), samples=samples, image_preprocess=image_preprocess)
    return data


@dataclass
class _Plan:
    """What every group shares: the models, the matches, their segments and accumulators."""

    float_model: Model
    quant_model: Model
    matches: list[TensorMatch]
    segs: dict[str, Segment]
    twin: dict[str, str]
    by_quant: dict[str, TensorMatch]
    accs: dict[str, TensorAccumulator]
    threads: int
    progress: bool | None
    total: int | None
    max_samples: int | None


def compare_layers(
    float_model: Any,
    quant_model: Any,
    data: Any,
    *,
    samples: int | None = None,
    dims: Mapping[str, int] | None = None,
    image_preprocess: str | None = None,
    max_memory_mb: float | None = DEFAULT_MAX_MEMORY_MB,
    jump_db: float = DEFAULT_JUMP_DB,
    threads: int = 0,
    progress: bool | None = None,
) -> LayerReport:
    """Compare every quantized activation of ``quant_model`` with its float twin in ``float_model``.

    Args:
        float_model / quant_model: paths, ModelProtos, bytes or :class:`~onnxq.ir.Model` (not modified).
        data: a ``--data`` spec (folder, file, ``synthetic:N``) opened for FLOAT's inputs, or samples
            (a data source, a list of feeds, a CalibrationDataReader).
        samples: use at most this many samples. dims / image_preprocess: how a spec is opened.
        max_memory_mb: budget for one sample's exposed tensors (None: one group).
        jump_db: a tensor whose SQNR is this far below its inputs' is a jump (see :mod:`._report`).
        threads: onnxruntime intra-op threads (0: onnxruntime's default).
        progress: progress bars (default: on a terminal).

    Returns:
        The :class:`LayerReport`.

    Raises:
        InvalidModelError: a model cannot be read, or the two do not correspond (inputs, outputs).
        NothingQuantizedError: QUANT has no quantized activation.
        CalibrationDataError: the data does not fit the models (the errors ``convert`` gives).
        CalibrationError: onnxruntime fails on a sample.
    """
    start = time.perf_counter()
    fm, qm = _load(float_model, "FLOAT"), _load(quant_model, "QUANT")
    check_correspondence(fm, qm)
    match = match_tensors(fm, qm)
    if match.quantized == 0:
        raise NothingQuantizedError(
            f"QUANT '{qm.source}' has no quantized activations (no QuantizeLinear of an activation, no QLinear op with constant "
            "scales): nothing to compare layer by layer; `onnxq eval` compares the outputs"
        )
    source = _open_samples(data, fm, samples, dims, image_preprocess)
    replay = replayable(source, samples)
    first = next(iter(replay), None)
    if first is None:
        raise CalibrationDataError(f"{fm.source}: no samples in the data")
    plan = _make_plan(fm, qm, match, threads, progress, _count(source, samples), samples)
    groups = _groups(plan, first, max_memory_mb)
    count = 0
    for gi, group in enumerate(groups):
        label = "comparing layers" + (f" group {gi + 1}/{len(groups)}" if len(groups) > 1 else "")
        count = _run_group(plan, group, replay, label)
    report = _report(plan, match, count, jump_db)
    report.groups = len(groups)
    report.seconds = time.perf_counter() - start
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _count(source: Any, limit: int | None) -> int | None:
    try:
        n = len(source)
    except Exception:  # no len, or a reader without one
        return limit
    return min(n, limit) if limit is not None else n


def _make_plan(fm: Model, qm: Model, match: MatchResult, threads: int, progress: bool | None, total: int | None, max_samples: int | None) -> _Plan:
    cuts = {m.quant_tensor for m in match.matches if m.qparams is not None}
    segs = segments(qm, [m.quant_tensor for m in match.matches], cuts)
    twin = {m.quant_tensor: m.name for m in match.matches}
    accs = {m.quant_tensor: TensorAccumulator(m.qparams, m.clip) for m in match.matches}
    by_quant = {m.quant_tensor: m for m in match.matches}
    return _Plan(fm, qm, match.matches, segs, twin, by_quant, accs, threads, progress, total, max_samples)


def _groups(plan: _Plan, first: Mapping[str, np.ndarray], max_memory_mb: float | None) -> list[list[str]]:
    """Consecutive groups of compared tensors whose exposed bytes fit the budget (module docstring)."""
    sizes = tensor_nbytes(plan.float_model, first)
    cost = {}
    for m in plan.matches:
        own = sizes.get(m.name) or 0
        frontier = sum(sizes.get(plan.twin[c]) or 0 for c in plan.segs[m.quant_tensor].cuts) // 4
        cost[m.quant_tensor] = 2 * own + frontier or None
    return plan_tensor_groups([m.quant_tensor for m in plan.matches], cost, max_memory_mb)


def _session(model: Model, plan: _Plan, where: str) -> Any:
    return make_session(model, threads=plan.threads, optimization="all", where=where, enable_arena=False)


def _quant_exposed(plan: _Plan, group: list[str]) -> Model:
    """A copy of QUANT computing just ``group``'s tensors (integer ones as they are: a quarter of the
    bytes of their float values, dequantized slice by slice by the accumulators)."""
    work = ir.clone(plan.quant_model)
    graph = work.graph
    tensors = {t.name: t for n in graph.nodes for t in n.outputs if t.name}
    for q in group:
        qp = plan.by_quant[q].qparams
        if tensors[q].dtype is None:
            tensors[q].dtype = qp.zero_point.dtype if qp is not None else np.float32
    graph.outputs = [tensors[q] for q in group]
    ir.remove_dead_nodes(graph)
    return work


@dataclass
class _Group:
    """The three sessions of one group and how their outputs map to the compared tensors."""

    tensors: list[str]
    float_session: Any
    float_outputs: dict[str, str]  # FLOAT output → float twin
    quant_session: Any
    cut_session: Any
    cut: CutModel


def _prepare_group(plan: _Plan, group: list[str]) -> _Group:
    inputs = {t.name for t in plan.float_model.graph.inputs}
    frontier = sorted({c for q in group for c in plan.segs[q].cuts})
    wanted = list(dict.fromkeys(plan.twin[q] for q in group + frontier if plan.twin[q] not in inputs))
    exposed = expose_tensors(plan.float_model, wanted)
    qparams = {q: qp for q in group + frontier if (qp := plan.by_quant[q].qparams) is not None}
    cut = cut_model(plan.quant_model, group, plan.segs, qparams)
    return _Group(
        group,
        _session(exposed.model, plan, f"FLOAT '{plan.float_model.source}'"),
        exposed.output_to_tensor,
        _session(_quant_exposed(plan, group), plan, f"QUANT '{plan.quant_model.source}'"),
        _session(cut.model, plan, f"QUANT '{plan.quant_model.source}' (layers on float inputs)"),
        cut,
    )


def _run_group(plan: _Plan, group: list[str], replay: Iterable[Mapping[str, np.ndarray]], label: str) -> int:
    """Run every sample through the three models of one group into the accumulators; returns the sample count."""
    g = _prepare_group(plan, group)
    inputs = {t.name for t in plan.float_model.graph.inputs}
    f_out = list(g.float_outputs)
    count = 0
    # Tensors are independent and numpy releases the GIL in its loops: the statistics of one sample
    # use the cores onnxruntime uses while it runs (each accumulator still sees samples in order).
    with ThreadPoolExecutor(max_workers=plan.threads or os.cpu_count() or 1) as pool:
        for index, sample in enumerate(track(replay, label, total=plan.total, enabled=plan.progress)):
            if plan.max_samples is not None and index >= plan.max_samples:
                break
            floats = dict(zip((g.float_outputs[o] for o in f_out), _run(g.float_session, f_out, sample, index, "FLOAT")))
            floats.update({k: np.asarray(v) for k, v in sample.items() if k in inputs})
            quants = _run(g.quant_session, group, sample, index, "QUANT")
            feeds = {name: floats[plan.twin[c]] for name, c in g.cut.feeds.items()}
            feeds.update({k: sample[k] for k in g.cut.inputs})
            locals_ = _run(g.cut_session, [g.cut.outputs[q] for q in group], feeds, index, "QUANT (layers on float inputs)")
            args = [(plan.accs[q], plan.by_quant[q], floats[plan.twin[q]], quants[i], locals_[i], index) for i, q in enumerate(group)]
            list(pool.map(lambda a: _update(*a), args))
            del floats, quants, feeds, locals_, args  # one sample's tensors in memory at a time
            count += 1
    return count


def _update(acc: TensorAccumulator, m: TensorMatch, ref: np.ndarray, cand: np.ndarray, local: np.ndarray, index: int) -> None:
    try:
        acc.update(ref, cand, local)
    except ValueError as e:
        raise CalibrationError(f"sample #{index}: tensor '{m.name}' (QUANT '{m.quant_tensor}'): {e}") from e


def _run(session: Any, outputs: list[str], feeds: Mapping[str, np.ndarray], index: int, which: str) -> list[np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    try:
        return session.run(outputs, {k: v for k, v in feeds.items() if k in names})
    except Exception as e:
        msg = " ".join(str(e).split())
        where = getattr(feeds, "where", None) or f"sample #{index}"
        raise CalibrationError(f"{which}: onnxruntime failed on {where}: {msg}") from e


def _report(plan: _Plan, match: MatchResult, count: int, jump_db: float) -> LayerReport:
    stats = []
    for m in plan.matches:
        acc = plan.accs[m.quant_tensor]
        seg = plan.segs[m.quant_tensor]
        layer = layer_of(plan.quant_model, seg)
        r = acc.results()
        nodes = plan.quant_model.graph.nodes
        observed = (r["observed_min"], r["observed_max"]) if r["observed_min"] is not None else None
        stats.append(
            TensorStats(
                tensor=m.name, quant_tensor=m.quant_tensor, layer=(layer.name or layer.op) if layer is not None else m.node,
                op=layer.op if layer is not None else m.op, matched_by=m.how, order=m.order,
                sqnr=r["sqnr"], cosine=r["cosine"], max_abs=r["max_abs"], mean_abs=r["mean_abs"],
                local_sqnr=r["local_sqnr"], local_max_abs=r["local_max_abs"],
                quantization=m.qparams.as_dict() if m.qparams is not None else None,
                observed=observed, saturation=r["saturation"], inputs=list(seg.cuts),  # type: ignore[arg-type]
                segment_ops=[nodes[i].op for i in seg.nodes],
                histogram=(acc.edges, acc.counts) if acc.edges is not None and acc.counts is not None else None,
                error_map=acc.error_map, map_caption=acc.map_caption,
            )
        )
    mark_jumps(stats, jump_db)
    return LayerReport(
        float_model=plan.float_model.source, quant_model=plan.quant_model.source, tensors=stats, unmatched=match.unmatched,
        quantized=match.quantized, samples=count, jump_db=jump_db,
    )
