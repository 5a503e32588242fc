"""Reading, validating and exporting models.

Loading validates once (protobuf parse, IR version, opset range, external-data locations, the ONNX
checker) and turns every failure into an :class:`InvalidModelError` naming the file and the problem.
A model with external data is loaded lazily: only the ``.onnx`` is parsed, and external initializers
become read-only memory-mapped views of their data files (see :mod:`._external`), so a model past
the 2 GiB protobuf limit loads in about the memory of its graph.

Such *large* models (weights above :data:`._external.LARGE_MODEL_BYTES`, or converted from such a
model: ``Model.large``) never become one ModelProto inside onnxq: :func:`to_proto` refuses weights
past the limit unless ``weights=False`` (initializers then reference a placeholder file instead of
holding data), and :func:`check` runs the checker on the model's structure from a path. The same
holds below the limit for any model whose weights are costly to copy (:func:`serializes_cheaply`).
Saving lives in :mod:`._save`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.external_data_helper as exdata

from ..errors import InvalidModelError, PreconditionError
from . import _external
from ._external import EXTERNAL_MIN_BYTES, PROTO_LIMIT, DataFiles, Region
from ._graph import iter_nodes
from ._gs import Constant, LazyValues, SharedLazyValues, TensorWriter, export_graph, import_graph, iter_constants, make_graph
from ._model import ONNX_DOMAIN, Model, clone, gc_paused

__all__ = [
    "load",
    "check",
    "to_proto",
    "from_proto",
    "MIN_OPSET",
    "MAX_OPSET",
    "PROTO_LIMIT",
    "nodes_to_proto",
    "weight_bytes",
    "is_large",
    "serializes_cheaply",
    "serialized_size",
    "WEIGHTS_PLACEHOLDER",
]

log = logging.getLogger(__name__)

#: Oldest default-domain opset we accept. Older models are rare and onnx's version converter is
#: unreliable below 7.
MIN_OPSET = 7
#: Newest default-domain opset the installed onnx package knows.
MAX_OPSET = onnx.defs.onnx_opset_version()
#: External-data location of initializers exported by ``to_proto(weights=False)``: their values stay
#: in memory (:func:`from_proto` takes them back from the model with ``weights=``).
WEIGHTS_PLACEHOLDER = "onnxq-weights-in-memory.data"

#: How a loader turns an external tensor reference into values.
_Binder = Callable[[onnx.TensorProto, str], Any]


def load(source: str | os.PathLike[str] | bytes | onnx.ModelProto | Model, *, check: bool = True) -> Model:
    """Load and validate a model from a path, serialized bytes, a ModelProto or a Model.

    The input is never modified: a ModelProto is copied and a Model is cloned. External data is
    mapped, not read (see the module docstring).

    Args:
        source: the model.
        check: run the ONNX checker (default). Structural validation always runs.

    Returns:
        A :class:`Model` ready for passes.

    Raises:
        InvalidModelError: the file is missing, not ONNX, truncated, fails the checker, uses an
            unsupported opset / IR version, or references missing or unsafe external data.
    """
    with gc_paused():
        return _load(source, check)


def _load(source: str | os.PathLike[str] | bytes | onnx.ModelProto | Model, check: bool) -> Model:
    if isinstance(source, Model):
        return clone(source)
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        return from_proto(proto, source="<ModelProto>", check=check)
    if isinstance(source, (bytes, bytearray)):
        return from_proto(_parse(bytes(source), "<bytes>"), source="<bytes>", check=check)
    path = Path(source)
    if not path.exists():
        raise InvalidModelError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise InvalidModelError(f"model path '{path}' is a folder, expected an .onnx file")
    proto = _parse(path.read_bytes(), str(path))
    if not _external_tensors(proto):
        return from_proto(proto, source=str(path), base_dir=path.parent, check=check)
    files = DataFiles(path)
    for tensor in _external_tensors(proto):  # every reference, before anything is imported
        files.region(tensor, f"{path}: initializer '{tensor.name}'")
    _validate(proto, str(path), check, path=path)
    model = _build(proto, str(path), path.parent, files.bind)
    model.large = weight_bytes(model) >= _external.LARGE_MODEL_BYTES
    return model


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    """Parse protobuf bytes, rejecting files that are not ONNX models."""
    if not data:
        raise InvalidModelError(f"{where}: file is empty, expected an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError / RuntimeWarning subclasses
        raise InvalidModelError(f"{where}: not a valid ONNX file (protobuf parse failed: {e}); is it truncated?") from e
    if not proto.HasField("graph") or not proto.opset_import:
        raise InvalidModelError(f"{where}: not an ONNX model (no graph or no opset_import found)")
    return proto


def _external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in exdata._get_all_tensors(proto) if exdata.uses_external_data(t)]


def _validate(proto: onnx.ModelProto, where: str, check: bool, *, path: Path | None = None) -> None:
    """IR version, opset range and (``check``) the ONNX checker.

    With external data the checker reads the file from ``path``: it resolves data locations against
    the model's folder, which an in-memory check cannot do.
    """
    if proto.ir_version < 3 or proto.ir_version > onnx.IR_VERSION:
        raise InvalidModelError(f"{where}: IR version {proto.ir_version} is not supported (expected 3..{onnx.IR_VERSION})")
    versions = {o.domain or ONNX_DOMAIN: o.version for o in proto.opset_import}
    default = versions.get(ONNX_DOMAIN, versions.get("ai.onnx"))
    if default is None:
        raise InvalidModelError(f"{where}: no opset for the default ONNX domain in opset_import")
    if not MIN_OPSET <= default <= MAX_OPSET:
        raise InvalidModelError(f"{where}: opset {default} is not supported (expected {MIN_OPSET}..{MAX_OPSET})")
    if check:
        try:
            if path is not None:
                onnx.checker.check_model(str(path))
            elif proto.ByteSize() < PROTO_LIMIT:
                onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "checker failed"
            raise InvalidModelError(f"{where}: fails the ONNX checker: {first}") from e


def from_proto(
    proto: onnx.ModelProto,
    *,
    source: str = "<ModelProto>",
    base_dir: Path | None = None,
    check: bool = True,
    weights: Model | None = None,
) -> Model:
    """Build a :class:`Model` from a ModelProto whose external data is already loaded.

    ``proto`` is consumed (its functions are detached); pass a copy if you still need it.

    Args:
        weights: the model a ``to_proto(model, weights=False)`` export came from: initializers
            pointing at :data:`WEIGHTS_PLACEHOLDER` take that model's values (same name), e.g. after
            onnx's version converter ran on the weightless proto.
    """
    external = _external_tensors(proto)
    if external and (weights is None or any(_location(t) != WEIGHTS_PLACEHOLDER for t in external)):
        raise InvalidModelError(f"{source}: references external data; load it from its file path instead")
    _validate(proto, source, check and not external)
    model = _build(proto, source, base_dir, _placeholder_binder(weights) if external else None)
    model.large = (weights is not None and weights.large) or weight_bytes(model) >= _external.LARGE_MODEL_BYTES
    return model


def _location(tensor: onnx.TensorProto) -> str:
    return _external.external_info(tensor).get("location", "")


def _placeholder_binder(weights: Model | None) -> _Binder:
    values = {c.name: c._values for c in iter_constants(weights.graph)} if weights is not None else {}

    def bind(tensor: onnx.TensorProto, where: str) -> Any:
        if tensor.name not in values:
            raise InvalidModelError(f"{where}: no values for the weightless initializer")
        return values[tensor.name]

    return bind


def _build(proto: onnx.ModelProto, source: str, base_dir: Path | None, bind: _Binder | None) -> Model:
    """Import a validated proto; ``bind`` gives the values of external initializers."""
    functions = list(proto.functions)
    del proto.functions[:]
    opsets = {(o.domain if o.domain != "ai.onnx" else ONNX_DOMAIN): o.version for o in proto.opset_import}
    try:
        graph = import_graph(proto)
    except Exception as e:
        raise InvalidModelError(f"{source}: cannot import graph: {e}") from e
    if bind is not None:
        _bind_external(graph, source, bind)
    graph.opset = opsets[ONNX_DOMAIN]
    return Model(
        graph=graph,
        opsets=opsets,
        ir_version=proto.ir_version,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=proto.model_version,
        doc_string=proto.doc_string,
        metadata={p.key: p.value for p in proto.metadata_props},
        functions=functions,
        source=source,
        base_dir=base_dir,
    )


def _bind_external(graph: Any, source: str, bind: _Binder) -> None:
    """Replace every external initializer's lazy proto values with what ``bind`` gives."""
    for constant in iter_constants(graph):
        lazy = constant._values
        if not isinstance(lazy, LazyValues) or not exdata.uses_external_data(lazy.tensor):
            continue
        values = bind(lazy.tensor, f"{source}: initializer '{constant.name}'")
        constant._values = SharedLazyValues(lazy.tensor, values) if isinstance(values, Region) else values


