"""Helpers shared by tests: build tiny models from text, run them in onnxruntime, compare outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort

from onnxq import ir


def vi(name: str, shape: list | None, elem: int = onnx.TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input/output declaration (float by default)."""
    return onnx.helper.make_tensor_value_info(name, elem, shape)


def model_of(nodes: list, inputs: list, outputs: list, inits: list, opset: int = 17) -> onnx.ModelProto:
    """A ModelProto of one graph (ir_version 8), already through the full checker."""
    m = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[onnx.helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def parse(text: str, ir_version: int = 8) -> onnx.ModelProto:
    """A ModelProto from onnx's textual syntax (checked)."""
    model = onnx.parser.parse_model(text)
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def graph(signature: str, *nodes: str) -> onnx.ModelProto:
    """The checked model ``g <signature> { <nodes> }`` at opset 17."""
    return parse('<ir_version: 8, opset_import: ["" : 17]>\n' + f"g {signature} {{\n" + "\n".join(nodes) + "\n}")


def proto_of(model: Any) -> onnx.ModelProto:
    if isinstance(model, ir.Model):
        return ir.to_proto(model)
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model))


def session(model: Any, threads: int = 1, optimized_to: Path | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model``; with ``optimized_to``, onnxruntime writes the graph it executes there."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if optimized_to is not None:
        so.optimized_model_filepath = str(optimized_to)
    return ort.InferenceSession(proto_of(model).SerializeToString(), so, providers=["CPUExecutionProvider"])


def optimized_ops(model: Any, tmp_path: Path) -> list[str]:
    """Op types of the graph onnxruntime executes (basic + extended optimizations, CPU), in order."""
    session(model, optimized_to=tmp_path / "optimized.onnx")
    return [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]


def run(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` in onnxruntime on ``feeds`` (extra keys ignored)."""
    sess = session(model)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def random_feeds(model: Any, seed: int = 0, dims: dict[str, int] | None = None, int_high: int = 50) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input (symbolic dims from ``dims`` or 1; masks are ones)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session(model).get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (dims or {}).get(str(d), 1) for d in i.shape]
        dtype = _ORT_TYPES[i.type]
        if dtype == np.bool_:
            feeds[i.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[i.name] = np.ones(shape, dtype) if "mask" in i.name else rng.integers(0, int_high, shape).astype(dtype)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def assert_same_outputs(reference: Any, candidate: Any, feeds: dict[str, np.ndarray], atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Both models give the same outputs on ``feeds`` (max abs error within tolerances)."""
    a = run(reference, feeds)
    b = run(candidate, feeds)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_allclose(y, x, atol=atol, rtol=rtol)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    noise = ref - candidate.astype(np.float64)
    return float(10 * np.log10((ref**2).sum() / max((noise**2).sum(), 1e-30)))


def op_count(model: Any, op: str) -> int:
    m = model if isinstance(model, ir.Model) else ir.load(model)
    return sum(1 for n in ir.iter_nodes(m.graph) if n.op == op)


def checked(model: ir.Model) -> ir.Model:
    """Run the full checker and an onnxruntime load on ``model``; return it."""
    ir.check(model, full=True)
    session(model)
    return model


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the ``onnxq`` CLI in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from onnxq.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr
