"""Reading, validating and writing models.

Loading validates once (protobuf parse, IR version, opset range, external-data locations, the ONNX
checker) and turns every failure into an :class:`InvalidModelError` naming the file and the problem.
Saving is atomic (temp file + ``os.replace``): an interrupted or failed save never leaves a
half-written model behind, and the same model always serializes to the same bytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx
import onnx.external_data_helper as exdata

from ..errors import InvalidModelError
from ._graph import iter_nodes
from ._gs import export_graph, import_graph, make_graph
from ._model import ONNX_DOMAIN, Model, clone, gc_paused

__all__ = [
    "load",
    "save",
    "check",
    "to_proto",
    "from_proto",
    "MIN_OPSET",
    "MAX_OPSET",
    "nodes_to_proto",
]

log = logging.getLogger(__name__)

#: Oldest default-domain opset we accept. Older models are rare and onnx's version converter is
#: unreliable below 7.
MIN_OPSET = 7
#: Newest default-domain opset the installed onnx package knows.
MAX_OPSET = onnx.defs.onnx_opset_version()
#: A protobuf message cannot exceed 2 GiB; above this we must write external data.
PROTO_LIMIT = 2**31 - 1

def load(source: str | os.PathLike[str] | bytes | onnx.ModelProto | Model, *, check: bool = True) -> Model:
    """Load and validate a model from a path, serialized bytes, a ModelProto or a Model.

    The input is never modified: a ModelProto is copied and a Model is cloned.

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
    _load_external_data(proto, path)
    return from_proto(proto, source=str(path), base_dir=path.parent, check=check)


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


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Validate and read external-data files referenced by ``proto`` (relative to ``path``).

    Locations must be relative paths that stay inside the model's folder: a crafted model must not
    make us read ``../../etc/passwd`` or an absolute path.
    """
    tensors = _external_tensors(proto)
    if not tensors:
        return
    base = path.parent.resolve()
    for tensor in tensors:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: initializer '{tensor.name}'"
        if not location:
            raise InvalidModelError(f"{where} uses external data without a location")
        if os.path.isabs(location) or Path(location).is_absolute():
            raise InvalidModelError(f"{where}: external-data location '{location}' is absolute; only paths inside the model's folder are allowed")
        target = (base / location).resolve()
        if not target.is_relative_to(base):
            raise InvalidModelError(f"{where}: external-data location '{location}' escapes the model's folder")
        if not target.is_file():
            raise InvalidModelError(f"{where}: external-data file '{location}' not found next to the model")
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        size = target.stat().st_size
        if length is not None and offset + int(length) > size:
            raise InvalidModelError(f"{where}: external-data file '{location}' is truncated (needs {offset + int(length)} bytes, has {size})")
    try:
        exdata.load_external_data_for_model(proto, str(base))
    except Exception as e:
        raise InvalidModelError(f"{path}: cannot read external data: {e}") from e


def _validate(proto: onnx.ModelProto, where: str, check: bool) -> None:
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
            if proto.ByteSize() < PROTO_LIMIT:
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
) -> Model:
    """Build a :class:`Model` from a ModelProto whose external data is already loaded.

    ``proto`` is consumed (its functions are detached); pass a copy if you still need it.
    """
    if _external_tensors(proto):
        raise InvalidModelError(f"{source}: references external data; load it from its file path instead")
    _validate(proto, source, check)
    functions = list(proto.functions)
    del proto.functions[:]
    opsets = {(o.domain if o.domain != "ai.onnx" else ONNX_DOMAIN): o.version for o in proto.opset_import}
    try:
        graph = import_graph(proto)
    except Exception as e:
        raise InvalidModelError(f"{source}: cannot import graph: {e}") from e
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


def _used_domains(model: Model) -> set[str]:
    return {n.domain or ONNX_DOMAIN for n in iter_nodes(model.graph)}


def to_proto(model: Model, *, value_info: bool = False) -> onnx.ModelProto:
    """Export ``model`` to a ModelProto.

    Opset imports come from ``model.opsets`` (plus version 1 for any custom domain a node uses
    that is not declared); the IR version is raised to the minimum the opsets need. Intermediate
    ``value_info`` is dropped unless ``value_info`` is set: it is derived data that passes can make
    stale, and ``check_model(full_check=True)`` rejects stale shapes.
    """
    graph_proto = export_graph(model.graph, value_info=value_info)
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


def _min_ir_version(opsets: dict[str, int]) -> int:
    """Minimum IR version for the default-domain opset (custom domains impose nothing)."""
    default = opsets.get(ONNX_DOMAIN, MIN_OPSET)
    try:
        return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid(ONNX_DOMAIN, default)], ignore_unknown=True)
    except Exception:  # unknown future opset: keep what the model says
        return 3


def check(model: Model, *, full: bool = True) -> None:
    """Run the ONNX checker (``full_check`` includes strict shape inference).

    Raises:
        InvalidModelError: naming the model and the checker's first message line.
    """
    proto = to_proto(model)
    try:
        if proto.ByteSize() >= PROTO_LIMIT:
            log.warning("%s: model exceeds 2 GiB; checker skipped in memory", model.source)
            return
        onnx.checker.check_model(proto, full_check=full)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidModelError(f"{model.source}: fails the ONNX checker: {first}") from e


def _initializer_bytes(proto: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in exdata._get_all_tensors(proto))


def save(model: Model | onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None) -> Path:
    """Write ``model`` to ``path`` atomically and deterministically.

    Args:
        model: the model (or a ModelProto).
        path: destination ``.onnx`` file.
        external_data: write weights to ``<name>.data`` beside the model. ``None`` (default) does so
            only when the model would exceed the 2 GiB protobuf limit.

    Returns:
        The written path.
    """
    path = Path(path)
    with gc_paused():
        proto = model if isinstance(model, onnx.ModelProto) else to_proto(model)
    if external_data is None:
        external_data = _initializer_bytes(proto) >= PROTO_LIMIT - 64 * 2**20
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data:
        _save_with_external_data(proto, path)
    else:
        _atomic_write(path, proto.SerializeToString())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_with_external_data(proto: onnx.ModelProto, path: Path, threshold: int = 1024) -> None:
    """Move every initializer of at least ``threshold`` bytes to ``<model>.data`` (one file).

    Offsets are aligned to 4 KiB so the data can be memory-mapped; order follows the graph, so the
    output is deterministic. The data file is renamed into place before the model that points to it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    location = f"{path.name}.data"
    fd, tmp_data = tempfile.mkstemp(dir=path.parent, prefix=f".{location}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            offset = 0
            for tensor in exdata._get_all_tensors(out):
                if not tensor.HasField("raw_data") or len(tensor.raw_data) < threshold:
                    continue
                pad = (-offset) % 4096
                f.write(b"\0" * pad)
                offset += pad
                data = tensor.raw_data
                f.write(data)
                exdata.set_external_data(tensor, location=location, offset=offset, length=len(data))
                tensor.data_location = onnx.TensorProto.EXTERNAL
                tensor.ClearField("raw_data")
                offset += len(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_data, 0o644)
        os.replace(tmp_data, path.parent / location)
    except BaseException:
        Path(tmp_data).unlink(missing_ok=True)
        raise
    _atomic_write(path, out.SerializeToString())


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
