"""Helpers for testing the static-quantization passes one at a time, on hand-made contexts.

Each pass runs under a one-pass :class:`~onnxq.pass_manager.PassManager` (so it is normalized and
checked exactly as inside a pipeline, and its skip records carry its name) with a
:class:`~onnxq.context.PassContext` the test builds itself: ranges written by hand as
:class:`~onnxq.calibration.ranges.TensorRange` values, or measured here with onnxruntime (all
float tensors exposed as outputs), independently of the ``calibrate`` pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxq.api  # noqa: F401  (registers the pass library)
from onnxq import ir
from onnxq.calibration.ranges import RangeSet, TensorRange
from onnxq.context import PassContext
from onnxq.pass_base import PassResult, make_pass
from onnxq.pass_manager import PassManager
from tests.helpers import session


def load(proto: onnx.ModelProto) -> ir.Model:
    """``proto`` as an IR model with inferred dtypes/shapes (what ``cleanup`` leaves for annotate)."""
    model = ir.load(proto)
    ir.infer_shapes(model)
    return model


def tr(lo: float, hi: float, **extra: Any) -> TensorRange:
    """A hand-made min-max range."""
    return TensorRange(lo, hi, "minmax", 1, 100, **extra)


def range_set(ranges: Mapping[str, tuple[float, float] | TensorRange]) -> RangeSet:
    """A RangeSet from ``{tensor: (lo, hi)}`` (or ready TensorRange values)."""
    return RangeSet({k: v if isinstance(v, TensorRange) else tr(*v) for k, v in ranges.items()})


def float_tensors(proto: onnx.ModelProto) -> list[str]:
    """Graph inputs and node outputs of type float, in graph order."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    names = [i.name for i in proto.graph.input] + [o for n in proto.graph.node for o in n.output if o]
    return [n for n in dict.fromkeys(names) if types.get(n) == TensorProto.FLOAT]


def measured_ranges(proto: onnx.ModelProto, samples: Iterable[Mapping[str, np.ndarray]]) -> RangeSet:
    """Min-max ranges of every float tensor over ``samples``, measured with onnxruntime."""
    names = float_tensors(proto)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in present)
    sess = session(exposed)
    outs = [o.name for o in sess.get_outputs()]
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    count = 0
    for feeds in samples:
        count += 1
        values = dict(zip(outs, sess.run(None, dict(feeds))))
        values.update(feeds)
        for n in names:
            lo[n] = min(lo[n], float(np.min(values[n])))
            hi[n] = max(hi[n], float(np.max(values[n])))
    return RangeSet({n: TensorRange(lo[n], hi[n], "minmax", count, count) for n in names})


def samples(shape: tuple[int, ...], n: int, seed: int, name: str = "x") -> list[dict[str, np.ndarray]]:
    """``n`` seeded standard-normal feeds for one input."""
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def run_pass(name: str, model: ir.Model, ctx: PassContext, **options: Any) -> PassResult:
    """Run one registered pass as a pipeline of one (normalized, ONNX checker after it)."""
    result = PassManager([make_pass(name, options)], check=True).run(model, ctx)
    return PassResult(result.model, result.modified, result.records[0].stats)


def annotate(model: ir.Model, ranges: RangeSet, **cfg: Any) -> PassContext:
    """A context holding ``ranges`` and the plan annotate-quantization builds from them."""
    ctx = PassContext(ranges=ranges)
    run_pass("annotate-quantization", model, ctx, **cfg)
    return ctx


def to_qdq(model: ir.Model, ranges: RangeSet, **cfg: Any) -> tuple[ir.Model, PassContext]:
    """``model`` annotated and materialized as QDQ (in place), with the context that did it."""
    ctx = annotate(model, ranges, **cfg)
    run_pass("insert-qdq", model, ctx)
    return model, ctx


def ops(model: ir.Model) -> list[str]:
    """Op types of the model's nodes, in order."""
    return [n.op for n in ir.iter_nodes(model.graph)]


def count(model: ir.Model, op: str) -> int:
    return sum(1 for n in ir.iter_nodes(model.graph) if n.op == op)


def node(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in ir.iter_nodes(model.graph) if n.name == name)


def weight(name: str, shape: tuple[int, ...], seed: int, scale: float = 0.5) -> onnx.TensorProto:
    """A seeded float32 initializer."""
    return numpy_helper.from_array((np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32), name)


def make_model(
    nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto], opset: int = 18
) -> onnx.ModelProto:
    """A checked model from helper-built pieces."""
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto


def vi(name: str, shape: list[int] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def parse_with(text: str, weights: Mapping[str, tuple[int, ...]] = {}, seed: int = 0, constants: Mapping[str, Any] = {}) -> onnx.ModelProto:  # noqa: B006
    """A model from onnx's text syntax plus seeded float weights (``{name: shape}``) and constants (checked)."""
    proto = onnx.parser.parse_model(text)
    proto.ir_version = 8
    proto.graph.initializer.extend(weight(name, shape, seed + i) for i, (name, shape) in enumerate(weights.items()))
    proto.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in constants.items())
    onnx.checker.check_model(proto, full_check=True)
    return proto
