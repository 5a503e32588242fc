"""Bad models, through every subcommand: one line, exit code 2, nothing written, nothing changed.

Unreadable models are run through every command that loads a model (the table times the
commands); models only some commands refuse have their own rows. Old and unusual models that
onnxq should handle (IR 3 / opset 7, sparse initializers, non-UTF-8 names) are converted and the
results checked with the full ONNX checker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.cli._corpus import (
    Case,
    assert_ok,
    assert_refused,
    edited,
    graph_text,
    ids,
    mlp,
    old_model,
    parsed,
    sparse_model,
    with_external,
    write,
)
from tests.helpers import run


def _set_opset(version: int) -> Callable[[onnx.ModelProto], None]:
    def edit(proto: onnx.ModelProto) -> None:
        proto.opset_import[0].version = version

    return edit


def _shrink_first_initializer(proto: onnx.ModelProto) -> None:
    tensor = proto.graph.initializer[0]
    tensor.raw_data = tensor.raw_data[:16]


def _symlinked_external(folder: Path) -> str:
    (folder / "secret.bin").write_bytes(b"\0" * 8192)
    (folder / "model").mkdir()
    (folder / "model" / "weights.bin").symlink_to(folder / "secret.bin")
    return with_external(folder / "model", write_data=False)


def _only_custom_domain(proto: onnx.ModelProto) -> None:
    proto.opset_import[0].domain = "com.acme"


#: Models no command can load: (id, writes the model and returns its path, what the line names).
UNLOADABLE: list[tuple[str, Callable[[Path], str], str]] = [
    ("missing", lambda d: str(d / "missing.onnx"), r"missing\.onnx.*does not exist"),
    ("folder", lambda d: (d / "dir.onnx").mkdir() or str(d / "dir.onnx"), r"dir\.onnx.*(folder|directory)"),
    ("empty", lambda d: write(d, "empty.onnx", b""), r"empty\.onnx.*empty"),
    ("random-bytes", lambda d: write(d, "random.onnx", np.random.default_rng(0).bytes(4096)), r"random\.onnx.*not (a valid ONNX|an ONNX)"),
    ("text", lambda d: write(d, "text.onnx", "hello, world\n"), r"text\.onnx.*(ONNX|protobuf)"),
    ("truncated", lambda d: write(d, "trunc.onnx", Path(mlp(d)).read_bytes()[:5000]), r"trunc\.onnx.*(ONNX|protobuf|truncated)"),
    ("cycle", lambda d: write(d, "cycle.onnx", parsed(graph_text("a = Add(x, b)\nb = Relu(a)\ny = Identity(b)"))), r"cycle\.onnx.*'b'"),
    ("dangling-input", lambda d: write(d, "dangling.onnx", parsed(graph_text("y = Add(x, nowhere)"))), r"dangling\.onnx.*'nowhere'"),
    ("duplicate-output", lambda d: write(d, "dup.onnx", parsed(graph_text("a = Relu(x)\na = Sigmoid(x)\ny = Identity(a)"))), r"dup\.onnx.*'a'"),
    ("missing-initializers", lambda d: write(d, "noinit.onnx", edited(lambda p: p.graph.ClearField("initializer"))), r"noinit\.onnx.*'layer1/fc/weight'"),
    ("unknown-op", lambda d: write(d, "unknown.onnx", parsed(graph_text("y = Foo(x)"))), r"unknown\.onnx.*Foo"),
    ("opset-too-new", lambda d: write(d, "new.onnx", edited(_set_opset(99))), r"new\.onnx.*opset 99"),
    ("opset-too-old", lambda d: write(d, "old.onnx", edited(_set_opset(3))), r"old\.onnx.*opset 3"),
    ("ir-too-new", lambda d: write(d, "ir.onnx", edited(lambda p: setattr(p, "ir_version", 99))), r"ir\.onnx.*IR version 99"),
    ("no-default-opset", lambda d: write(d, "nodomain.onnx", edited(_only_custom_domain)), r"nodomain\.onnx.*(default|opset)"),
    ("short-raw-data", lambda d: write(d, "short.onnx", edited(_shrink_first_initializer)), r"short\.onnx.*layer1/fc/weight"),
    ("ext-traversal", lambda d: with_external(d, location="../../etc/passwd"), r"ext\.onnx.*layer1/fc/weight.*escapes"),
    ("ext-absolute", lambda d: with_external(d, location="/etc/passwd"), r"ext\.onnx.*layer1/fc/weight.*absolute"),
    ("ext-symlink-out", _symlinked_external, r"ext\.onnx.*layer1/fc/weight.*escapes"),
    ("ext-missing-file", lambda d: with_external(d, write_data=False), r"ext\.onnx.*layer1/fc/weight.*weights\.bin.*not found"),
    ("ext-length-too-long", lambda d: with_external(d, length=10**9), r"ext\.onnx.*layer1/fc/weight.*weights\.bin"),
    ("ext-offset-past-end", lambda d: with_external(d, offset=10**6), r"ext\.onnx.*layer1/fc/weight.*weights\.bin"),
    ("ext-wrong-length", lambda d: with_external(d, length=16), r"ext\.onnx.*layer1/fc/weight"),
    ("ext-nul-byte", lambda d: with_external(d, location="a\0b.bin"), r"ext\.onnx.*layer1/fc/weight.*NUL"),
    ("sparse-absurd-shape", lambda d: write(d, "sparse.onnx", sparse_model((10**6, 10**6))[0]), r"sparse\.onnx.*'W'.*GiB"),
    ("sparse-index-outside", lambda d: write(d, "sparse.onnx", sparse_model((4, 4))[0]), r"sparse\.onnx.*'W'"),
]  # fmt: skip

#: Every command that loads a model: (name, command line for model ``m`` writing into folder ``d``).
COMMANDS: list[tuple[str, Callable[[str, Path], list[str]]]] = [
    ("inspect", lambda m, d: ["inspect", m]),
    ("optimize", lambda m, d: ["optimize", m, "-o", str(d / "out.onnx"), "--report", str(d / "rep.json")]),
    ("convert", lambda m, d: ["convert", m, "-o", str(d / "out.onnx"), "--mode", "dynamic", "--report", str(d / "rep.json")]),
    ("convert-static", lambda m, d: ["convert", m, "-o", str(d / "out.onnx"), "--data", "synthetic:2", "--dim", "N=1", "--no-tune"]),
    ("calibrate", lambda m, d: ["calibrate", m, "--data", "synthetic:2", "--dim", "N=1", "-o", str(d / "r.json")]),
    ("prune", lambda m, d: ["prune", m, "-o", str(d / "out.onnx"), "--method", "magnitude", "--sparsity", "0.5"]),
    ("eval", lambda m, d: ["eval", m, m, "--data", "synthetic:2", "--dim", "N=1", "--report", str(d / "rep.json")]),
    ("bench", lambda m, d: ["bench", m, "--runs", "1", "--warmup", "0", "--report", str(d / "rep.json")]),
]  # fmt: skip


@pytest.mark.parametrize("command", [c for c in COMMANDS], ids=[c[0] for c in COMMANDS])
@pytest.mark.parametrize("model", UNLOADABLE, ids=[m[0] for m in UNLOADABLE])
def test_unloadable_model(tmp_path: Path, model: tuple, command: tuple) -> None:
    _, make, expect = model
    path = make(tmp_path)
    assert_refused(tmp_path, command[1](path, tmp_path), expect)


def _quantized(d: Path) -> str:
    src = mlp(d)
    assert_ok(["convert", src, "-o", str(d / "q.onnx"), "--data", "synthetic:2", "--dim", "N=1", "--no-tune"])
    os.remove(src)
    return str(d / "q.onnx")


def _string_input(d: Path) -> str:
    text = '<ir_version: 8, opset_import: ["" : 17]>\ng (string[1] s) => (string[1] y) {\ny = Identity(s)\n}'
    return write(d, "strings.onnx", parsed(text))


def _tokens(d: Path) -> str:
    text = (
        '<ir_version: 8, opset_import: ["" : 17]>\ng (int64[1, 4] ids) => (float[1, 4, 8] y) '
        "<float[10, 8] table = {" + ", ".join(["0.5"] * 80) + "}> {\ny = Gather(table, ids)\n}"
    )
    return write(d, "tokens.onnx", parsed(text))


def _huge_input(d: Path) -> str:
    proto = edited(lambda p: p.graph.input[0].type.tensor_type.shape.dim[0].ClearField("dim_param"))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2**31
    return write(d, "huge.onnx", proto)


def _custom_domain(d: Path) -> str:
    return write(d, "custom.onnx", parsed(graph_text("y = com.acme.Foo(x)", domains=', "com.acme" : 1')))


def _out(d: Path) -> str:
    return str(d / "out.onnx")


#: Models some commands refuse (or cannot run) while others accept them.
MODEL_CASES = [
    Case("already-quantized-static", lambda d: ["convert", _quantized(d), "-o", _out(d), "--data", "synthetic:2"], r"q\.onnx.*already quantized"),
    Case("already-quantized-dynamic", lambda d: ["convert", _quantized(d), "-o", _out(d), "--mode", "dynamic"], r"q\.onnx.*already quantized"),
    Case("already-quantized-weight-only", lambda d: ["convert", _quantized(d), "-o", _out(d), "--mode", "weight-only"], r"q\.onnx.*already quantized"),
    Case("string-input-synthetic", lambda d: ["calibrate", _string_input(d), "--data", "synthetic:2", "-o", str(d / "r.json")], r"input 's'"),
    Case("int64-ids-past-vocab", lambda d: ["calibrate", _tokens(d), "--data", "synthetic:2", "-o", str(d / "r.json")], r"tokens\.onnx.*#0.*out of data"),
    Case("declared-shape-900GB", lambda d: ["calibrate", _huge_input(d), "--data", "synthetic:1", "-o", str(d / "r.json")], r"input 'input'.*GiB"),
    Case("dim-900GB", lambda d: ["calibrate", mlp(d), "--data", "synthetic:1", "--dim", "N=10000000000", "-o", str(d / "r.json")], r"input 'input'.*GiB"),
    Case("unknown-domain-calibrate", lambda d: ["calibrate", _custom_domain(d), "--data", "synthetic:1", "-o", str(d / "r.json")], r"custom\.onnx.*com\.acme"),
    Case("bench-huge-input", lambda d: ["bench", _huge_input(d), "--runs", "1"], r"input 'input'.*GiB"),
]  # fmt: skip


@pytest.mark.parametrize("case", MODEL_CASES, ids=ids(MODEL_CASES))
def test_model_refused(tmp_path: Path, case: Case) -> None:
    assert_refused(tmp_path, case.make(tmp_path), case.expect)


# --- old and unusual models that should work ------------------------------------------------------


@pytest.mark.parametrize("mode", ["static", "dynamic", "weight-only", "fp16"])
def test_ir3_opset7_model_converts_and_passes_the_checker(tmp_path: Path, mode: str) -> None:
    src = write(tmp_path, "old.onnx", old_model())
    out = tmp_path / "out.onnx"
    extra = ["--data", "synthetic:2", "--no-tune"] if mode == "static" else []
    assert_ok(["convert", src, "-o", str(out), "--mode", mode, *extra])
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    if mode == "static":  # the opset upgrade (7 → 17) made per-channel Q/DQ possible
        assert written.opset_import[0].version >= 13 and "QuantizeLinear" in {n.op_type for n in written.graph.node}
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref, got = run(src, {"x": x})[0], run(out, {"x": x})[0]
    assert np.abs(ref - got).max() < 0.1 * np.abs(ref).max()


@pytest.mark.parametrize("command", ["optimize", "prune", "calibrate"])
def test_ir3_opset7_model_other_commands(tmp_path: Path, command: str) -> None:
    src = write(tmp_path, "old.onnx", old_model())
    out = tmp_path / ("out.json" if command == "calibrate" else "out.onnx")
    args = {"optimize": [], "prune": ["--method", "magnitude", "--sparsity", "0.5"], "calibrate": ["--data", "synthetic:2"]}[command]
    assert_ok([command, src, "-o", str(out), *args])
    if command != "calibrate":
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_sparse_initializers_are_densified_with_their_dtype(tmp_path: Path) -> None:
    proto, weight = sparse_model()
    src = write(tmp_path, "sparse.onnx", proto)
    summary = json.loads(assert_ok(["inspect", src, "--json"]))
    assert summary["sparsity"]["overall"] == pytest.approx(float((weight == 0).mean()), abs=1e-3)
    assert set(summary["parameters"]["by_dtype"]) == {"float32"}
    x = np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32)
    for mode, extra, tol in [("fp16", [], 1e-2), ("dynamic", [], 0.2), ("static", ["--data", "synthetic:4", "--no-tune"], 0.2)]:
        out = tmp_path / f"{mode}.onnx"
        assert_ok(["convert", src, "-o", str(out), "--mode", mode, *extra])
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)
        assert np.abs(run(out, {"x": x})[0] - x @ weight).max() < tol * np.abs(x @ weight).max(), mode


def test_non_utf8_file_names_work(tmp_path: Path) -> None:
    folder = os.fsdecode(bytes(tmp_path) + b"/\xff\xfe")
    os.mkdir(folder)
    src = write(Path(folder), "m\udcff.onnx", Path(mlp(tmp_path)).read_bytes())
    out = os.path.join(folder, "out\udcfe.onnx")
    stdout = assert_ok(["inspect", src])
    assert "\\xff" in stdout
    assert_ok(["convert", src, "-o", out, "--mode", "dynamic", "--report", out + ".json"])
    assert os.path.exists(out) and json.loads(Path(out + ".json").read_text())["model"] == src
