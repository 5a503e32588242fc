"""Writing models: atomic, deterministic, and streamed to an external-data file when large.

A model without external data is one protobuf, written to a hidden temp file and renamed over the
output (``os.replace`` is atomic): readers see the old file or the new one, never a torn one.

With external data (asked for, or a model above :data:`._external.LARGE_MODEL_BYTES`), initializers
of at least :data:`._external.EXTERNAL_MIN_BYTES` are streamed into the data file while the graph is
exported, so no protobuf ever holds them, at 4 KiB-aligned offsets in graph order (memory-mappable by
us and by onnxruntime). Weights still mapped from their source file are copied with ``pread`` through
a fixed buffer: weights no pass touched never enter RAM.

Atomic as a pair: the data file is named after its content, ``<name>.<sha256[:16]>.data``. It is
written under a hidden temp name and renamed to that fresh name, so the previous output's ``.onnx``
still points at its own, untouched data; renaming the new ``.onnx`` over the old is the single commit
point. Afterwards the previous output's data file is removed when it is ours (named after the
output, referenced by the old ``.onnx``, not by the new). Identical models give identical bytes.

Interruptions: any exception (KeyboardInterrupt included) removes the temp files. SIGTERM's default
action would kill the process without that cleanup, so while saving (in the main thread, when
SIGTERM has its default disposition) it raises :class:`Terminated` instead, a ``SystemExit`` that
unwinds through every cleanup and ends the process with status 143. SIGKILL cannot be caught: it
leaves hidden ``.<name>.*.tmp`` files and the previous output intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import numpy as np
import onnx
import onnx.external_data_helper as exdata
from onnx import numpy_helper

from . import _external
from ._external import EXTERNAL_MIN_BYTES, DataFile, Region, packed_bits, region_of, register, release_resident
from ._gs import Constant, LazyValues, SharedLazyValues, iter_constants, tensor_proto_of
from ._io import constant_nbytes, export_model, is_large, set_external, tensor_header, to_proto
from ._model import Model, gc_paused

__all__ = ["save", "move_model", "session_file", "spill_weights", "stored_size", "DataWriter", "Terminated", "SAVE_HOOK"]

log = logging.getLogger(__name__)

#: Copy / hash granularity.
CHUNK = 16 * 2**20
#: Offsets in data files are multiples of this (a page: mappable without copying).
ALIGN = 4096
#: Location written while the data file's final name is not known yet.
_PENDING = "onnxq-pending.data"
#: A ``.onnx`` larger than this holds its weights itself: it has no data file of ours to remove.
_SMALL_ONNX = 64 * 2**20

#: Test seam: called with a stage name while saving ("data" once a first tensor is written,
#: "commit" just before the ``.onnx`` is renamed into place). Tests pause or kill a save there.
SAVE_HOOK: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if SAVE_HOOK is not None:
        SAVE_HOOK(name)


def save(model: Model | onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None) -> Path:
    """Write ``model`` to ``path`` atomically and deterministically (see the module docstring).

    Args:
        model: the model (or a ModelProto).
        path: destination ``.onnx`` file.
        external_data: write weights to ``<name>.<digest>.data`` beside the model. ``None`` (default)
            does so only for a model too large for one protobuf.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gc_paused(), _sigterm_raises():
        previous = _our_data_files(path)
        if isinstance(model, onnx.ModelProto):
            location = _save_proto(model, path, external_data)
        elif external_data or (external_data is None and is_large(model)):
            location = _save_external(path, lambda writer: export_model(model, tensor_writer=writer))
        else:
            _atomic_write(path, to_proto(model).SerializeToString())
            location = None
        for stale in sorted(previous - {location}):
            (path.parent / stale).unlink(missing_ok=True)
    return path


