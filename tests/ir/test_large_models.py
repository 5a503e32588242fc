"""Models past the 2 GiB protobuf limit, exercised on a ~21 MB decoder with the limit lowered to 1 MiB.

The large path: external data mapped lazily on load, never one ModelProto holding the weights,
weights streamed to a content-named data file on save (atomic with the ``.onnx``), onnxruntime
sessions from a path, the checker and shape inference on the weightless graph. Every conversion's
output passes ``onnx.checker.check_model(path, full_check=True)`` and runs in onnxruntime from its
path, close to fp32 and identical to what the small (in-memory) path produces.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from benchmarks.bench_large import write_decoder
from onnxq import InvalidModelError, PreconditionError, ir
from onnxq.api import convert
from onnxq.cli import cli
from onnxq.ir import _external
from onnxq.runtime.session import make_session

ROOT = Path(__file__).resolve().parents[2]
#: The lowered limit: the ~21 MB test model is "large", its biggest tensor (4 MB) is not.
LIMIT = 2**20
FEEDS = {"input_ids": (np.arange(16, dtype=np.int64) * 31 % 4096).reshape(1, 16)}
#: Cosine of each conversion's logits with fp32 (random weights: int4 costs the most).
MIN_COSINE = {"weight-only": 0.93, "dynamic": 0.99, "fp16": 0.9999, "static": 0.98}


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 decoder blocks, hidden 256, vocab 4096: 21 MB of float32 weights in ``dec.onnx.data``."""
    return write_decoder(tmp_path_factory.mktemp("decoder") / "dec.onnx", layers=4, hidden=256, ffn=704, vocab=4096)


@pytest.fixture(scope="module")
def reference(decoder: Path) -> np.ndarray:
    return _run(decoder)


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_external, "LARGE_MODEL_BYTES", LIMIT)
    yield


