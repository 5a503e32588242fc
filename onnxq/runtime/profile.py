"""Where the time goes: onnxruntime's own per-node profile, grouped by what the nodes do.

:func:`profile_models` runs each model with onnxruntime's built-in profiler
(``SessionOptions.enable_profiling``; ``end_profiling()`` writes a JSON trace with one ``Node``
event per kernel call), 1 thread by default, warmed up, and with two models interleaved run by run
as :mod:`.bench` does. Each node's time is its median over the timed runs (warm-up runs are cut out
by the ``model_run`` windows of the trace; a node that runs several times within one run, in a loop
body, counts the sum). The total is the sum of the nodes' medians, so the categories add up to it;
``run_ms`` is the median wall time of a whole run as the profiler saw it (executor overhead included).

The nodes are those of the graph onnxruntime *executed*, after its fusions: ``DQ → Conv → Q`` is
one ``QLinearConv`` named ``<conv>_token_N``, NHWC layout brings ``NhwcMaxPool`` and Transposes.
Each is classified by the op type onnxruntime reports and the element type of its first input:

=================  ===================================================================================
category           nodes
=================  ===================================================================================
``int8_compute``   integer kernels (QLinear*, QGemm, MatMulInteger(ToFloat), ConvInteger,
                   DynamicQuantizeMatMul, QAttention, MatMulNBits, ...) and any other arithmetic op
                   whose first input is an 8/4-bit integer tensor (MaxPool / NhwcMaxPool on uint8)
``float_compute``  arithmetic on a floating-point first input (Conv, MatMul, Sigmoid, Softmax, ...)
``conversions``    QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, Cast, CastLike
``layout``         data movement without arithmetic, whatever the element type: Transpose, Reshape,
                   (Un)Squeeze, Flatten, Concat, Split, Slice, Gather*, Pad, Tile, Expand,
                   Depth/SpaceToDepth, Identity, NCHWc ReorderInput/ReorderOutput (Resize
                   interpolates: compute)
``rest``           everything else: shape arithmetic (Shape, Size, Range, ConstantOfShape, ...),
                   integer or boolean ops, ops without tensor inputs, and the own time of If / Loop /
                   Scan (their subgraphs' nodes are counted as themselves, not again in the parent)
=================  ===================================================================================

**Float islands** (int8 models): in the executed graph, a maximal group of nodes connected by float
tensors — float compute, conversions, and layout/rest nodes with a float output — that is entered
through a DequantizeLinear of an activation (produced by a node, not a weight) and left through a
QuantizeLinear whose output feeds a node: a ``DQ → float ops → Q`` detour between int8 kernels that
onnxruntime did not fuse. Its time is that of all its nodes, DQ and Q included; float head or tail
regions (model input to the first Q, last DQ to an output) are not islands. The goal is islands
below :data:`FLOAT_ISLAND_GOAL` of the int8 run.

**NHWC** (models with QLinearConv): onnxruntime's NHWC transformer rewrites QLinearConv into the
``com.microsoft`` kernel with ``channels_last=1`` (Transposes at the region's edges, NhwcMaxPool);
the report counts how many QLinearConv it converted and says so when it did not. The executed graph
comes from ``SessionOptions.optimized_model_filepath`` (weights to a side file); when it cannot be
read, islands and the NHWC check are omitted with a note.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from .. import ir
from ..errors import CalibrationDataError, CalibrationError, ConfigError, InvalidModelError
from . import _profile_graph as graph
from ._profile_graph import Island
from ._profile_trace import CATEGORIES, CATEGORY_LABELS, FLOAT_TYPES, NodeTime, categorize, node_times, share
from .session import model_bytes, session_options

__all__ = ["profile_models", "categorize", "ProfileReport", "ModelProfile", "NodeTime", "Island", "CATEGORIES", "CATEGORY_LABELS", "FLOAT_ISLAND_GOAL"]

log = logging.getLogger(__name__)

#: Float islands above this share of an int8 model's time get a note.
FLOAT_ISLAND_GOAL = 0.05
_LEVELS = ("disable", "basic", "extended", "all")


@dataclass
class ModelProfile:
    """The profile of one model (times in milliseconds, medians over the timed runs).

    Attributes:
        model: the model's label (its path, or ``model #i``).
        nodes: executed nodes, slowest first.
        run_ms: median wall time of a whole run as the profiler saw it (node times plus overhead).
        runs: timed runs found in the trace.
        islands: float islands (see the module docstring), slowest first; None for a model without
            int8 compute or when the executed graph could not be read.
        nhwc: ``{"qlinear_conv": n, "channels_last": k, "applied": bool}`` for a model with QLinearConv.
        notes: plain-language findings (NHWC not applied, islands above the goal, ...).
    """

    model: str
    nodes: list[NodeTime]
    run_ms: float
    runs: int
    islands: list[Island] | None = None
    nhwc: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        """Sum of the nodes' median times: what the categories add up to."""
        return float(sum(n.ms for n in self.nodes))

    def categories(self) -> dict[str, float]:
        """Milliseconds per category, every category present (0.0 when empty)."""
        out = dict.fromkeys(CATEGORIES, 0.0)
        for n in self.nodes:
            out[n.category] += n.ms
        return out

    def op_types(self) -> dict[str, tuple[str, int, float]]:
        """``op type → (category, nodes, ms)``, slowest first."""
        out: dict[str, tuple[str, int, float]] = {}
        for n in self.nodes:
            _, count, ms = out.get(n.op_type, (n.category, 0, 0.0))
            out[n.op_type] = (n.category, count + 1, ms + n.ms)
        return dict(sorted(out.items(), key=lambda kv: -kv[1][2]))

    @property
    def island_ms(self) -> float | None:
        """Time in float islands (None: not an int8 model, or the graph is unknown)."""
        return None if self.islands is None else float(sum(i.ms for i in self.islands))

    def as_dict(self, top: int = 15) -> dict[str, Any]:
        """The JSON form: totals, categories, op types, the ``top`` slowest nodes, islands, NHWC, notes."""
        total = self.total_ms
        islands = None
        if self.islands is not None:
            island_ms = self.island_ms or 0.0
            islands = {"ms": round(island_ms, 4), "share": share(island_ms, total), "count": len(self.islands), "goal_share": FLOAT_ISLAND_GOAL,
                       "islands": [{"nodes": list(i.nodes), "ms": round(i.ms, 4)} for i in self.islands[:top]]}  # fmt: skip
        return {
            "model": self.model,
            "total_ms": round(total, 4),
            "run_ms": round(self.run_ms, 4),
            "runs": self.runs,
            "categories": {c: {"ms": round(ms, 4), "share": share(ms, total)} for c, ms in self.categories().items()},
            "op_types": [{"op_type": op, "category": c, "nodes": k, "ms": round(ms, 4), "share": share(ms, total)}
                         for op, (c, k, ms) in self.op_types().items()],
            "top_nodes": [n.as_dict(total) for n in self.nodes[:top]],
            "float_islands": islands,
            "nhwc": self.nhwc,
            "notes": list(self.notes),
        }


