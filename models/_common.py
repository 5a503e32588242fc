"""Shared machinery for the model builders: a seeded weight factory and a tiny graph builder.

Why a builder class at all: every test model needs unique, readable node names (``block1/conv1``),
initializers named after the node that owns them, and one seeded random generator whose draws happen
in a fixed order so that the same arguments always serialize to the same bytes. Keeping that state in
one small object lets the layer helpers (``_layers.py``) stay short functions of ``(builder, tensor)``.

Only ``onnx`` and ``numpy`` are used here; the builders must not depend on onnxq's own IR, because
they are the fixtures that test it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxq.errors import ConfigError

__all__ = [
    "DEFAULT_IR_VERSION",
    "DEFAULT_OPSET",
    "Dim",
    "GraphBuilder",
    "ModelArgumentError",
    "bn_params",
    "check_opset",
    "he_normal",
    "require",
]

DEFAULT_OPSET = 17
"""Opset of every builder unless ``opset=`` says otherwise (LayerNormalization needs 17)."""

DEFAULT_IR_VERSION = 8
"""IR version 8 loads in every onnxruntime since 1.14 and accepts opsets up to the newest."""

Dim = int | str
"""A tensor dimension as the builders accept it: a fixed size or a symbolic name such as ``"N"``."""


class ModelArgumentError(ConfigError, ValueError):
    """A builder name, builder argument or zoo name is invalid.

    It is a :class:`ValueError` for plain-Python callers and a :class:`onnxq.errors.ConfigError` so
    that onnxq's CLI reports it as one line with exit code 2 instead of a traceback.
    """


def require(condition: bool, message: str) -> None:
    """Raise :class:`ModelArgumentError` with ``message`` unless ``condition`` holds.

    Builders validate their size arguments up front so a bad value fails with a sentence naming the
    argument rather than with an onnxruntime shape error deep inside the graph.
    """
    if not condition:
        raise ModelArgumentError(message)


def he_normal(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    """Draw Kaiming/He-normal weights (std = sqrt(2 / fan_in)), as trained ReLU networks start from.

    Realistic magnitudes matter: quantization ranges and BN folding are only exercised meaningfully
    when weights are neither all-equal nor tiny.
    """
    std = np.sqrt(2.0 / max(fan_in, 1))
    return (rng.standard_normal(tuple(shape)) * std).astype(np.float32)


def bn_params(
    rng: np.random.Generator, channels: int, *, gamma_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return non-trivial ``(scale, bias, mean, var)`` for a BatchNormalization over ``channels``.

    Identity statistics (gamma=1, beta=0, mean=0, var=1) would let a broken BN-folding pass pass its
    tests, so every parameter is drawn from the seeded generator; ``var`` stays in [0.5, 1.5] (> 0).
    ``gamma_scale`` shrinks gamma for the last BN of a residual branch, the "zero-init residual"
    trick that keeps very deep stacks numerically finite.
    """
    scale = rng.uniform(0.5, 1.5, channels).astype(np.float32) * np.float32(gamma_scale)
    bias = (rng.standard_normal(channels) * 0.1).astype(np.float32)
    mean = (rng.standard_normal(channels) * 0.1).astype(np.float32)
    var = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    return scale, bias, mean, var


def _dims(shape: Sequence[Dim | None]) -> list[int | str | None]:
    """Normalize a declared shape for ``helper.make_tensor_value_info`` (ints and names pass through)."""
    return [d if d is None or isinstance(d, str) else int(d) for d in shape]


