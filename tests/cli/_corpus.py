"""The bad-input corpus: small generators of broken models, data and command lines, and one check.

Everything is generated at test time in the test's temporary folder (no committed binaries). A case
is one line in a table: an id, a function that writes its files into a folder and returns the
command line, and a regular expression the one error line must match (it names the file, node or
tensor concerned). :func:`assert_refused` then checks the whole promise:

- exit code 2 and exactly one line on stderr, starting ``error:`` (no traceback, no ``internal error``);
- every file in the folder byte-identical afterwards and no file added: no output, no temporary
  file, no modified input (model, external data, data, ranges, recipe, report);
- nothing unpickled (a marker file a pickled payload would create does not exist);
- the run took less than :data:`TIME_LIMIT_S`.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models import build
from tests.helpers import invoke

#: Seconds one refused run may take.
TIME_LIMIT_S = 20.0
#: Name of the file a pickled payload creates when unpickled (it must never exist).
MARKER = "UNPICKLED"
#: Input width of the ``mlp`` test model (its input is ``input`` float32 [N, 32]).
MLP_IN = 32


@dataclass(frozen=True)
class Case:
    """One bad input: ``make(folder)`` writes the files and returns the command line."""

    id: str
    make: Callable[[Path], list[str]]
    expect: str

    def __repr__(self) -> str:  # pytest ids
        return self.id


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


# --- checking -------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file (``<dir>`` for folders, the target for symlinks)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"-> {path.readlink()}"
        elif path.is_dir():
            found[key] = "<dir>"
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = "<special>"
    return found


def assert_refused(folder: Path, args: list[str], expect: str) -> str:
    """Run ``onnxq *args`` and check the promise (see the module docstring); return the error line."""
    before = snapshot(folder)
    start = time.perf_counter()
    code, stdout, stderr = invoke(*args)
    seconds = time.perf_counter() - start
    lines = stderr.strip().splitlines()
    assert code == 2, f"exit code {code}, stderr: {stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    line = lines[0]
    assert line.startswith("error: ") and "internal error" not in line and "Traceback" not in stderr, line
    assert re.search(expect, line), f"{expect!r} not in {line!r}"
    after = snapshot(folder)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not (folder / MARKER).exists(), "a pickled payload was unpickled"
    assert seconds < TIME_LIMIT_S, f"took {seconds:.1f} s"
    return line


def assert_ok(args: list[str]) -> str:
    """Run ``onnxq *args`` and require success; return stdout."""
    code, stdout, stderr = invoke(*args)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return stdout


# --- models ---------------------------------------------------------------------------------------


@functools.cache
def _mlp_bytes() -> bytes:
    return build("mlp").SerializeToString()


def mlp_proto() -> onnx.ModelProto:
    """A fresh copy of the ``mlp`` model (input [N, 32] → logits)."""
    proto = onnx.ModelProto()
    proto.ParseFromString(_mlp_bytes())
    return proto


def write(folder: Path, name: str, content: bytes | str | onnx.ModelProto) -> str:
    """Write ``content`` to ``folder/name``; return the path as a string."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, onnx.ModelProto):
        content = content.SerializeToString()
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return str(path)


def mlp(folder: Path, name: str = "mlp.onnx") -> str:
    return write(folder, name, mlp_proto())


def edited(edit: Callable[[onnx.ModelProto], object]) -> onnx.ModelProto:
    """``mlp_proto()`` after ``edit`` changed it."""
    proto = mlp_proto()
    edit(proto)
    return proto


def parsed(text: str) -> onnx.ModelProto:
    """A model from onnx's text syntax, not checked (it is meant to be broken)."""
    return onnx.parser.parse_model(text)


def graph_text(body: str, opset: int = 17, domains: str = "") -> str:
    return f'<ir_version: 8, opset_import: ["" : {opset}{domains}]>\ng (float[1, 4] x) => (float[1, 4] y) {{\n{body}\n}}'