def _run(path: Path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, FEEDS)[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _files(folder: Path, stem: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith(stem)}


def _weight(model: ir.Model, name: str) -> ir.Constant:
    return next(c for c in ir.iter_constants(model.graph) if c.name == name)


def test_load_maps_weights_without_reading_them(decoder: Path, large: None) -> None:
    model = ir.load(decoder)
    assert ir.is_large(model) and ir.weight_bytes(model) > 20 * 2**20
    lm_head = _weight(model, "lm_head")
    assert isinstance(lm_head._values, np.memmap) and not lm_head._values.flags.writeable
    assert lm_head.shape == (256, 4096)
    copy = ir.clone(model)  # clones share the mapped arrays: nothing is copied
    assert _weight(copy, "lm_head")._values is lm_head._values
    with pytest.raises(PreconditionError, match="do not fit one protobuf"):
        ir.to_proto(model)
    weightless = ir.to_proto(model, weights=False)
    assert weightless.ByteSize() < 64 * 1024
    assert {e.value for t in weightless.graph.initializer for e in t.external_data if e.key == "location"} == {ir.WEIGHTS_PLACEHOLDER}


def test_save_streams_weights_deterministically_and_atomically(decoder: Path, reference: np.ndarray, tmp_path: Path, large: None) -> None:
    first = ir.save(ir.load(decoder), tmp_path / "out.onnx")
    saved = _files(tmp_path, "out.onnx")
    ir.save(ir.load(decoder), tmp_path / "out.onnx")
    assert _files(tmp_path, "out.onnx") == saved  # byte-identical, and the same content name
    (data,) = (name for name in saved if name != "out.onnx")
    assert re.fullmatch(r"out\.onnx\.[0-9a-f]{16}\.data", data)
    proto = onnx.load(str(first), load_external_data=False)
    offsets = [int(e.value) for t in proto.graph.initializer for e in t.external_data if e.key == "offset"]
    assert offsets and all(o % 4096 == 0 for o in offsets)
    onnx.checker.check_model(str(first), full_check=True)
    np.testing.assert_array_equal(_run(first), reference)
    # A changed model gets a new data file; the old one goes once the new .onnx is in place.
    changed = ir.load(decoder)
    _weight(changed, "lm_head").values = np.zeros((256, 4096), np.float32)
    ir.save(changed, tmp_path / "out.onnx")
    after = _files(tmp_path, "out.onnx")
    assert data not in after and len(after) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_small_models_stay_single_file(decoder: Path, tmp_path: Path) -> None:
    model = ir.load(decoder)  # the real 2 GiB limit: 21 MB is small
    assert not ir.is_large(model)
    path = ir.save(model, tmp_path / "small.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["small.onnx"]
    assert path.read_bytes() == ir.to_proto(model).SerializeToString()


def test_bad_external_regions_are_refused(decoder: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(decoder), load_external_data=False)
    (tmp_path / "dec.onnx.data").write_bytes(b"\0" * 4096)  # far too short
    (tmp_path / "short.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(InvalidModelError, match="truncated"):
        ir.load(tmp_path / "short.onnx")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "link.data").symlink_to(decoder.with_name("dec.onnx.data"))  # inside by name, outside in fact
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "link.data"
    (folder / "escape.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(InvalidModelError, match="escapes"):
        ir.load(folder / "escape.onnx")


def test_checker_shapes_and_sessions_work_without_one_big_proto(decoder: Path, reference: np.ndarray, large: None) -> None:
    model = ir.load(decoder)
    ir.check(model)
    assert ir.infer_shapes(model)
    logits = next(n for n in model.graph.nodes if n.name == "lm_head").outputs[0]
    assert list(logits.shape) == [1, 16, 4096]
    np.testing.assert_array_equal(make_session(model).run(None, FEEDS)[0], reference)
    broken = ir.load(decoder)
    broken.graph.nodes[-1].inputs[0] = ir.make_variable("nowhere", dtype=np.float32)
    with pytest.raises(InvalidModelError, match="checker"):
        ir.check(broken)


@pytest.mark.parametrize("mode", ["weight-only", "dynamic", "fp16", "static"])
def test_conversions_on_the_large_path(mode: str, decoder: Path, reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"tune": False} if mode == "static" else {}
    data = "synthetic:2" if mode == "static" else None
    small = convert(str(decoder), data, mode=mode, **options).save(tmp_path / "small.onnx")
    monkeypatch.setattr(_external, "LARGE_MODEL_BYTES", LIMIT)
    result = convert(str(decoder), data, mode=mode, **options)
    out = result.save(tmp_path / "large.onnx")
    assert len(list(tmp_path.glob("large.onnx.*.data"))) == 1
    assert result.report.bytes_after == ir.stored_size(out) < ir.stored_size(decoder)
    onnx.checker.check_model(str(out), full_check=True)
    got = _run(out)
    assert _cosine(got, reference) >= MIN_COSINE[mode]
    np.testing.assert_array_equal(got, _run(small))  # the large path changes where bytes go, not what they are


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_inspect_optimize_and_prune(decoder: Path, reference: np.ndarray, tmp_path: Path, large: None) -> None:
    assert "FLOPs" in _cli("inspect", str(decoder))
    out = tmp_path / "opt.onnx"
    _cli("optimize", str(decoder), "-o", str(out))
    _cli("optimize", str(decoder), "-o", str(out))  # again: the previous output's data file is replaced, not left behind
    assert len(list(tmp_path.glob("opt.onnx.*.data"))) == 1
    np.testing.assert_allclose(_run(out), reference, rtol=1e-5, atol=1e-5)
    pruned = tmp_path / "pruned.onnx"
    _cli("prune", str(decoder), "-o", str(pruned), "--method", "magnitude", "--sparsity", "0.5")
    onnx.checker.check_model(str(pruned), full_check=True)
    assert ir.load(pruned, check=False).graph  # loads back (lazily)
    assert np.isfinite(_run(pruned)).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- interrupted saves: a child process saves, pauses at a stage, and is killed there --------------

_CHILD = """
import sys, time
import numpy as np
from onnxq import ir
from onnxq.ir import _external, _save
_external.LARGE_MODEL_BYTES = {limit}
model = ir.load({source!r})
lm_head = next(c for c in ir.iter_constants(model.graph) if c.name == "lm_head")
lm_head.values = np.zeros(lm_head.shape, np.float32)  # a new model: new .onnx, new data file

def pause(stage):
    if stage == {stage!r}:
        print("paused", flush=True)
        time.sleep(60)

_save.SAVE_HOOK = pause
ir.save(model, {target!r})
"""


def _interrupted_save(decoder: Path, target: Path, stage: str, sig: int) -> int:
    code = _CHILD.format(limit=LIMIT, source=str(decoder), target=str(target), stage=stage)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "paused"
        proc.send_signal(sig)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("stage", "sig"), [("data", signal.SIGKILL), ("commit", signal.SIGKILL), ("data", signal.SIGTERM)])
def test_killed_save_leaves_the_previous_output(stage: str, sig: int, decoder: Path, reference: np.ndarray, tmp_path: Path, large: None) -> None:
    target = tmp_path / "out.onnx"
    ir.save(ir.load(decoder), target)
    before = _files(tmp_path, "out.onnx")
    code = _interrupted_save(decoder, target, stage, sig)
    assert code in ((-signal.SIGKILL,) if sig == signal.SIGKILL else (-signal.SIGTERM, 128 + signal.SIGTERM))
    after = _files(tmp_path, "out.onnx")
    assert {k: v for k, v in after.items() if k in before} == before  # the previous output, byte for byte
    np.testing.assert_array_equal(_run(target), reference)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in before)
    if sig == signal.SIGTERM:
        assert leftovers == []  # the handler removed the temp files before exiting
    elif stage == "data":
        assert leftovers and all(n.startswith(".") and n.endswith(".tmp") for n in leftovers)
    else:  # killed between renaming the new data file and committing the .onnx: unreferenced data only
        assert len(leftovers) == 1 and re.fullmatch(r"out\.onnx\.[0-9a-f]{16}\.data", leftovers[0])


def test_opset_upgrade_and_spill_keep_the_weights(decoder: Path, reference: np.ndarray, tmp_path: Path, large: None) -> None:
    from onnxq.passes.cleanup.upgrade_opset import upgrade_opset

    model = upgrade_opset(ir.load(decoder), 21)
    assert model.opset == 21 and model.large
    assert isinstance(_weight(model, "lm_head")._values, np.memmap)  # the mapped weights, not copies
    in_memory = _weight(model, "embed_tokens")
    in_memory.values = np.array(in_memory.values)  # as a pass would leave a weight it computed
    assert ir.spill_weights(model) == in_memory.values.nbytes
    assert isinstance(in_memory._values, np.memmap)
    out = ir.save(model, tmp_path / "up.onnx")
    assert onnx.load(str(out), load_external_data=False).opset_import[0].version == 21
    np.testing.assert_allclose(_run(out), reference, rtol=1e-5, atol=1e-5)


def test_model_proto_saved_with_external_data(tmp_path: Path) -> None:
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Add", ["x", "w"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1024])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1024])],
            [onnx.numpy_helper.from_array(np.arange(1024, dtype=np.float32), "w")],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    out = ir.save(proto, tmp_path / "p.onnx", external_data=True)
    assert len(list(tmp_path.glob("p.onnx.*.data"))) == 1
    x = {"x": np.ones(1024, np.float32)}
    np.testing.assert_array_equal(ort.InferenceSession(str(out)).run(None, x)[0], np.arange(1024, dtype=np.float32) + 1)


def test_read_weights_leave_the_resident_set_beyond_the_budget(decoder: Path, large: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_external, "RESIDENT_BYTES", 2**20)
    model = ir.load(decoder)
    for constant in ir.iter_constants(model.graph):
        float(np.asarray(ir.const_value(constant), np.float64).sum())  # touch every page
    resident = list(_external._RESIDENT.values())
    assert resident and sum(r.length for r in resident[:-1]) <= 2**20  # only the newest may exceed it


def test_sub_byte_external_weights_round_trip(tmp_path: Path, large: None) -> None:
    import ml_dtypes

    from onnxq.ir._gs import SharedLazyValues

    codes = np.random.default_rng(0).integers(-8, 8, size=(2048, 1024)).astype(ml_dtypes.int4)
    w, scale, y = ir.make_constant("w4", codes), ir.make_constant("s", np.array(0.5, np.float32)), ir.make_variable("y", np.float32, [2048, 1024])
    graph = ir.make_graph([ir.make_node("DequantizeLinear", [w, scale], [y])], [], [y], opset=21)
    first = ir.save(ir.Model(graph=graph, opsets={"": 21}, ir_version=10), tmp_path / "a.onnx")  # 1 MiB packed: large here
    loaded = ir.load(first)
    assert isinstance(_weight(loaded, "w4")._values, SharedLazyValues)  # packed: read on use, not mapped
    np.testing.assert_array_equal(ir.const_value(_weight(loaded, "w4")), codes)
    second = ir.save(ir.load(first), tmp_path / "b.onnx")
    assert [p.read_bytes() for p in tmp_path.glob("a.onnx.*.data")] == [p.read_bytes() for p in tmp_path.glob("b.onnx.*.data")]
    (got,) = ort.InferenceSession(str(second), providers=["CPUExecutionProvider"]).run(None, {})
    np.testing.assert_array_equal(got, codes.astype(np.float32) * 0.5)