def _used_domains(model: Model) -> set[str]:
    return {n.domain or ONNX_DOMAIN for n in iter_nodes(model.graph)}


def constant_nbytes(constant: Constant) -> int:
    """Bytes of a constant's values as stored (without reading lazily loaded values)."""
    values = constant._values
    if isinstance(values, SharedLazyValues) and values.region is not None:
        return values.region.length
    if isinstance(values, LazyValues):
        return int(values.nbytes)
    return int(np.asarray(values).nbytes)


def weight_bytes(model: Model) -> int:
    """Total bytes of the model's constants (each counted once), without reading them."""
    return sum(constant_nbytes(c) for c in iter_constants(model.graph))


def is_large(model: Model) -> bool:
    """True for a model past the protobuf limit, or made from one (``Model.large``).

    A large model is saved with external data and never becomes one protobuf (see the module
    docstring); its size is :data:`._external.LARGE_MODEL_BYTES` or more bytes of weights.
    """
    return model.large or weight_bytes(model) >= _external.LARGE_MODEL_BYTES


def serializes_cheaply(model: Model) -> bool:
    """True when a protobuf copy of the model is cheap: not large, weights under :data:`._external.SERIALIZE_BYTES`.

    The checker, shape inference, onnxruntime sessions and size reports use an in-memory protobuf
    only then; above, they work on the weightless graph or from a path, and the output is the same.
    """
    limit = min(_external.SERIALIZE_BYTES, _external.LARGE_MODEL_BYTES)
    return not model.large and weight_bytes(model) < limit


