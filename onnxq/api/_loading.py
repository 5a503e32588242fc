"""Loading models for a conversion and checking what onnxq writes: the gaps :func:`onnxq.ir.load` leaves.

- Sparse initializers: onnx-graphsurgeon densifies them as float64 zeros (it reads neither
  ``raw_data`` values nor ``raw_data`` indices), so the graph then mixes float64 and float32 and
  every sparse weight reads as zero. They are densified here, with their own dtype, before the IR
  sees them. (This belongs in ``onnxq.ir``'s loader; it lives here until the loader does it.)
- IR version 3 requires every initializer to be listed as a graph input too; onnxq's exporter never
  does that, so a model it rewrites is written with IR version 4 at least (which dropped the rule
  and which every runtime reading IR 3 also reads).
- An external-data location with a NUL byte makes ``os`` functions raise a bare ``ValueError``; it
  becomes an :class:`InvalidModelError` naming the initializer.
- :func:`check_output`: a model onnxq produced that fails the checker is onnxq's bug, reported as
  such, never as a problem of the input file.

Finding sparse initializers must not cost a second parse of a large model, so the file's protobuf
wire format is scanned: ``ModelProto.graph`` (field 7) and, inside it, ``sparse_initializer``
(field 15), skipping every other field by its length.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.external_data_helper as exdata
from onnx import numpy_helper

from .. import ir
from ..errors import InternalError, InvalidModelError

__all__ = ["load_model", "external_data_files", "raise_ir_floor", "check_output", "MIN_WRITTEN_IR", "MAX_DENSE_BYTES"]

#: Lowest IR version onnxq writes (IR 3 wants initializers listed as graph inputs; see above).
MIN_WRITTEN_IR = 4
#: Largest tensor a sparse initializer may densify to: a crafted one can declare any shape.
MAX_DENSE_BYTES = 2 * 2**30

_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_SPARSE_INITIALIZER = 15  # GraphProto.sparse_initializer
_LEN = 2  # wire type of length-delimited fields


def load_model(source: Any) -> ir.Model:
    """:func:`onnxq.ir.load`, plus sparse initializers densified and NUL bytes in external-data
    locations named.

    Raises:
        InvalidModelError: as :func:`onnxq.ir.load`, and for unreadable or absurd sparse initializers.
    """
    if not isinstance(source, (str, os.PathLike)):
        return ir.load(source)
    path = Path(source)
    if path.is_file() and _has_sparse_initializers(path):
        return _load_densified(path)
    try:
        return ir.load(path)
    except ValueError:  # a NUL byte in an external-data location reaches os functions: name it
        _refuse_bad_locations(path)
        raise  # any other ValueError is a bug


def external_data_files(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """``(tensor name, file)`` for every external-data reference of the model file at ``path``.

    Locations are joined to the model's folder as written (not validated: the loader refuses unsafe
    ones). Reading the whole model is avoided unless the file mentions an external-data
    ``location`` at all. Unreadable files give an empty list (the loader reports them).
    """
    path = Path(path)
    try:
        if not _mentions(path, b"location"):
            return []
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not a model: the loader says why, with the file's name
        return []
    found = []
    for tensor in exdata._get_all_tensors(proto):
        if exdata.uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if location and "\0" not in location:
                found.append((tensor.name, path.parent / location))
    return found


def raise_ir_floor(model: ir.Model) -> ir.Model:
    """Make ``model`` (a copy onnxq rewrites) export with IR version 4 or newer; returns it."""
    if model.ir_version < MIN_WRITTEN_IR:
        model.ir_version = MIN_WRITTEN_IR
    return model


def check_output(model: ir.Model, made_from: str, what: str = "output") -> None:
    """Run the full ONNX checker on a model onnxq produced.

    Raises:
        InternalError: the model fails; the message names onnxq's ``what`` made from ``made_from``
            as the invalid model, never the input.
    """
    source = model.source
    model.source = f"onnxq's {what} for '{made_from}'"
    try:
        ir.check(model, full=True)
    except InvalidModelError as e:
        raise InternalError(f"{e} (a bug in onnxq, not a problem of the input; please report it)") from e
    finally:
        model.source = source


def _mentions(path: Path, needle: bytes) -> bool:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(needle) >= 0


def _refuse_bad_locations(path: Path) -> None:
    """Raise :class:`InvalidModelError` naming the first external-data location with a NUL byte."""
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not parseable: the original error stands
        return
    for tensor in exdata._get_all_tensors(proto):
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        if "\0" in location:
            raise InvalidModelError(f"{path}: initializer '{tensor.name}': external-data location {location!r} contains a NUL byte")


def _varint(data: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, value start, value end)`` of one message's top-level fields."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(data, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            after = pos + size
        elif wire == 5:
            after = pos + 4
        else:  # groups (3, 4) are not used by onnx.proto
            raise ValueError(f"unexpected wire type {wire}")
        if after > end:
            raise ValueError("field runs past its message")
        yield number, wire, pos, after
        pos = after


def _has_sparse_initializers(path: Path) -> bool:
    """Whether the main graph has sparse initializers (False for files that are not protobuf)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return False
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                for number, wire, start, end in _fields(data, 0, len(data)):
                    if number == _MODEL_GRAPH and wire == _LEN:
                        return any(n == _GRAPH_SPARSE_INITIALIZER and w == _LEN for n, w, _, _ in _fields(data, start, end))
    except (OSError, ValueError, IndexError):  # not protobuf / unreadable: the loader says why
        return False
    return False