def _save_proto(proto: onnx.ModelProto, path: Path, external_data: bool | None) -> str | None:
    if external_data is None:
        external_data = sum(len(t.raw_data) for t in exdata._get_all_tensors(proto)) >= _external.LARGE_MODEL_BYTES
    if not external_data:
        _atomic_write(path, proto.SerializeToString())
        return None

    def build(writer: DataWriter) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        for tensor in exdata._get_all_tensors(out):
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= EXTERNAL_MIN_BYTES:
                start, length = writer.append(memoryview(tensor.raw_data))
                set_external(tensor, _PENDING, start, length)
                tensor.ClearField("raw_data")
        return out

    return _save_external(path, build)


def _save_external(path: Path, build: Callable[[DataWriter], onnx.ModelProto]) -> str | None:
    """Write the data file under its content name, then commit the ``.onnx`` pointing at it.

    Returns:
        The data file's location (None when no tensor was large enough to go there).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".data.tmp")
    created: Path | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            writer = DataWriter(f)
            proto = build(writer)
            f.flush()
            os.fsync(f.fileno())
        location = f"{path.name}.{writer.digest()}.data" if writer.count else None
        if location is None:
            Path(tmp).unlink()
        else:
            _relocate(proto, location)
            target = path.parent / location
            if not target.exists():
                created = target  # ours to remove if the commit fails; an existing one has the same bytes
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        _stage("commit")
        _atomic_write(path, proto.SerializeToString())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if created is not None:
            created.unlink(missing_ok=True)
        raise
    return location


def _relocate(proto: onnx.ModelProto, location: str) -> None:
    """Point every tensor written as pending at the data file's final name."""
    for tensor in exdata._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == _PENDING:
                entry.value = location


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
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a crash after save must not bring the old names back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _our_data_files(path: Path) -> set[str]:
    """Data files the current output at ``path`` references and that onnxq named (``<name>[.<digest>].data``)."""
    try:
        if not path.is_file() or path.stat().st_size > _SMALL_ONNX:
            return set()
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # an unreadable previous output has nothing we can safely remove
        return set()
    ours = re.compile(re.escape(path.name) + r"(\.[0-9a-f]{16})?\.data")
    found = set()
    for tensor in exdata._get_all_tensors(proto):
        if exdata.uses_external_data(tensor):
            location = _external.external_info(tensor).get("location", "")
            if ours.fullmatch(location):
                found.add(location)
    return found