@dataclass
class ProfileReport:
    """Profiles of one or two models measured together, and for two the per-category / per-op-type delta."""

    models: list[ModelProfile]
    threads: int
    runs: int
    warmup: int
    inputs: dict[str, list[int]]

    def category_delta(self) -> list[dict[str, Any]]:
        """Per category: ms of the first and second model and the difference (empty for one model)."""
        if len(self.models) != 2:
            return []
        a, b = (m.categories() for m in self.models)
        return [_delta_row("category", c, None, a[c], b[c]) for c in CATEGORIES]

    def op_type_delta(self) -> list[dict[str, Any]]:
        """Per op type of either model: ms in each (0 when absent) and the difference, largest first."""
        if len(self.models) != 2:
            return []
        a, b = (m.op_types() for m in self.models)
        rows = [_delta_row("op_type", op, (a.get(op) or b[op])[0], a.get(op, ("", 0, 0.0))[2], b.get(op, ("", 0, 0.0))[2]) for op in {**a, **b}]
        return sorted(rows, key=lambda r: (-max(r["ms"]), r["op_type"]))

    def as_dict(self, top: int = 15) -> dict[str, Any]:
        """What ``onnxq profile --json`` prints and ``--report`` writes."""
        out: dict[str, Any] = {"threads": self.threads, "runs": self.runs, "warmup": self.warmup, "inputs": self.inputs,
                               "models": [m.as_dict(top) for m in self.models]}  # fmt: skip
        if len(self.models) == 2:
            out["delta"] = {"models": [m.model for m in self.models], "categories": self.category_delta(), "op_types": self.op_type_delta()}
        return out