def _load_densified(path: Path) -> ir.Model:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception:  # protobuf's DecodeError: let the loader word it
        return ir.load(path)
    if any(exdata.uses_external_data(t) for t in exdata._get_all_tensors(proto)):
        raise InvalidModelError(f"{path}: sparse initializers together with external data are not supported; densify the sparse initializers first")
    graph = proto.graph
    graph.initializer.extend(_densified(sparse, path) for sparse in graph.sparse_initializer)
    del graph.sparse_initializer[:]
    return ir.from_proto(proto, source=str(path), base_dir=path.parent)


def _densified(sparse: onnx.SparseTensorProto, path: Path) -> onnx.TensorProto:
    """The dense tensor a sparse initializer stands for (indices: ``[NNZ]`` linear or ``[NNZ, rank]``)."""
    name = sparse.values.name
    where = f"{path}: sparse initializer '{name}'"
    try:
        values = numpy_helper.to_array(sparse.values).reshape(-1)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    except (ValueError, TypeError) as e:
        raise InvalidModelError(f"{where}: cannot read its values or indices ({e})") from e
    dims = tuple(int(d) for d in sparse.dims)
    size = int(np.prod(dims, dtype=np.float64)) if dims else 1
    nbytes = size * values.dtype.itemsize
    if any(d < 0 for d in dims) or nbytes > MAX_DENSE_BYTES:
        raise InvalidModelError(f"{where}: shape {list(dims)} would densify to {nbytes / 2**30:.1f} GiB (limit {MAX_DENSE_BYTES // 2**30} GiB)")
    if indices.ndim == 2 and indices.shape[1] == len(dims) and dims:
        if (indices < 0).any() or (indices >= np.array(dims)).any():
            raise InvalidModelError(f"{where}: an index lies outside its shape {list(dims)}")
        flat = np.ravel_multi_index(tuple(indices.T), dims) if len(indices) else np.zeros(0, np.int64)
    elif indices.ndim == 1:
        flat = indices
    else:
        raise InvalidModelError(f"{where}: indices of shape {list(indices.shape)}, expected [{len(values)}] or [{len(values)}, {len(dims)}]")
    if len(flat) != len(values) or (len(flat) and (flat.min() < 0 or flat.max() >= size)):
        raise InvalidModelError(f"{where}: {len(values)} values but {len(flat)} indices, or an index outside 0..{size - 1}")
    dense = np.zeros(size, dtype=values.dtype)
    dense[flat] = values
    return numpy_helper.from_array(dense.reshape(dims), name)
