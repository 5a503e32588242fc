"""The property every fuzz test checks, and the error measures its bounds are stated in.

For a generated model and a pipeline, exactly one of:

- the pipeline leaves its input model untouched and returns a model that passes
  ``onnx.checker.check_model(full_check=True)``, loads and runs in onnxruntime, keeps the graph's
  output names and shapes, and whose outputs on the same feeds are within the pipeline's bound of
  the fp32 model's; or
- it raises an :class:`onnxq.OnnxqError` subclass whose message is one non-empty line, and which
  is a deliberate refusal: not an :class:`onnxq.InternalError`, nor a ``PassError`` wrapping a
  crash inside a pass or a pass's output that fails the checker (:func:`bug_behind`).

Anything else (another exception, an invalid or non-running model, numbers out of bounds) fails.
One exception to the numbers: a feed on which an ``If(ReduceSum(x) > 0)`` takes the other branch,
where the sum is near enough to 0 for the bound to allow it (:func:`flipped_branches`), is left
out of the comparison and counted.
Outcomes are counted in :data:`STATS` and printed at the end of the run (``conftest.py``).
``ONNXQ_FUZZ_LOG=file`` appends every checked output's error to ``file`` (to calibrate bounds);
``ONNXQ_FUZZ_DUMP=dir`` writes each result model and its example to ``dir/last.*`` before running
it (a native crash of onnxruntime kills the process before hypothesis can report anything).
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxq import InternalError, OnnxqError, PassError

from ._graphs import FuzzModel, ModelSpec, reference_outputs, run_model

__all__ = [
    "Bound", "STATS", "REFUSALS", "bug_behind", "check_pipeline", "is_quantized", "rel_error", "cosine", "Pipeline", "rtn_weights",
    "graphs_of", "weights_of", "flipped_branches", "computed_conditions",
]  # fmt: skip

#: test name → outcome ("ok" / "refused") → count; printed by ``conftest.pytest_terminal_summary``.
STATS: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
#: refusal messages seen, per test, for the summary (``-v``).
REFUSALS: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)

Pipeline = Callable[[FuzzModel, list[dict[str, np.ndarray]]], onnx.ModelProto]

#: Below this RMS an output counts as zero: errors are measured against this floor instead.
ZERO_RMS = 1e-3


def rel_error(ref: np.ndarray, got: np.ndarray) -> float:
    """``‖got − ref‖₂ / max(‖ref‖₂, ZERO_RMS·√n)``: relative L2 error, absolute near zero."""
    r = ref.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel()
    if r.size == 0:
        return 0.0
    return float(np.linalg.norm(g - r) / max(np.linalg.norm(r), ZERO_RMS * math.sqrt(r.size)))


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity (1.0 when both are zero)."""
    r = ref.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel()
    nr, ng = np.linalg.norm(r), np.linalg.norm(g)
    if nr == 0 and ng == 0:
        return 1.0
    return float(r @ g / max(nr * ng, 1e-300))


@dataclass(frozen=True)
class Bound:
    """Per-output error bound of a pipeline, over all feeds of an example.

    Attributes:
        max_rel: largest :func:`rel_error` allowed.
        allclose: instead, ``|got − ref| <= atol·max(1, max|ref|) + rtol·|ref|`` elementwise
            (exact rewrites: only float reassociation may differ).
        baseline_factor: with a baseline model (see :func:`check_pipeline`), the error may also
            reach this multiple of the baseline's error: ``max(max_rel, factor · baseline)``.
        finite: with ``max_rel=inf`` (validity only), whether the outputs must still be finite
            (False where fp16 overflows: inf, and inf − inf = nan, are then what any fp16 gives).
    """

    max_rel: float = 0.0
    allclose: tuple[float, float] | None = None
    baseline_factor: float = 0.0
    finite: bool = True

    def check(self, name: str, ref: np.ndarray, got: np.ndarray, context: str, baseline: np.ndarray | None = None) -> None:
        if self.allclose is not None:
            rtol, atol = self.allclose
            scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
            np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol * scale, err_msg=f"output '{name}'\n{context}")
            return
        if math.isinf(self.max_rel):
            assert not self.finite or np.all(np.isfinite(got)), f"output '{name}' is not finite\n{context}"
            return
        err = rel_error(ref, got)
        limit = self.max_rel
        if baseline is not None:
            limit = max(limit, self.baseline_factor * rel_error(ref, baseline))
        assert err <= limit, f"output '{name}': relative L2 error {err:.4g} > {limit:.4g} (cosine {cosine(ref, got):.4f})\n{context}"