class GraphBuilder:
    """Accumulate nodes, initializers and graph inputs/outputs with unique, scoped names.

    Names are ``scope/sub/name``; a repeated name gets a ``_1``, ``_2`` ... suffix. A subgraph builder
    (:meth:`subgraph`) shares the name registry and the random generator with its parent, so names
    stay unique across the whole model and the draw order (hence the bytes) stays deterministic.
    """

    def __init__(
        self,
        seed: int,
        opset: int = DEFAULT_OPSET,
        *,
        _rng: np.random.Generator | None = None,
        _used: set[str] | None = None,
        _scope: tuple[str, ...] = (),
    ) -> None:
        self.opset = opset
        self.rng = _rng if _rng is not None else np.random.default_rng(seed)
        self._used: set[str] = _used if _used is not None else set()
        self._scope: list[str] = list(_scope)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    # -- naming ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Prefix every name created inside the ``with`` block by ``name/``."""
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def unique(self, name: str) -> str:
        """Return ``scope/name`` made unique across the model (and its subgraphs)."""
        base = "/".join([*self._scope, name])
        candidate, i = base, 0
        while candidate in self._used:
            i += 1
            candidate = f"{base}_{i}"
        self._used.add(candidate)
        return candidate

    # -- graph pieces ---------------------------------------------------------------------------
    def input(self, name: str, elem_type: int, shape: Sequence[Dim | None]) -> str:
        """Declare a graph input and return its name (inputs are not scoped)."""
        self._used.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, _dims(shape)))
        return name

    def output(self, tensor: str, name: str, shape: Sequence[Dim | None],
               elem_type: int = TensorProto.FLOAT) -> str:
        """Expose ``tensor`` as graph output ``name`` (via Identity if the names differ)."""
        if tensor != name:
            self._used.add(name)
            self.nodes.append(helper.make_node("Identity", [tensor], [name], name=self.unique(f"{name}_identity")))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, _dims(shape)))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        """Add ``value`` as an initializer named ``scope/name`` and return the tensor name."""
        full = self.unique(name)
        # np.ascontiguousarray would turn a 0-d scalar into shape [1]; keep the rank as given.
        array = np.asarray(value)
        self.initializers.append(numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), full))
        return full

    def scalar(self, name: str, value: float, dtype: type = np.float32) -> str:
        """Add a 0-d initializer (exporters emit these for constants such as ``sqrt(head_dim)``)."""
        return self.const(name, np.array(value, dtype=dtype))

    def ints(self, name: str, values: Sequence[int]) -> str:
        """Add a 1-d int64 initializer, the form Reshape/Unsqueeze/Concat shape inputs take."""
        return self.const(name, np.array(list(values), dtype=np.int64))

    def op(self, op_type: str, inputs: Sequence[str], *, name: str | None = None, out: str | None = None,
           **attrs: Any) -> str:
        """Append a single-output node; its output tensor is ``out`` or else ``<node name>/out``."""
        names = None if out is None else [out]
        return self.op_multi(op_type, inputs, 1, name=name, output_names=names, **attrs)[0]

    def op_multi(
        self, op_type: str, inputs: Sequence[str], num_outputs: int, *, name: str | None = None,
        output_names: Sequence[str] | None = None, suffixes: Sequence[str] | None = None, **attrs: Any,
    ) -> list[str]:
        """Append a node with several outputs and return their names.

        Outputs are named ``<node>/out<i>`` unless ``output_names`` gives full names or ``suffixes``
        gives ``<node>/<suffix>`` names; an empty suffix leaves that optional output unnamed, as
        exporters do for an LSTM's unused ``Y``.
        """
        node_name = self.unique(name or op_type.lower())
        if output_names is not None:
            outs = list(output_names)
        elif suffixes is not None:
            outs = [f"{node_name}/{s}" if s else "" for s in suffixes]
        else:
            outs = [f"{node_name}/out" if num_outputs == 1 else f"{node_name}/out{i}" for i in range(num_outputs)]
        self._used.update(o for o in outs if o)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs

    # -- opset-aware helpers (the axes of these ops moved from attribute to input over time) ----
    def reduce(self, op_type: str, x: str, axes: Sequence[int] | None, *, keepdims: bool,
               name: str | None = None) -> str:
        """ReduceMean/ReduceSum/... with ``axes`` as attribute or input depending on the opset.

        ReduceSum took axes as an input from opset 13, the other Reduce ops only from opset 18.
        """
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes is None:
            return self.op(op_type, [x], name=name, keepdims=int(keepdims))
        if axes_as_input:
            return self.op(op_type, [x, self.ints(f"{name or op_type.lower()}_axes", axes)],
                           name=name, keepdims=int(keepdims))
        return self.op(op_type, [x], name=name, axes=list(axes), keepdims=int(keepdims))

    def squeeze(self, x: str, axes: Sequence[int], *, name: str = "squeeze") -> str:
        """Squeeze with axes as an input (opset >= 13, the builders' minimum)."""
        return self.op("Squeeze", [x, self.ints(f"{name}_axes", axes)], name=name)

    def unsqueeze(self, x: str, axes: Sequence[int], *, name: str = "unsqueeze") -> str:
        """Unsqueeze with axes as an input (opset >= 13, the builders' minimum)."""
        return self.op("Unsqueeze", [x, self.ints(f"{name}_axes", axes)], name=name)

    # -- assembly -------------------------------------------------------------------------------
    def subgraph(self) -> GraphBuilder:
        """A builder for an ``If``/``Loop`` body sharing names, RNG and opset with this one."""
        return GraphBuilder(0, self.opset, _rng=self.rng, _used=self._used, _scope=tuple(self._scope))

    def graph(self, name: str) -> onnx.GraphProto:
        """The accumulated nodes as a GraphProto (for subgraphs and for :meth:`model`)."""
        return helper.make_graph(self.nodes, name, self.inputs, self.outputs, initializer=self.initializers)

    def model(self, name: str, *, doc: str = "", ir_version: int = DEFAULT_IR_VERSION) -> onnx.ModelProto:
        """Wrap the graph in a ModelProto with a fixed producer so serialization is reproducible."""
        model = helper.make_model(
            self.graph(name),
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name="onnxq.models",
            producer_version="1",
            doc_string=doc,
        )
        model.ir_version = ir_version
        return model


def check_opset(opset: int, minimum: int, builder: str) -> None:
    """Refuse an opset the builder's ops do not exist in (or that onnx does not know yet)."""
    newest = onnx.defs.onnx_opset_version()
    require(minimum <= opset <= newest,
            f"{builder}: opset must be in [{minimum}, {newest}], got {opset}")