def serialized_size(model: Model) -> int:
    """Bytes of ``model`` serialized: exact for a model that fits one protobuf; for a large one, its
    weightless graph plus the bytes of the weights its data file holds (alignment padding aside)."""
    if serializes_cheaply(model):
        return to_proto(model).ByteSize()
    data = sum(n for n in map(constant_nbytes, iter_constants(model.graph)) if n >= EXTERNAL_MIN_BYTES)
    return to_proto(model, weights=False).ByteSize() + data


def to_proto(model: Model, *, value_info: bool = False, weights: bool = True) -> onnx.ModelProto:
    """Export ``model`` to a ModelProto.

    Opset imports come from ``model.opsets`` (plus version 1 for any custom domain a node uses
    that is not declared); the IR version is raised to the minimum the opsets need. Intermediate
    ``value_info`` is dropped unless ``value_info`` is set: it is derived data that passes can make
    stale, and ``check_model(full_check=True)`` rejects stale shapes.

    Args:
        weights: include the initializers' data. With False, every initializer of at least
            :data:`EXTERNAL_MIN_BYTES` keeps its name, type and dims but points at
            :data:`WEIGHTS_PLACEHOLDER`: enough for input specs, shape inference and the checker's
            graph rules, at the size of the graph.

    Raises:
        PreconditionError: ``weights=True`` on weights past the protobuf limit (save the model
            with :func:`onnxq.ir.save`, which streams them to a data file).
    """
    if weights and weight_bytes(model) >= _external.LARGE_MODEL_BYTES:
        raise PreconditionError(
            f"{model.source}: {weight_bytes(model) / 2**30:.2f} GiB of weights do not fit one protobuf (2 GiB at most); "
            "save with external data (ir.save) or export with weights=False"
        )
    return export_model(model, value_info=value_info, tensor_writer=None if weights else placeholder_tensor)