def bug_behind(e: OnnxqError) -> str | None:
    """Why a typed error is onnxq's bug rather than a refusal, or None for a deliberate refusal.

    :class:`InternalError` says so itself. The pass manager turns two bugs into a plain
    ``PassError`` too: any unexpected exception inside a pass (``raise PassError(...) from e``, ``e``
    not an ``OnnxqError``) and a pass's output failing the checker (``from`` the checker's error);
    deliberate errors keep their own class (a ``PassError`` subclass), nested pipelines chain
    ``PassError`` to ``PassError``.
    """
    err: BaseException = e
    while True:
        if isinstance(err, InternalError):
            return "InternalError (a bug by definition)"
        cause = err.__cause__
        if type(err) is not PassError or cause is None:
            return None
        if not isinstance(cause, OnnxqError):
            return f"a pass crashed with {type(cause).__name__}"
        if not isinstance(cause, PassError):
            return "a pass produced a model that fails the checker"
        err = cause


#: Op types a quantized model holds (QLinear* ops too, by prefix).
QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulNBits"}
)


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether any graph of ``model`` holds a quantized op (a pipeline may leave every node float,
    each with its reason in the report: the summary counts those examples)."""
    ops = {n.op_type for g in graphs_of(model.graph) for n in g.node}
    return bool(ops & QUANTIZED_OPS) or any(op.startswith("QLinear") for op in ops)


def _stack(runs: list[list[np.ndarray]], index: int) -> np.ndarray:
    return np.concatenate([np.asarray(r[index], dtype=np.float64).reshape(-1) for r in runs]) if runs else np.zeros(0)


_NP_OF = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64}


def _feeds_for(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """``feeds`` cast to ``model``'s float input types (fp16 with ``keep_io_types=False``)."""
    types = {i.name: _NP_OF.get(i.type.tensor_type.elem_type) for i in model.graph.input}
    return [{k: v.astype(types[k]) if types.get(k) is not None and v.dtype.kind == "f" else v for k, v in f.items()} for f in feeds]


