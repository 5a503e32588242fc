"""Hypothesis strategies for random *valid* ONNX models over onnxq's supported op set.

A drawn model is a :class:`ModelSpec`: plain data (opset, weight seed, source, a list of op specs)
whose ``repr`` is the Python expression that rebuilds it. That is what hypothesis prints for a
shrunk failure, and what a regression test pastes (``ModelSpec(...).build()``) — no hypothesis
needed to replay it, and the same weights come back because they are drawn from
``numpy.random.default_rng(seed)`` in emission order.

Coverage (see :mod:`tests.fuzz._ops` for each op's forms):

- sources: images ``[N, C, H, W]``, signals ``[N, C, L]``, dense ``[N, D]``, sequences
  ``[T, N, D]``, token ids ``[N, T]`` (int64) through an embedding ``Gather``; the float input is
  float32, float16 or float64 (then Cast); the batch (and the sequence length) may be symbolic;
- ops: Conv (1-D/2-D, groups, dilation, SAME_UPPER), MatMul, Gemm, activation x activation MatMul,
  Add/Sub/Mul/Div/Max/Min with constants, Relu/Sigmoid/Tanh/LeakyRelu/HardSigmoid/HardSwish/Gelu/
  Clip, Softmax, LayerNormalization, BatchNormalization, ReduceMean/Sum/Max, Max/Average/Global
  pools, Pad, Resize, Reshape/Flatten/Shape-computed reshapes, Transpose, Slice, Squeeze/
  Unsqueeze, Split, Concat, Gather (int64 index inputs), LSTM/GRU, Cast round trips, Identity/
  Dropout no-ops, a second graph input, two-path merges, If (bool input or computed condition) and
  Loop (fixed trip count, body reading outer tensors, scan outputs);
- opsets 11..21, each op in its spelling at that opset (Split/Squeeze/Unsqueeze/ReduceX axes as
  attributes or inputs, Split num_outputs >= 18, Pad axes >= 18, Resize roi/scales at 11, Clip
  inputs, Shape start/end >= 15, HardSwish >= 14, LayerNormalization >= 17, Gelu >= 20);
- constants as initializers or Constant nodes; subgraph constants local, outer or nodes.

Every generated model passes ``onnx.checker.check_model(full_check=True)`` and runs in
onnxruntime: :func:`reference_outputs` checks both (a failure there is a generator bug, and
``test_generated_models_are_valid`` keeps it visible).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import strategies as st
from onnx import TensorProto, helper

from ._emit import ConstMode, Emitter, Naming, Shape
from ._ops import OPS, Ctx, Spec, apply_chain, draw_chain

__all__ = [
    "ModelSpec", "FuzzModel", "model_specs", "reference_outputs", "run_model", "session", "GeneratorBug", "MAX_NODES", "op_names",
    "QUANT_OPS", "activation_absmax",
]  # fmt: skip

#: Rough cap on the nodes of a model (control-flow bodies included).
MAX_NODES = 25

_FLOAT_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE}
_NP = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.INT64: np.int64,
    TensorProto.BOOL: np.bool_,
}


class GeneratorBug(AssertionError):
    """A generated model fails the checker or onnxruntime: the generator is wrong, not onnxq."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything a fuzz model is built from; ``repr`` is the expression that rebuilds it.

    Attributes:
        opset: default-domain opset (11..21).
        seed: seed of the generator every weight is drawn from, in emission order.
        source: ``image`` / ``signal`` / ``dense`` / ``seq`` / ``tokens``.
        shape: the source input's shape (symbolic dims as names); for ``tokens`` the ids' shape.
        ops: the op chain applied to the source, ``(name, params)`` as in :data:`tests.fuzz._ops.OPS`.
        dtype: the float input's type (float16 / float64 inputs are Cast to float32 first).
        consts: constants as initializers (``init``) or Constant nodes (``node``).
        dims: values of the symbolic dims in generated feeds.
        embed: ``(vocab, dim)`` of the embedding table (``tokens``).
        scale: float inputs are drawn from N(0, scale²) (tiny and huge activation ranges).
        naming: tensor / node naming style (see :data:`tests.fuzz._emit.Naming`).
        inits_as_inputs: also list every initializer as a graph input (old exporters' overridable
            initializers; feeds leave them out, so their stored values are used).
    """

    opset: int
    seed: int
    source: str
    shape: tuple[Any, ...]
    ops: list[Spec]
    dtype: str = "float32"
    consts: ConstMode = "init"
    dims: dict[str, int] = field(default_factory=dict)
    embed: tuple[int, int] = (0, 0)
    scale: float = 1.0
    naming: Naming = "plain"
    inits_as_inputs: bool = False

    def float_shape(self) -> Shape:
        """Shape of the float tensor the op chain starts from."""
        return (*self.shape, self.embed[1]) if self.source == "tokens" else tuple(self.shape)

    def build(self) -> FuzzModel:
        """Emit the model (not checked: :func:`reference_outputs` does that)."""
        em = Emitter(self.opset, self.seed, self.consts, self.naming)
        if self.source == "tokens":
            vocab, dim = self.embed
            ids = em.add_input("ids", TensorProto.INT64, tuple(self.shape))
            em.index_inputs[ids] = (0, vocab)
            table = em.weight([vocab, dim], fan_in=1, hint="embedding")
            x = em.op("Gather", table, ids, axis=0)
        else:
            x = em.add_input("x", _FLOAT_TYPES[self.dtype], tuple(self.shape))
            if self.dtype != "float32":
                x = em.op("Cast", x, to=TensorProto.FLOAT)
        y, shape = apply_chain(em, x, self.float_shape(), self.ops)
        if em.is_io(y):
            y = em.op("Identity", y)  # a graph input / output is not listed again
        side = list(em.outputs)
        em.outputs.clear()
        em.add_output(y, shape)
        outputs = em.outputs + side
        inputs = list(em.inputs)
        if self.inits_as_inputs:
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in em.main.inits]
        graph = helper.make_graph(em.main.nodes, "fuzz", inputs, outputs, em.main.inits)
        opset = helper.make_opsetid("", self.opset)
        model = helper.make_model(graph, opset_imports=[opset], producer_name="onnxq-fuzz")
        model.ir_version = helper.find_min_ir_version_for([opset])
        return FuzzModel(self, model, dict(em.index_inputs))


@dataclass
class FuzzModel:
    """A built fuzz model and how to feed it."""

    spec: ModelSpec
    proto: onnx.ModelProto
    index_inputs: dict[str, tuple[int, int]]

    @property
    def node_count(self) -> int:
        def count(g: onnx.GraphProto) -> int:
            n = 0
            for node in g.node:
                n += 1
                for a in node.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        n += count(a.g)
            return n

        return count(self.proto.graph)

    def feeds(self, seed: int, count: int = 1) -> list[dict[str, np.ndarray]]:
        """``count`` seeded feed dicts: floats N(0, scale²), bools fair coins (both If branches run),
        indices in range. Symbolic dims take ``spec.dims`` in the first feed and vary (1..3) after."""
        rng = np.random.default_rng(seed)
        stored = {t.name for t in self.proto.graph.initializer}
        out = []
        for i in range(count):
            dims = dict(self.spec.dims) if i == 0 else {k: int(rng.integers(1, 4)) for k in self.spec.dims}
            feed = {}
            for vi in self.proto.graph.input:
                if vi.name in stored:
                    continue
                t = vi.type.tensor_type
                shape = [d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 2) for d in t.shape.dim]
                dtype = _NP[t.elem_type]
                if dtype is np.bool_:
                    feed[vi.name] = np.array(rng.random(shape) < 0.5)
                elif dtype is np.int64:
                    low, high = self.index_inputs[vi.name]
                    feed[vi.name] = rng.integers(low, high, shape).astype(np.int64)
                else:
                    feed[vi.name] = (rng.standard_normal(shape) * self.spec.scale).astype(dtype)
            out.append(feed)
        return out


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_model(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Outputs of ``model`` on every feed dict (one session)."""
    sess = session(model)
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in f.items() if k in names}) for f in feeds]