def _delta_row(key: str, name: str, category: str | None, a: float, b: float) -> dict[str, Any]:
    row: dict[str, Any] = {key: name}
    if category is not None:
        row["category"] = category
    return {**row, "ms": [round(a, 4), round(b, 4)], "delta_ms": round(b - a, 4)}


def profile_models(
    models: Sequence[Any], feeds: Mapping[str, np.ndarray], *, threads: int = 1, runs: int = 20, warmup: int = 5,
    labels: Sequence[str] | None = None, optimization: str = "all",
) -> ProfileReport:
    """Profile one or two models on the same inputs with onnxruntime's per-node profiler.

    Args:
        models: one or two models (path, :class:`onnxq.ir.Model`, ModelProto or bytes).
        feeds: one sample, input name → array (each model takes the inputs it declares).
        threads: intra-op threads (1: the per-node times do not depend on the machine's cores).
        runs: timed runs per model, interleaved between the models.
        warmup: untimed runs per model first (cut out of the trace).
        labels: names in the report (default: the paths, or ``model #i``).
        optimization: onnxruntime's graph optimization level (``all`` is what deployments use;
            ``extended`` has QDQ fusion but no NHWC layout transformer).

    Returns:
        A :class:`ProfileReport`.

    Raises:
        ConfigError: no model, more than two, or runs < 1 / warmup < 0.
        InvalidModelError: onnxruntime cannot load a model.
        CalibrationDataError: a model declares an input that ``feeds`` lacks.
        CalibrationError: onnxruntime fails to run a model on ``feeds``.
    """
    if not 1 <= len(models) <= 2 or runs < 1 or warmup < 0 or optimization not in _LEVELS:
        raise ConfigError(
            f"profile takes one or two models, runs >= 1, warmup >= 0 and an optimization level in {', '.join(_LEVELS)}; "
            f"got {len(models)} models, runs {runs}, warmup {warmup}, optimization '{optimization}'"
        )
    names = list(labels) if labels is not None else [_label(m, i) for i, m in enumerate(models)]
    sessions: list[ort.InferenceSession] = []
    with tempfile.TemporaryDirectory(prefix="onnxq-profile-") as tmp:
        folder = Path(tmp)
        try:
            for i, m in enumerate(models):
                sessions.append(_profiling_session(m, threads, optimization, folder / f"m{i}", names[i]))
            prepared = [_feeds_for(s, feeds, names[i]) for i, s in enumerate(sessions)]
            _run_interleaved(sessions, prepared, names, runs + warmup)
        except BaseException:
            for s in sessions:  # now, not when the session is collected and its folder is gone
                with contextlib.suppress(Exception):
                    s.end_profiling()
            raise
        profiles = [_model_profile(s, names[i], folder / f"m{i}", warmup, runs) for i, s in enumerate(sessions)]
    inputs = {k: list(np.shape(v)) for k, v in feeds.items() if any(k in p for p in prepared)}
    return ProfileReport(profiles, threads, runs, warmup, inputs)


def _label(model: Any, index: int) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    source = str(model.source or "") if isinstance(model, ir.Model) else ""
    return source if source and not source.startswith("<") else f"model #{index + 1}"  # "<ModelProto>": built in memory


