"""Weights that live outside the protobuf: external-data files mapped lazily, and size thresholds.

A protobuf message cannot exceed 2 GiB, and parsing one copies every byte of it. So a model with
external data is loaded by parsing only its ``.onnx`` (the graph) and binding each external
initializer to a read-only view of one ``np.memmap`` of its data file: nothing is read until a pass
uses the values, and weights nobody touches never enter RAM. Locations are validated before
anything is mapped: relative, inside the model's folder once symlinks are resolved, and with
``offset + length`` inside the file.

Each data file is opened once (:class:`DataFile`); the views, the saver's direct copies
(:func:`region_of`) and the hard links of session folders all read that open inode, so they stay
correct when the path is later replaced by a new save.

Page budget: a mapped page that was read stays in the process's resident set until unmapped. It
is clean page cache the kernel can drop, but peak RSS counts it, so a pass reading every weight
once (quantization, pruning) would end with the whole file resident. :func:`note_read` keeps the
most recently read regions up to :data:`RESIDENT_BYTES` and releases older ones with
``MADV_DONTNEED`` — always safe on a read-only shared file mapping: the next read faults the page
back in from the page cache.
"""

from __future__ import annotations

import logging
import mmap
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx

from ..errors import InvalidModelError

__all__ = [
    "PROTO_LIMIT",
    "LARGE_MODEL_BYTES",
    "SERIALIZE_BYTES",
    "EXTERNAL_MIN_BYTES",
    "RESIDENT_BYTES",
    "DataFile",
    "Region",
    "DataFiles",
    "external_info",
    "region_of",
    "register",
    "note_read",
    "release_resident",
    "packed_bits",
    "stored_nbytes",
]

log = logging.getLogger(__name__)

#: A protobuf message cannot exceed 2 GiB.
PROTO_LIMIT = 2**31 - 1
#: Weights above this many bytes make a model "large": it is saved with external data, and checked,
#: shape-inferred and given to onnxruntime without ever building one ModelProto holding the weights.
#: 64 MiB below the protobuf limit leaves room for the graph itself. Tests lower it (monkeypatch
#: this attribute) to run the large path on small models.
LARGE_MODEL_BYTES = PROTO_LIMIT - 64 * 2**20
#: Weights above this many bytes are never serialized for internal uses (checker, shape inference,
#: onnxruntime sessions, size reports): a protobuf copy would cost their size twice over. Those run
#: on the weightless graph or from a path instead. Saving still writes one file up to the limit.
SERIALIZE_BYTES = 256 * 2**20
#: Tensors of at least this many bytes go to the data file when writing external data.
EXTERNAL_MIN_BYTES = 1024
#: Mapped weight pages kept resident after reading (see the module docstring).
RESIDENT_BYTES = 256 * 2**20
#: Element types ONNX packs below one byte per value (bits per value).
_PACKED_BITS: dict[int, int] = {
    onnx.TensorProto.INT4: 4,
    onnx.TensorProto.UINT4: 4,
    onnx.TensorProto.FLOAT4E2M1: 4,
    onnx.TensorProto.INT2: 2,
    onnx.TensorProto.UINT2: 2,
    onnx.TensorProto.FLOAT6E2M3: 6,
    onnx.TensorProto.FLOAT6E3M2: 6,
}


def packed_bits(data_type: int) -> int | None:
    """Bits per value of a sub-byte ONNX element type, None for the others."""
    return _PACKED_BITS.get(data_type)