def check_pipeline(
    test: str,
    spec: ModelSpec,
    pipeline: Pipeline,
    bound: Bound,
    *,
    samples: int = 4,
    reference: Callable[[FuzzModel, onnx.ModelProto], onnx.ModelProto] | None = None,
    baseline: Callable[[FuzzModel], onnx.ModelProto] | None = None,
    io_dtypes_may_change: bool = False,
    quantizes: bool = False,
    options: dict[str, Any] | None = None,
) -> onnx.ModelProto | None:
    """Run the property (module docstring) for one example.

    Args:
        reference: the model the result is compared with, built from the fp32 model and the result
            (default: the fp32 model itself).
        baseline: a simple model of the same kind of loss (e.g. round-to-nearest weights), whose
            error scales the bound (``Bound.baseline_factor``).
        io_dtypes_may_change: float graph inputs / outputs may change type (``keep_io_types=False``).
        quantizes: a quantizing pipeline: results without any quantized op are counted as
            ``left float`` in the summary (the bound then holds trivially).
        options: the pipeline's options, named in failure messages.

    Returns:
        The pipeline's model, or None when it refused with a typed one-line error.
    """
    context = repr(spec) + (f"\noptions={options!r}" if options else "")
    fm = spec.build()
    feeds = fm.feeds(seed=spec.seed, count=samples)
    ref = reference_outputs(fm, feeds)
    source = fm.proto.SerializeToString()
    try:
        result = pipeline(fm, feeds)
    except OnnxqError as e:
        message = str(e)
        assert message.strip() and "\n" not in message, f"{type(e).__name__} message is not one line: {message!r}\n{context}"
        bug = bug_behind(e)
        assert bug is None, f"{bug}: {type(e).__name__}: {message}\n{context}"
        STATS[test]["refused"] += 1
        REFUSALS[test][f"{type(e).__name__}: {message[:160]}"] += 1
        return None
    assert fm.proto.SerializeToString() == source, f"the pipeline modified its input model\n{context}"
    onnx.checker.check_model(result, full_check=True)
    if reference is not None:
        ref = run_model(reference(fm, result), feeds)
    base = run_model(baseline(fm), feeds) if baseline is not None else None
    names = [o.name for o in fm.proto.graph.output]
    got_names = [o.name for o in result.graph.output]
    assert got_names == names, f"graph outputs changed: {got_names} != {names}\n{context}"
    if os.environ.get("ONNXQ_FUZZ_DUMP"):  # what a native crash of onnxruntime leaves to look at
        onnx.save(result, os.path.join(os.environ["ONNXQ_FUZZ_DUMP"], "last.onnx"))
        with open(os.path.join(os.environ["ONNXQ_FUZZ_DUMP"], "last.txt"), "w") as f:
            f.write(context + "\n")
    result_feeds = _feeds_for(result, feeds) if io_dtypes_may_change else feeds
    got = run_model(result, result_feeds)
    for i, name in enumerate(names):
        for r, g in zip(ref, got):
            assert r[i].shape == g[i].shape, f"output '{name}': shape {g[i].shape} != fp32 {r[i].shape}\n{context}"
            assert io_dtypes_may_change or r[i].dtype == g[i].dtype, f"output '{name}': dtype {g[i].dtype} != fp32 {r[i].dtype}\n{context}"
    if bound.allclose is None and math.isfinite(bound.max_rel):
        flipped = flipped_branches(fm.proto, result, feeds, result_feeds, bound.max_rel)
        if flipped:
            STATS[test]["feeds on a flipped near-zero If condition"] += len(flipped)
            kept = [f for f in range(len(feeds)) if f not in flipped]
            ref, got = [ref[f] for f in kept], [got[f] for f in kept]
            base = [base[f] for f in kept] if base is not None else None
    for i, name in enumerate(names):
        ref_i, got_i = _stack(ref, i), _stack(got, i)
        base_i = _stack(base, i) if base is not None else None
        if os.environ.get("ONNXQ_FUZZ_LOG"):
            with open(os.environ["ONNXQ_FUZZ_LOG"], "a") as log:
                b = rel_error(ref_i, base_i) if base_i is not None else -1
                log.write(f"{test}\t{rel_error(ref_i, got_i):.6g}\t{b:.6g}\t{context!r}\n")
        bound.check(name, ref_i, got_i, context, base_i)
    STATS[test]["ok"] += 1
    if quantizes and not is_quantized(result):
        STATS[test]["left float"] += 1
    return result


# -- If conditions near zero --------------------------------------------------------------------