def _profiling_session(model: Any, threads: int, optimization: str, folder: Path, where: str) -> ort.InferenceSession:
    """A CPU session that records a per-node trace and writes the graph it executes into ``folder``."""
    folder.mkdir()
    so = session_options(threads, optimization)
    so.enable_profiling = True
    so.profile_file_prefix = str(folder / "trace")
    so.optimized_model_filepath = str(folder / "executed.onnx")
    # The executed graph is read for its structure only: its weights go to a side file, so a model
    # past 2 GiB still serializes.
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "executed.data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    with contextlib.ExitStack() as stack:
        if isinstance(model, ir.Model) and not ir.serializes_cheaply(model):
            source: str | bytes = str(stack.enter_context(ir.session_file(model)))
        else:
            source = model if isinstance(model, str) else model_bytes(model)
        try:
            return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise InvalidModelError(f"{where}: onnxruntime cannot load the model: {' '.join(str(e).split())}") from e


def _feeds_for(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    declared = [i.name for i in session.get_inputs()]
    missing = [n for n in declared if n not in feeds]
    if missing:
        have = ", ".join(f"'{k}'" for k in feeds) or "none"
        raise CalibrationDataError(f"{where}: input '{missing[0]}' has no data; the inputs given are {have}")
    return {n: feeds[n] for n in declared}


def _run_interleaved(sessions: Sequence[ort.InferenceSession], feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str], total: int) -> None:
    """``total`` runs of each session, round-robin with the starting model rotating (see :mod:`.bench`)."""
    n = len(sessions)
    for r in range(total):
        for k in range(n):
            i = (r + k) % n
            try:
                sessions[i].run(None, feeds[i])
            except Exception as e:
                raise CalibrationError(f"{names[i]}: onnxruntime failed on the inputs: {' '.join(str(e).split())}") from e


def _model_profile(session: ort.InferenceSession, name: str, folder: Path, warmup: int, runs: int) -> ModelProfile:
    trace_path = session.end_profiling()
    with open(trace_path, encoding="utf-8") as f:
        trace = json.load(f)
    nodes, run_ms, kept = node_times(trace, warmup)
    profile = ModelProfile(name, nodes, run_ms, kept)
    if kept < runs:  # onnxruntime's profiler stops recording past its event limit
        profile.notes.append(f"the trace holds {kept} of {runs} timed runs (onnxruntime's profiler stopped recording); medians are over those")
    executed = _executed_graph(folder / "executed.onnx")
    if executed is None:
        profile.notes.append("the graph onnxruntime executed could not be read: no float-island or NHWC analysis")
        return profile
    categories = profile.categories()
    if categories["int8_compute"] > 0:
        profile.islands = graph.float_islands(executed, {n.name: n for n in nodes}, FLOAT_TYPES)
    profile.nhwc = graph.nhwc_check(executed)
    profile.notes += _notes(profile)
    return profile


def _executed_graph(path: Path) -> onnx.GraphProto | None:
    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # a missing or unreadable file costs the analysis, not the profile
        log.info("cannot read onnxruntime's optimized model %s: %s", path, e)
        return None


def _notes(profile: ModelProfile) -> list[str]:
    notes = []
    nhwc = profile.nhwc
    if nhwc is not None and not nhwc["applied"]:
        left = nhwc["qlinear_conv"] - nhwc["channels_last"]
        notes.append(f"onnxruntime's NHWC transformer did not convert {left} of {nhwc['qlinear_conv']} QLinearConv: they run NCHW")
    island_ms = profile.island_ms
    total = profile.total_ms
    if island_ms is not None and total > 0 and island_ms / total >= FLOAT_ISLAND_GOAL:
        worst = profile.islands[0] if profile.islands else None
        where = f"; the largest: {', '.join(worst.nodes[:4])}{' ...' if worst and len(worst.nodes) > 4 else ''}" if worst else ""
        notes.append(f"float islands take {island_ms / total:.1%} of the int8 run (goal < {FLOAT_ISLAND_GOAL:.0%}){where}")
    return notes