def reference_outputs(fm: FuzzModel, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Check the generated model (full checker, onnxruntime) and return its fp32 outputs.

    Raises:
        GeneratorBug: the model is invalid or does not run (the generator's fault).
    """
    try:
        onnx.checker.check_model(fm.proto, full_check=True)
        outs = run_model(fm.proto, feeds)
    except Exception as e:
        raise GeneratorBug(f"generated model is invalid: {type(e).__name__}: {e}\n{fm.spec!r}") from e
    for run in outs:
        for o in run:
            if not np.all(np.isfinite(o)):
                raise GeneratorBug(f"generated model produces non-finite values\n{fm.spec!r}")
    return outs


def activation_absmax(fm: FuzzModel, feeds: list[dict[str, np.ndarray]]) -> float:
    """Largest |value| of any float32 tensor of the main graph on ``feeds`` (fp16's range: 65504)."""
    model = onnx.shape_inference.infer_shapes(fm.proto)
    outputs = {o.name for o in model.graph.output}
    for vi in model.graph.value_info:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT and vi.name not in outputs:
            model.graph.output.append(vi)
    return max((float(np.max(np.abs(o))) for run in run_model(model, feeds) for o in run if o.size and o.dtype == np.float32), default=0.0)


def _source(draw: Any) -> tuple[str, tuple[Any, ...], tuple[int, int], dict[str, int]]:
    kind = draw(st.sampled_from(["image", "dense", "seq", "tokens", "signal"]))
    symbolic = draw(st.booleans())
    batch: Any = "N" if symbolic else draw(st.integers(1, 2))
    dims = {"N": draw(st.integers(1, 3))} if symbolic else {}
    if kind == "image":
        return kind, (batch, draw(st.integers(1, 4)), draw(st.integers(3, 10)), draw(st.integers(3, 10))), (0, 0), dims
    if kind == "signal":
        return kind, (batch, draw(st.integers(1, 4)), draw(st.integers(3, 16))), (0, 0), dims
    if kind == "dense":
        return kind, (batch, draw(st.integers(2, 32))), (0, 0), dims
    steps: Any = draw(st.integers(1, 5))
    if symbolic and draw(st.booleans()):
        dims["T"] = steps
        steps = "T"
    if kind == "seq":
        return kind, (steps, batch, draw(st.integers(1, 16))), (0, 0), dims
    return kind, (batch, steps), (draw(st.integers(4, 32)), draw(st.integers(2, 16))), dims


#: Op weights for the quantization pipelines: mostly ops that have int8 kernels (Conv, MatMul, Gemm,
#: pools, Resize, elementwise with constants) so that most examples really get quantized.
QUANT_OPS = (
    ("conv", 8), ("matmul", 8), ("gemm", 4), ("binary_const", 4), ("pool", 3), ("resize", 3), ("rnn", 3), ("self_matmul", 3),
    ("conv_transpose", 3), ("concat_const", 2),
)  # fmt: skip


@st.composite
def model_specs(draw: Any, min_opset: int = 11, max_opset: int = 21, max_ops: int = 8, boost: tuple[tuple[str, int], ...] = ()) -> ModelSpec:
    """A random valid model (as its :class:`ModelSpec`): opset, source, then an op chain of 1..``max_ops``.

    ``boost`` overrides how often ops are drawn (e.g. :data:`QUANT_OPS`); with it, layers are at
    least 4 wide (a 1-wide MatMul is one dot product whose cancellation makes any relative error
    bound meaningless) and a chain without any weighted layer (Conv, MatMul, Gemm, LSTM/GRU) gets a
    MatMul appended where one applies, so that the lossy pipelines have something to quantize.
    """
    opset = draw(st.integers(min_opset, max_opset))
    seed = draw(st.integers(0, 2**16))
    kind, shape, embed, dims = _source(draw)
    dtype = draw(st.sampled_from(["float32", "float32", "float16", "float64"])) if kind != "tokens" else "float32"
    consts = draw(st.sampled_from(["init", "init", "node"]))
    scale = draw(st.sampled_from([1.0, 1.0, 0.01, 100.0]))
    naming = draw(st.sampled_from(["plain", "plain", "path", "anonymous"]))
    inits_as_inputs = draw(st.integers(0, 7)) == 7
    start = (*shape, embed[1]) if kind == "tokens" else shape
    ctx = Ctx(opset, budget=[MAX_NODES - 2], boost=boost, min_width=4 if boost else 1)
    ops, end = draw_chain(draw, ctx, start, 1, max_ops)
    if boost and not op_names_of(ops) & _WEIGHTED and OPS["matmul"].applies(ctx, end):
        ops.append(("matmul", OPS["matmul"].draw(draw, ctx, end)))
    return ModelSpec(
        opset=opset, seed=seed, source=kind, shape=shape, ops=ops, dtype=dtype, consts=consts, dims=dims, embed=embed,
        scale=scale, naming=naming, inits_as_inputs=inits_as_inputs,
    )  # fmt: skip


_WEIGHTED = frozenset({"conv", "matmul", "gemm", "rnn"})


def op_names(spec: ModelSpec) -> set[str]:
    """Every catalog op a spec uses (sub-chains included), for coverage statistics."""
    return op_names_of(spec.ops)


def op_names_of(ops: list[Spec]) -> set[str]:
    found: set[str] = set()

    def walk(specs: list[Spec]) -> None:
        for name, params in specs:
            found.add(name)
            for key in ("left", "right", "then", "else", "body"):
                if key in params:
                    walk(params[key])

    walk(ops)
    return found