def computed_conditions(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """``(condition, summed tensor)`` of the main graph's Ifs on ``ReduceSum(x) > 0``."""
    producers = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        greater = producers.get(node.input[0]) if node.op_type == "If" else None
        total = producers.get(greater.input[0]) if greater is not None and greater.op_type == "Greater" else None
        if total is not None and total.op_type == "ReduceSum":
            found.append((greater.output[0], total.input[0]))  # type: ignore[union-attr]
    return found


def _exposing(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    listed = {v.name for v in [*out.graph.input, *out.graph.output]}
    out.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in listed)
    return out


def flipped_branches(
    source: onnx.ModelProto, result: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], result_feeds: list[dict[str, np.ndarray]], max_rel: float
) -> set[int]:
    """Feeds on which an ``If(ReduceSum(x) > 0)`` of ``source`` takes the other branch in ``result``
    although the bound allows it: ``|Σx| < max_rel · √n · ‖x‖₂``.

    Why that margin: an error the bound allows, ``‖x̂ − x‖₂ ≤ max_rel · ‖x‖₂``, moves the sum by up
    to ``√n · ‖x̂ − x‖₂`` (Cauchy–Schwarz), so such a sum may change sign under any lossy
    conversion, and the two branches compute unrelated values (the dynamic-int8 hunt met
    ``Σx = 0.0036`` over ``x`` of norm 0.45 become -0.0042: relative error 9.6 on that feed). A flip
    on a sum further from 0 is not excused: the feed stays in the comparison and fails it.
    Conditions are found by the ``Greater`` output's name in both models (unchanged by every
    pipeline; a renamed one is not found and nothing is excused).
    """
    present = {o for n in result.graph.node for o in n.output}
    conds = [(c, x) for c, x in computed_conditions(source) if c in present]
    if not conds:
        return set()
    inputs = {v.name for v in source.graph.input}
    k = len(source.graph.output)
    exposed = [n for c, x in conds for n in (c, x) if n not in inputs]
    ref = run_model(_exposing(source, exposed), feeds)
    got = run_model(_exposing(result, [c for c, _ in conds]), result_feeds)
    flipped = set()
    for f, (r, g) in enumerate(zip(ref, got)):
        values = dict(zip(exposed, r[k:]))
        for j, (c, x) in enumerate(conds):
            if bool(values[c]) == bool(g[k + j]):
                continue
            xs = np.asarray(feeds[f][x] if x in inputs else values[x], dtype=np.float64).ravel()
            if abs(xs.sum()) < max_rel * math.sqrt(xs.size) * np.linalg.norm(xs):
                flipped.add(f)
    return flipped


# -- models built from a model ----------------------------------------------------------------------


def graphs_of(g: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``g`` and every subgraph in it."""
    found = [g]
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                found += graphs_of(a.g)
    return found


def weights_of(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every initializer of every graph (names are unique model-wide)."""
    return {t.name: t for g in graphs_of(model.graph) for t in g.initializer}


def _rtn(w: np.ndarray, axis: int, bits: int, block: int, symmetric: bool) -> np.ndarray:
    """Round-to-nearest, blocks of ``block`` values along ``axis``, one scale per block and column."""
    w64 = np.moveaxis(w.astype(np.float64), axis, 0)
    out = np.empty_like(w64)
    for start in range(0, w64.shape[0], block):
        b = w64[start : start + block]
        if symmetric:
            levels = 2 ** (bits - 1) - 1
            s = np.abs(b).max(axis=0) / levels
            s[s == 0] = 1.0
            out[start : start + block] = np.clip(np.round(b / s), -levels - 1, levels) * s
        else:
            lo, hi = np.minimum(b.min(axis=0), 0), np.maximum(b.max(axis=0), 0)
            s = (hi - lo) / (2**bits - 1)
            s[s == 0] = 1.0
            z = np.round(-lo / s)
            out[start : start + block] = (np.clip(np.round(b / s) + z, 0, 2**bits - 1) - z) * s
    return np.moveaxis(out, 0, axis).astype(w.dtype)


def rtn_weights(model: onnx.ModelProto, bits: int, block: int, symmetric: bool = False, gather: bool = False) -> onnx.ModelProto:
    """``model`` with every 2-D float weight of MatMul / Gemm (and, with ``gather``, of embedding
    Gathers) rounded to ``bits`` per block along its reduction axis: the textbook weight-only
    quantizer, as a baseline for the error a correct one reaches."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    axes: dict[str, int] = {}
    for g in graphs_of(out.graph):
        for node in g.node:
            if node.op_type == "MatMul" and len(node.input) > 1:
                axes[node.input[1]] = 0
            elif node.op_type == "Gemm":
                trans = any(a.name == "transB" and a.i for a in node.attribute)
                axes[node.input[1]] = 1 if trans else 0
            elif gather and node.op_type == "Gather" and not any(a.name == "axis" and a.i for a in node.attribute):
                axes[node.input[0]] = 1
    for g in graphs_of(out.graph):
        stored = [(t.name, t) for t in g.initializer]
        stored += [(n.output[0], a.t) for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        for name, t in stored:
            if name not in axes:
                continue
            w = numpy_helper.to_array(t)
            if w.ndim == 2 and w.dtype == np.float32:
                t.CopyFrom(numpy_helper.from_array(_rtn(w, axes[name], bits, block, symmetric), t.name))
    return out