def stored_nbytes(data_type: int, count: int) -> int:
    """Bytes ``count`` values of ``data_type`` occupy in ``raw_data`` / a data file."""
    bits = _PACKED_BITS.get(data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize


class DataFile:
    """One external-data file, opened once and mapped once (read-only) for every tensor in it."""

    def __init__(self, path: Path | None, file: BinaryIO | None = None) -> None:
        self.path = path
        # Lives as long as the views and regions using it; ``file`` is an open scratch file (no path).
        self.file = file if file is not None else open(path, "rb")  # type: ignore[arg-type]  # noqa: SIM115
        st = os.fstat(self.file.fileno())
        self.size = st.st_size
        self.identity = (st.st_dev, st.st_ino)
        self._map: np.memmap | None = None

    @property
    def fd(self) -> int:
        return self.file.fileno()

    def view(self, offset: int, length: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A read-only array over ``[offset, offset + length)``; pages are read on first touch."""
        if self._map is None:
            self._map = np.memmap(self.file, dtype=np.uint8, mode="r")
        return self._map[offset : offset + length].view(dtype).reshape(shape)

    def read(self, offset: int, length: int) -> bytes:
        """The bytes of a region, read with ``pread`` (no mapping touched)."""
        return os.pread(self.fd, length, offset)

    def is_at_path(self) -> bool:
        """True while :attr:`path` still names this file (a later save may have replaced it)."""
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def release(self, offset: int, length: int) -> None:
        """Drop the mapped pages of a region from the resident set (they stay in the page cache)."""
        mm = getattr(self._map, "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED") or length <= 0:
            return
        start = offset - offset % mmap.PAGESIZE
        end = min(offset + length, self.size)
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError) as e:  # a closed map or an old kernel: memory stays as it was
            log.debug("madvise(%s, %d, %d) failed: %s", self.path, start, end - start, e)


@dataclass(frozen=True)
class Region:
    """Where a tensor's bytes are: ``length`` bytes at ``offset`` of ``file``."""

    file: DataFile
    offset: int
    length: int

    def read(self) -> bytes:
        return self.file.read(self.offset, self.length)


#: id(array) → (weak reference to it, its region), for arrays bound at load time.
_REGIONS: dict[int, tuple[weakref.ref[np.ndarray], Region]] = {}
#: Regions read recently (resident), oldest first.
_RESIDENT: OrderedDict[int, Region] = OrderedDict()


def region_of(values: Any) -> Region | None:
    """The file region ``values`` is an unmodified view of, or None.

    Only the arrays bound by :class:`DataFiles` qualify (views of them, e.g. a transpose, do not):
    they are read-only, so their bytes are the file's.
    """
    entry = _REGIONS.get(id(values))
    if entry is None or entry[0]() is not values:
        return None
    return entry[1]


def register(array: np.ndarray, region: Region) -> None:
    """Record that ``array`` (read-only) holds exactly the bytes of ``region`` (see :func:`region_of`)."""
    _REGIONS[id(array)] = (weakref.ref(array), region)
    weakref.finalize(array, _REGIONS.pop, id(array), None)


def note_read(values: Any) -> None:
    """Record that a pass read ``values``; release the oldest read regions beyond the budget."""
    region = region_of(values)
    if region is None:
        return
    key = id(values)
    _RESIDENT.pop(key, None)
    _RESIDENT[key] = region
    total = sum(r.length for r in _RESIDENT.values())
    while total > RESIDENT_BYTES and len(_RESIDENT) > 1:
        _, old = _RESIDENT.popitem(last=False)
        old.file.release(old.offset, old.length)
        total -= old.length


def release_resident() -> None:
    """Release every region read so far (e.g. before onnxruntime maps its own copy of the weights)."""
    while _RESIDENT:
        _, region = _RESIDENT.popitem(last=False)
        region.file.release(region.offset, region.length)


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    """A tensor's ``external_data`` entries as a dict."""
    return {e.key: e.value for e in tensor.external_data}


class DataFiles:
    """Validates external-data references of one model file and binds them to file regions.

    Args:
        model_path: the ``.onnx`` file; locations are resolved against its folder.
    """

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self.base = model_path.parent.resolve()
        self._open: dict[Path, DataFile] = {}

    def region(self, tensor: onnx.TensorProto, where: str) -> Region:
        """Validate ``tensor``'s external reference and return its region.

        Raises:
            InvalidModelError: no location, an absolute or escaping location, a missing file, or a
                region past the end of the file or of the wrong size.
        """
        info = external_info(tensor)
        location = info.get("location", "")
        if not location:
            raise InvalidModelError(f"{where} uses external data without a location")
        if os.path.isabs(location) or Path(location).is_absolute():
            raise InvalidModelError(f"{where}: external-data location '{location}' is absolute; only paths inside the model's folder are allowed")
        target = (self.base / location).resolve()
        if not target.is_relative_to(self.base):
            raise InvalidModelError(f"{where}: external-data location '{location}' escapes the model's folder")
        if not target.is_file():
            raise InvalidModelError(f"{where}: external-data file '{location}' not found next to the model")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError as e:
            raise InvalidModelError(f"{where}: external-data offset/length are not integers: {info}") from e
        data = self._file(target, where)
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        expected = self._expected(tensor, count, where)
        length = expected if length is None else length
        if offset < 0 or offset + length > data.size:
            raise InvalidModelError(f"{where}: external-data file '{location}' is truncated (needs {offset + length} bytes, has {data.size})")
        if length != expected:
            raise InvalidModelError(f"{where}: external data holds {length} bytes but dims {list(tensor.dims)} need {expected}")
        return Region(data, offset, length)

    def bind(self, tensor: onnx.TensorProto, where: str) -> np.ndarray | Region:
        """The values of an external tensor: a lazy read-only array, or (sub-byte types) its region."""
        region = self.region(tensor, where)
        if packed_bits(tensor.data_type) is not None:
            return region
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        shape = tuple(int(d) for d in tensor.dims)
        if region.length < mmap.PAGESIZE:  # smaller than a page: a mapping would save nothing
            return np.frombuffer(region.read(), dtype=dtype).reshape(shape).copy()
        array = region.file.view(region.offset, region.length, dtype, shape)
        register(array, region)
        return array

    def _file(self, target: Path, where: str) -> DataFile:
        if target not in self._open:
            try:
                self._open[target] = DataFile(target)
            except OSError as e:
                raise InvalidModelError(f"{where}: cannot open external-data file '{target.name}': {e}") from e
        return self._open[target]

    @staticmethod
    def _expected(tensor: onnx.TensorProto, count: int, where: str) -> int:
        if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
            raise InvalidModelError(f"{where}: external data of type {onnx.TensorProto.DataType.Name(tensor.data_type)} is not supported")
        try:
            return stored_nbytes(tensor.data_type, count)
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidModelError(f"{where}: unknown element type {tensor.data_type}") from e
