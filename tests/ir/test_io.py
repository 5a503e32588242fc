"""Loading, validating and saving models: round trips, determinism, atomicity, bad input."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxq import InvalidModelError, ir
from tests.helpers import parse, run

TEXT = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1], producer_name: "unit", producer_version: "1.2">
agraph (float[N, 4] x) => (float[N, 4] y)
<float[4, 4] w = {1,0,0,0, 0,2,0,0, 0,0,3,0, 0,0,0,4}>
{
    h = MatMul(x, w)
    y = local.Double(h)
}
<domain: "local", opset_import: ["" : 17]>
Double (a) => (b) {
    b = Add(a, a)
}
"""


def make_model() -> onnx.ModelProto:
    m = parse(TEXT)
    entry = m.metadata_props.add()
    entry.key, entry.value = "author", "tests"
    return m


def test_round_trip_keeps_metadata_functions_and_numerics(tmp_path: Path) -> None:
    proto = make_model()
    model = ir.load(proto)
    assert model.opsets == {"": 17, "local": 1}
    assert model.producer_name == "unit" and model.metadata == {"author": "tests"}
    out = ir.save(model, tmp_path / "m.onnx")
    again = onnx.load(str(out))
    assert [f.name for f in again.functions] == ["Double"]
    assert {o.domain: o.version for o in again.opset_import} == {"": 17, "local": 1}
    assert again.producer_version == "1.2"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(run(again, {"x": x})[0], run(proto, {"x": x})[0])


def test_save_is_deterministic(tmp_path: Path) -> None:
    model = ir.load(make_model())
    a = ir.save(model, tmp_path / "a.onnx").read_bytes()
    b = ir.save(ir.load(make_model()), tmp_path / "b.onnx").read_bytes()
    assert a == b


def test_load_does_not_modify_input_proto() -> None:
    proto = make_model()
    before = proto.SerializeToString()
    ir.load(proto)
    assert proto.SerializeToString() == before


def test_save_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ir.load(make_model())

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ir.save(model, tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def _big_model() -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_external_data_round_trip(tmp_path: Path) -> None:
    model = ir.load(_big_model())
    path = ir.save(model, tmp_path / "ext.onnx", external_data=True)
    (data,) = tmp_path.glob("ext.onnx.*.data")  # named after its content: ext.onnx.<sha256[:16]>.data
    assert data.stat().st_size >= 64 * 64 * 4
    assert path.stat().st_size < 1000
    again = ir.load(path)
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(run(again, {"x": x})[0], run(_big_model(), {"x": x})[0], rtol=1e-6)


def _write_external(tmp_path: Path, location: str) -> Path:
    m = _big_model()
    tensor = m.graph.initializer[0]
    raw = tensor.raw_data
    (tmp_path / "weights.bin").write_bytes(raw)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    e = tensor.external_data.add()
    e.key, e.value = "location", location
    path = tmp_path / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return path


def test_external_data_good_location(tmp_path: Path) -> None:
    assert len(ir.load(_write_external(tmp_path, "weights.bin")).graph.nodes) == 1


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_location_escaping_is_refused(tmp_path: Path, location: str) -> None:
    with pytest.raises(InvalidModelError, match="absolute|escapes"):
        ir.load(_write_external(tmp_path, location))


def test_missing_external_data_file(tmp_path: Path) -> None:
    path = _write_external(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(InvalidModelError, match="not found"):
        ir.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="does not exist"):
        ir.load(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path: Path) -> None:
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 10)
    with pytest.raises(InvalidModelError, match="not a valid ONNX file|not an ONNX model"):
        ir.load(p)


def test_truncated_file(tmp_path: Path) -> None:
    data = _big_model().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match="truncated|not a valid|not an ONNX"):
        ir.load(p)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(InvalidModelError, match="empty"):
        ir.load(p)


def test_checker_failure() -> None:
    m = _big_model()
    m.graph.node[0].input[1] = "undefined_tensor"
    with pytest.raises(InvalidModelError, match="checker"):
        ir.load(m)


@pytest.mark.parametrize("opset", [3, ir.MAX_OPSET + 1])
def test_unsupported_opset(opset: int) -> None:
    m = _big_model()
    m.opset_import[0].version = opset
    with pytest.raises(InvalidModelError, match=f"opset {opset} is not supported"):
        ir.load(m, check=False)


def test_input_file_untouched_by_load_and_save(tmp_path: Path) -> None:
    src = tmp_path / "in.onnx"
    src.write_bytes(make_model().SerializeToString())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    model = ir.load(src)
    ir.save(model, tmp_path / "out.onnx")
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_int4_constants_are_written_packed() -> None:
    import ml_dtypes

    w = np.array([[1, -2, 3], [4, 5, -8]], dtype=ml_dtypes.int4)
    tp = ir.tensor_proto_of(ir.make_constant("w4", w))
    assert tp.data_type == onnx.TensorProto.INT4 and len(tp.raw_data) == 3
    np.testing.assert_array_equal(numpy_helper.to_array(tp), w)


def test_scalar_constants_keep_rank_zero() -> None:
    tp = ir.tensor_proto_of(ir.make_constant("s", np.array(2.5, np.float32)))
    assert list(tp.dims) == []