class Terminated(SystemExit):
    """SIGTERM arrived while saving.

    Raised by the handler :func:`_sigterm_raises` installs, it unwinds like any exception — every
    ``except``/``finally`` on the way removes its temp files — and, being a ``SystemExit``, ends
    the process with status 128 + 15, what a shell reports for a SIGTERM death, without a traceback.
    """


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Make SIGTERM raise :class:`Terminated` inside the block (main thread, default disposition only:
    a program with its own SIGTERM policy keeps it)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Terminated:
        log.warning("terminated while saving: temporary files removed, the previous output left as it was")
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def move_model(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move a model written by :func:`save` — its ``.onnx`` and its data file — to ``target``.

    For callers that save into a staging folder first: the pair is committed as :func:`save` commits
    it (data file under its content name first, the ``.onnx`` rename last; ``target``'s previous
    data file removed afterwards when ours). ``source`` and ``target`` must be on one filesystem.

    Returns:
        ``target``.
    """
    source, target = Path(source), Path(target)
    with _sigterm_raises():
        previous = _our_data_files(target)
        moved = sorted(_our_data_files(source))
        renamed = {loc: target.name + loc[len(source.name) :] for loc in moved}
        created: list[Path] = []
        try:
            for loc in moved:
                destination = target.parent / renamed[loc]
                if not destination.exists():
                    created.append(destination)
                os.replace(source.parent / loc, destination)
            if source.name == target.name or not moved:
                os.replace(source, target)
                _fsync_dir(target.parent)
            else:  # the data file's name starts with the model's: point the .onnx at the new name
                proto = onnx.load(str(source), load_external_data=False)
                for tensor in exdata._get_all_tensors(proto):
                    for entry in tensor.external_data:
                        if entry.key == "location" and entry.value in renamed:
                            entry.value = renamed[entry.value]
                _atomic_write(target, proto.SerializeToString())
                source.unlink()
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise
        for stale in sorted(previous - set(renamed.values())):
            (target.parent / stale).unlink(missing_ok=True)
    return target


class DataWriter:
    """A tensor writer (see :func:`._gs.export_graph`) streaming initializers into one data file.

    Args:
        f: the data file, open for writing at offset 0.
        digest: hash what is written (the content name of a saved data file).
        link_dir: for throw-away copies (session folders): reference weights still mapped from a
            source file through a hard link to that file in this folder instead of copying them.
    """

    def __init__(self, f: BinaryIO, *, digest: bool = True, link_dir: Path | None = None) -> None:
        self.f = f
        self.offset = 0
        self.count = 0
        self._hash = hashlib.sha256() if digest else None
        self._link_dir = link_dir
        self._links: dict[int, tuple[DataFile, str | None]] = {}
        self._buffer: bytearray | None = None

    def __call__(self, constant: Constant) -> onnx.TensorProto | None:
        if constant_nbytes(constant) < EXTERNAL_MIN_BYTES:
            return None
        header = tensor_header(constant)
        if header is None:
            return None
        values = constant._values
        region = values.region if isinstance(values, SharedLazyValues) else region_of(values)
        if region is not None and self._link_dir is not None:
            name = self._link(region.file)
            if name is not None:
                return set_external(header, name, region.offset, region.length)
        if region is not None:
            start, length = self._copy(region)
        else:
            start, length = self.append(_payload(constant, header.data_type))
        return set_external(header, _PENDING, start, length)

    def append(self, data: memoryview) -> tuple[int, int]:
        """Write ``data`` at the next aligned offset; returns (offset, length)."""
        start = self._align()
        for i in range(0, len(data), CHUNK):
            self._emit(data[i : i + CHUNK])
        return self._written(start)

    def digest(self) -> str:
        """The first 16 hex digits of the SHA-256 of everything written."""
        return self._hash.hexdigest()[:16] if self._hash is not None else ""

    def _copy(self, region: Region) -> tuple[int, int]:
        """Copy a region of a source file through a fixed buffer (its pages are never mapped in)."""
        start = self._align()
        if self._buffer is None:
            self._buffer = bytearray(CHUNK)
        view = memoryview(self._buffer)
        offset, left = region.offset, region.length
        while left:
            n = os.preadv(region.file.fd, [view[: min(left, CHUNK)]], offset)
            if n <= 0:
                raise OSError(f"{region.file.path}: ends before byte {offset + left} (was the file truncated?)")
            self._emit(view[:n])
            offset += n
            left -= n
        return self._written(start)

    def _align(self) -> int:
        pad = (-self.offset) % ALIGN
        if pad:
            self._emit(memoryview(bytes(pad)))
        return self.offset

    def _emit(self, chunk: memoryview) -> None:
        self.f.write(chunk)
        if self._hash is not None:
            self._hash.update(chunk)
        self.offset += len(chunk)

    def _written(self, start: int) -> tuple[int, int]:
        self.count += 1
        if self.count == 1:
            _stage("data")
        return start, self.offset - start

    def _link(self, source: DataFile) -> str | None:
        """A hard link to ``source`` in the link folder (None when links are not possible)."""
        assert self._link_dir is not None
        key, path = id(source), source.path
        if key not in self._links and path is None:  # a scratch file: nothing to link
            self._links[key] = (source, None)
        if key not in self._links and path is not None:
            name: str | None = f"source{len(self._links)}.data"
            target = self._link_dir / str(name)
            try:
                os.link(path, target)
                st = os.stat(target)
                if (st.st_dev, st.st_ino) != source.identity:  # the path now names another file
                    target.unlink()
                    name = None
            except OSError as e:  # another filesystem, no permission: copy instead
                log.debug("cannot hard-link %s: %s", source.path, e)
                name = None
            self._links[key] = (source, name)
        return self._links[key][1]


def _payload(constant: Constant, data_type: int) -> memoryview:
    """The bytes ONNX stores for an in-memory constant (packed for sub-byte types)."""
    values = constant._values
    if isinstance(values, LazyValues):
        proto = tensor_proto_of(constant)
        if not proto.HasField("raw_data"):  # typed fields (float_data, ...): re-encode as raw bytes
            proto = numpy_helper.from_array(numpy_helper.to_array(proto), constant.name)
        return memoryview(proto.raw_data)
    array = np.asarray(values)
    if packed_bits(data_type) is not None:
        return memoryview(numpy_helper.from_array(array, constant.name).raw_data)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    return array.reshape(-1).view(np.uint8).data


@contextlib.contextmanager
def session_file(model: Model) -> Iterator[Path]:
    """``model`` written with external data to a temporary folder, for onnxruntime to load by path.

    onnxruntime cannot take a model past 2 GiB as bytes. Weights still mapped from their source file
    are hard-linked, not copied, when the folder is on the same filesystem. The folder is removed on
    exit; a session created inside keeps what it mapped (Linux keeps unlinked files alive).
    """
    with tempfile.TemporaryDirectory(prefix="onnxq-session-") as tmp:
        folder = Path(tmp)
        data = "weights.data"
        with gc_paused(), open(folder / data, "wb") as f:
            proto = export_model(model, tensor_writer=DataWriter(f, digest=False, link_dir=folder))
        _relocate(proto, data)
        path = folder / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        release_resident()  # onnxruntime maps its own copy: ours need not stay resident too
        yield path


#: In-memory weights smaller than this are not worth spilling.
SPILL_MIN_BYTES = 2**20


def spill_weights(model: Model) -> int:
    """Move the model's in-memory weights to an anonymous scratch file and map them back, read-only.

    Before a large model is handed to onnxruntime (which holds its own copy of every weight), the
    weights passes computed in memory (smoothed, pruned, ...) would otherwise be resident twice.
    Spilled, they are clean file pages: out of the resident set until read again, and then
    droppable (see :func:`._external.note_read`). The scratch file has no name (it vanishes with
    the last view, even if the process is killed). Values are unchanged; every constant of ``model``
    holding one array gets the same view.

    Returns:
        The number of bytes spilled.
    """
    holders: dict[int, list[Constant]] = {}
    for constant in iter_constants(model.graph):
        values = constant._values
        if isinstance(values, np.ndarray) and not isinstance(values, np.memmap) and values.nbytes >= SPILL_MIN_BYTES and not values.dtype.hasobject:
            holders.setdefault(id(values), []).append(constant)
    if not holders:
        return 0
    scratch = tempfile.TemporaryFile(prefix="onnxq-spill-")  # noqa: SIM115 - owned by the DataFile below
    writer = DataWriter(scratch, digest=False)
    placed = []
    for constants in holders.values():
        array = np.asarray(constants[0]._values)
        contiguous = array if array.flags.c_contiguous else array.copy(order="C")
        placed.append((constants, array, writer.append(contiguous.reshape(-1).view(np.uint8).data)))
    scratch.flush()
    data = DataFile(None, scratch)
    for constants, array, (offset, length) in placed:
        view = data.view(offset, length, array.dtype, array.shape)
        if packed_bits(onnx.helper.np_dtype_to_tensor_dtype(array.dtype)) is None:  # ONNX stores these bytes as they are
            register(view, Region(data, offset, length))
        for constant in constants:
            constant._values = view
    return writer.offset


def stored_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a saved model on disk: the ``.onnx`` plus every data file it references (once)."""
    path = Path(path)
    size = path.stat().st_size
    if size > _SMALL_ONNX:
        return size
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return size
    locations = {_external.external_info(t).get("location", "") for t in exdata._get_all_tensors(proto) if exdata.uses_external_data(t)}
    for location in sorted(locations):
        target = path.parent / location
        if location and target.is_file():
            size += target.stat().st_size
    return size