def export_model(model: Model, *, value_info: bool = False, tensor_writer: TensorWriter | None = None) -> onnx.ModelProto:
    """:func:`to_proto` with a custom initializer writer (see :func:`._gs.export_graph`)."""
    graph_proto = export_graph(model.graph, value_info=value_info, tensor_writer=tensor_writer)
    opsets = dict(model.opsets)
    for domain in sorted(_used_domains(model)):
        if domain not in opsets and domain != "ai.onnx":
            opsets[domain] = 1
    opset_ids = [onnx.helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    proto = onnx.helper.make_model(graph_proto, opset_imports=opset_ids)
    min_ir = _min_ir_version(opsets)
    proto.ir_version = max(model.ir_version, min_ir)
    proto.producer_name = model.producer_name
    proto.producer_version = model.producer_version
    proto.domain = model.domain
    proto.model_version = model.model_version
    proto.doc_string = model.doc_string
    for key, value in model.metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.functions.extend(model.functions)
    return proto


def tensor_header(constant: Constant) -> onnx.TensorProto | None:
    """A TensorProto with the constant's name, type and dims but no data (None for strings)."""
    values = constant._values
    proto = onnx.TensorProto()
    proto.name = constant.name
    if isinstance(values, LazyValues):
        proto.data_type = values.tensor.data_type
        proto.dims.extend(values.tensor.dims)
    else:
        array = np.asarray(values)
        if array.dtype.kind in "OSU":  # strings live in string_data, never in a data file
            return None
        proto.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        proto.dims.extend(array.shape)
    if proto.data_type == onnx.TensorProto.STRING:
        return None
    return proto


def set_external(proto: onnx.TensorProto, location: str, offset: int | None = None, length: int | None = None) -> onnx.TensorProto:
    """Mark ``proto`` as stored at ``location`` (offset/length when given); its data is dropped.

    Not onnx's ``set_external_data``: that one insists on ``raw_data`` being present, and the point
    here is that it never was.
    """
    proto.ClearField("raw_data")
    del proto.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = proto.external_data.add()
            entry.key, entry.value = key, str(value)
    proto.data_location = onnx.TensorProto.EXTERNAL
    return proto


def placeholder_tensor(constant: Constant) -> onnx.TensorProto | None:
    """The ``weights=False`` export of an initializer (None: small enough to stay inline)."""
    if constant_nbytes(constant) < EXTERNAL_MIN_BYTES:
        return None
    header = tensor_header(constant)
    return set_external(header, WEIGHTS_PLACEHOLDER) if header is not None else None


def _min_ir_version(opsets: dict[str, int]) -> int:
    """Minimum IR version for the default-domain opset (custom domains impose nothing)."""
    default = opsets.get(ONNX_DOMAIN, MIN_OPSET)
    try:
        return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid(ONNX_DOMAIN, default)], ignore_unknown=True)
    except Exception:  # unknown future opset: keep what the model says
        return 3


def check(model: Model, *, full: bool = True) -> None:
    """Run the ONNX checker (``full_check`` includes strict shape inference).

    A model whose weights are not cheap to serialize (:func:`serializes_cheaply`) is checked from a
    path without its weights: the weightless export (names, types,
    dims of every initializer) is written to a temporary folder beside an empty placeholder data
    file, and ``onnx.checker.check_model(path)`` runs on it. Every graph rule and shape inference
    still run; only the initializers' byte counts go unchecked, and the saver writes those.

    Raises:
        InvalidModelError: naming the model and the checker's first message line.
    """
    try:
        if serializes_cheaply(model):
            onnx.checker.check_model(to_proto(model), full_check=full)
        else:
            _check_weightless(model, full)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidModelError(f"{model.source}: fails the ONNX checker: {first}") from e


def _check_weightless(model: Model, full: bool) -> None:
    proto = to_proto(model, weights=False)
    with tempfile.TemporaryDirectory(prefix="onnxq-check-") as tmp:
        path = Path(tmp) / "model.onnx"
        (Path(tmp) / WEIGHTS_PLACEHOLDER).touch()
        path.write_bytes(proto.SerializeToString())
        onnx.checker.check_model(str(path), full_check=full)


def nodes_to_proto(
    nodes: list,
    outputs: list,
    opsets: dict[str, int],
    *,
    inputs: list | None = None,
    ir_version: int = 8,
) -> onnx.ModelProto:
    """A standalone model computing ``outputs`` from ``nodes``.

    Constants read by the nodes become initializers; ``inputs`` (run-time tensors) become graph
    inputs. Used to evaluate constant subgraphs or to time a region of a model in isolation.
    """
    graph = make_graph(list(nodes), list(inputs or []), list(outputs), name="fragment")
    proto_graph = export_graph(graph)
    opset_ids = [onnx.helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    proto = onnx.helper.make_model(proto_graph, opset_imports=opset_ids)
    proto.ir_version = max(ir_version, _min_ir_version(opsets))
    return proto