def with_external(folder: Path, *, location: str = "weights.bin", offset: int | None = None, length: int | None = None,
                  write_data: bool = True, name: str = "ext.onnx") -> str:  # fmt: skip
    """The mlp with its first initializer in an external file (``location`` as given, unchecked)."""
    proto = mlp_proto()
    tensor = proto.graph.initializer[0]
    raw = tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": offset, "length": length}
    for key, value in entries.items():
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    if write_data and "\0" not in location and not Path(location).is_absolute() and ".." not in location:
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        (folder / location).write_bytes(raw)
    return write(folder, name, proto)


def saved_with_external_data(folder: Path, name: str = "big.onnx", data: str = "big.data") -> tuple[str, str]:
    """The mlp saved by onnx with every initializer in ``data``: (model path, data path)."""
    onnx.save(mlp_proto(), str(folder / name), save_as_external_data=True, location=data, size_threshold=0)
    return str(folder / name), str(folder / data)


def old_model() -> onnx.ModelProto:
    """IR 3 / opset 7: Conv → Relu → Reshape → MatMul → Add, initializers listed as graph inputs."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(np.zeros(8, np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((512, 10)).astype(np.float32), "W2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "B2"),
        numpy_helper.from_array(np.array([1, 512], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "W2"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "B2"], ["y"], name="bias"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    proto.ir_version = 3
    onnx.checker.check_model(proto, full_check=True)
    return proto


def sparse_model(dims: tuple[int, int] = (32, 16), *, dense_dims: bool = True) -> tuple[onnx.ModelProto, np.ndarray]:
    """x[1, 32] @ W where W is a sparse initializer (values and indices in raw_data): (model, W)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((32, 16)).astype(np.float32)
    weight[np.abs(weight) < 1.0] = 0
    flat = np.flatnonzero(weight)
    values = numpy_helper.from_array(weight.reshape(-1)[flat], "W")
    indices = numpy_helper.from_array(flat.astype(np.int64), "W_indices")
    sparse = helper.make_sparse_tensor(values, indices, list(dims))
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")
    graph = helper.make_graph([node], "sparse", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])])  # fmt: skip
    graph.sparse_initializer.append(sparse)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto, weight


# --- data -----------------------------------------------------------------------------------------


class Payload:
    """Unpickling this creates the marker file: proof that data was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return pathlib.Path.touch, (self.marker,)


def pickled_npy(folder: Path, name: str = "evil.npy") -> str:
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array([Payload(folder / MARKER)], dtype=object), allow_pickle=True)
    return str(path)


def pickled_npz(folder: Path, name: str = "evil.npz") -> str:
    path = folder / name
    np.savez(path, input=np.array([Payload(folder / MARKER)], dtype=object))
    return str(path)


def raw_pickle(folder: Path, name: str = "evil.npy") -> str:
    import pickle

    return write(folder, name, pickle.dumps(Payload(folder / MARKER)))


def npy(folder: Path, name: str, array: np.ndarray) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return str(path)


def npz(folder: Path, name: str, **arrays: np.ndarray) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


def samples(n: int = 4, *, nan_at: int | None = None, inf: bool = False, dtype: type = np.float32) -> np.ndarray:
    """``n`` stacked mlp samples [n, 1, 32]; one value of sample ``nan_at`` is NaN (or Inf)."""
    array = np.random.default_rng(0).standard_normal((n, 1, MLP_IN)).astype(dtype)
    if nan_at is not None:
        array[nan_at, 0, 0] = np.inf if inf else np.nan
    return array


def npy_folder(folder: Path, name: str = "calib", n: int = 4, nan_at: int | None = None) -> str:
    """A folder of one-sample .npy files for the mlp."""
    for i, sample in enumerate(samples(n, nan_at=nan_at)):
        npy(folder / name, f"{i}.npy", sample)
    return str(folder / name)


def ranges_file(folder: Path, name: str = "ranges.json") -> str:
    """A well-formed (empty) ranges file: enough for cases that must be refused before reading it."""
    from onnxq.calibration.ranges import RangeSet

    RangeSet({}, model_name="mlp", method="minmax").save_json(folder / name)
    return str(folder / name)


def recipe(folder: Path, name: str = "recipe.toml") -> str:
    return write(folder, name, '[[passes]]\npass = "cleanup"\n\n[[passes]]\npass = "quantize-dynamic"\n')


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth
