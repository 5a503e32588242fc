"""Shared by the subgraph tests: seeded inputs for the control-flow builders and hand-run bodies.

A body's reference values come from running the body *by hand*: the body graph becomes a model of
its own (the outer tensors it reads become inputs, the outer initializers it reads are copied in,
every float node output becomes an output) and onnxruntime runs it once per iteration (a Loop
step, a Scan time step) or only on the samples that take that If branch. Nothing of the code under
test (exposing, routing, stacking) is involved.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper

from models import build

#: Sizes of the builders' symbolic dims in the test inputs (batch N, frames / time steps T).
DIMS = {"N": 2, "T": 12}
BUILDERS = ("streaming-if", "loop-decoder", "scan-rnn")


def feeds(name: str, seed: int, *, wideband: bool | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for builder ``name``; streaming-if alternates 8/16 kHz unless ``wideband`` says."""
    rng = np.random.default_rng(seed)
    n, t = DIMS["N"], DIMS["T"]
    if name == "streaming-if":
        wide = bool(seed % 2) if wideband is None else wideband
        return {
            "features": rng.standard_normal((n, 40, t)).astype(np.float32),
            "sample_rate": np.array(16000 if wide else 8000, np.int64),
            "h0": (rng.standard_normal((1, n, 64)) * 0.5).astype(np.float32),
            "c0": (rng.standard_normal((1, n, 64)) * 0.5).astype(np.float32),
        }
    if name == "loop-decoder":
        return {"context": rng.standard_normal((n, 32)).astype(np.float32)}
    if name == "scan-rnn":
        return {"x": rng.standard_normal((t, n, 64)).astype(np.float32), "h0": (rng.standard_normal((n, 64)) * 0.5).astype(np.float32)}
    raise KeyError(name)


def samples(name: str, count: int = 8, first_seed: int = 0) -> list[dict[str, np.ndarray]]:
    return [feeds(name, s) for s in range(first_seed, first_seed + count)]


def body(model: onnx.ModelProto, attr: str) -> onnx.GraphProto:
    """The subgraph held in attribute ``attr`` (``then_branch``, ``body``, ...) of the main graph."""
    for node in model.graph.node:
        for a in node.attribute:
            if a.name == attr and a.type == onnx.AttributeProto.GRAPH:
                return a.g
    raise KeyError(attr)


def float_outputs(graph: onnx.GraphProto) -> list[str]:
    """Names of the float node outputs of ``graph`` (not of its subgraphs), in node order."""
    inferred = {vi.name: vi for vi in [*graph.value_info, *graph.output]}
    out = []
    for node in graph.node:
        for name in node.output:
            vi = inferred.get(name)
            if name and (vi is None or vi.type.tensor_type.elem_type == TensorProto.FLOAT):
                out.append(name)
    return out


def standalone(model: onnx.ModelProto, graph: onnx.GraphProto, outer_inputs: list[onnx.ValueInfoProto], outputs: list[str]) -> onnx.ModelProto:
    """``graph`` (a body of ``model``) as a model: body inputs + ``outer_inputs`` in, ``outputs`` out."""
    local = {t.name for t in graph.initializer}
    inits = list(graph.initializer) + [t for t in model.graph.initializer if t.name not in local]
    g = helper.make_graph(
        list(graph.node),
        f"{graph.name}_by_hand",
        list(graph.input) + outer_inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


def run_named(model: onnx.ModelProto, feeds_: dict[str, np.ndarray], names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` with graph optimizations off (as the collector does): output name → value."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = names or [o.name for o in sess.get_outputs()]
    allowed = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, {k: v for k, v in feeds_.items() if k in allowed})))


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose main graph also outputs ``names`` (top-level tensors)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return copy


def minmax(values: Iterator[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Per name, the min and max over every array seen for it."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for named in values:
        for k, v in named.items():
            if v.size:
                lo[k] = min(lo.get(k, np.inf), float(v.min()))
                hi[k] = max(hi.get(k, -np.inf), float(v.max()))
    return {k: (lo[k], hi[k]) for k in lo}


def inferred(name: str) -> onnx.ModelProto:
    """Builder ``name``'s model with onnx's inferred value_info (bodies included)."""
    return onnx.shape_inference.infer_shapes(build(name))
