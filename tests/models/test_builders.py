"""Tests of the model builders (``models``) and of ``python -m models``.

Every builder must pass the full ONNX checker, run in onnxruntime with finite outputs of the
declared shape, serialize byte-identically for equal arguments, and react to its size parameters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import models
from models import BUILDERS, ModelArgumentError, build
from models.__main__ import main
from models.cli import parse_overrides, parse_value

DIMS = {"N": 2, "batch": 2, "seq": 7, "W": 64, "T": 16}
"""Values for the builders' symbolic dims at run time (T is W/4 in cnn-lstm)."""

SIZE_VARIANTS: dict[str, dict[str, Any]] = {
    "cnn": {"width": 8, "blocks": 1, "input_size": 16, "num_classes": 5},
    "mlp": {"in_features": 8, "hidden": (16, 16, 16), "num_classes": 3},
    "transformer": {"vocab": 50, "hidden": 32, "heads": 2, "layers": 2, "ffn": 48, "max_seq": 16},
    "lstm": {"input_size": 4, "hidden": 8, "num_classes": 3, "bidirectional": True},
    "mobilenet": {"width": 8, "input_size": 32, "num_classes": 3},
    "detector": {"input_size": 32, "num_classes": 2, "width": 8, "anchors_per_cell": 2},
    "layernorm-classifier": {"in_features": 8, "hidden": 16, "num_classes": 3, "layers": 3, "seq": 4},
    "if-model": {"in_features": 8, "hidden": 16, "num_classes": 3},
    "cnn-lstm": {"width": 4, "height": 16, "hidden": 8, "num_classes": 5},
    "deep-cnn": {"blocks": 9, "channels": 4, "input_size": 4},
    "yolo-detector": {"input_size": 64, "width": 8, "num_classes": 2},
    "ctc-recognizer": {"width": 4, "height": 16, "hidden": 8, "num_classes": 5},
    "streaming-if": {"mels": 16, "narrow_mels": 8, "channels": 8, "hidden": 8, "num_classes": 5},
    "loop-decoder": {"features": 8, "hidden": 16, "vocab": 10, "steps": 3},
    "scan-rnn": {"input_size": 8, "hidden": 16, "num_classes": 5},
    "mobilenetv2": {"width_mult": 0.25, "input_size": 64, "num_classes": 3},
}

MIN_OPSET = {"transformer": 17, "mobilenet": 14}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _shape(value_info: onnx.ValueInfoProto) -> list[int]:
    """Declared shape with symbolic dims resolved through :data:`DIMS`."""
    return [d.dim_value if d.HasField("dim_value") else DIMS[d.dim_param]
            for d in value_info.type.tensor_type.shape.dim]


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs matching the declared inputs (token ids below every default vocab)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        shape = _shape(vi)
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[vi.name] = rng.integers(0, 50, shape) if "ids" in vi.name else np.ones(shape, np.int64)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    return _session(model).run(None, feeds if feeds is not None else _feeds(model))


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Nodes of ``graph`` and of every subgraph, depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


@pytest.fixture(params=sorted(BUILDERS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


# -- every builder ----------------------------------------------------------------------------------
def test_passes_full_checker_and_runs_with_declared_shapes(name: str) -> None:
    model = build(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and model.opset_import[0].version == 17
    outputs = _run(model)
    assert len(outputs) == len(model.graph.output)
    for value, vi in zip(outputs, model.graph.output, strict=True):
        assert value.shape == tuple(_shape(vi)), vi.name
        assert np.isfinite(value).all(), vi.name


def test_same_arguments_give_identical_bytes_and_seed_changes_weights(name: str) -> None:
    first = build(name, seed=3).SerializeToString()
    assert build(name, seed=3).SerializeToString() == first
    assert build(name, seed=4).SerializeToString() != first


def test_size_parameters_change_the_graph_and_it_still_runs(name: str) -> None:
    default, resized = build(name), build(name, **SIZE_VARIANTS[name])
    onnx.checker.check_model(resized, full_check=True)
    shapes = lambda m: sorted((t.name, tuple(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert shapes(resized) != shapes(default)
    outputs = _run(resized)
    assert all(np.isfinite(o).all() for o in outputs)


def test_node_names_are_unique_readable_and_scoped(name: str) -> None:
    names = [n.name for n in _all_nodes(build(name).graph)]
    assert all(names) and len(set(names)) == len(names)
    assert any("/" in n for n in names)


@pytest.mark.parametrize("opset", ["min", 18, 21])
def test_builds_and_runs_at_other_opsets(name: str, opset: int | str) -> None:
    version = MIN_OPSET.get(name, 13) if opset == "min" else opset
    model = build(name, opset=version)
    onnx.checker.check_model(model, full_check=True)
    assert all(np.isfinite(o).all() for o in _run(model))


def test_too_old_opset_is_refused(name: str) -> None:
    with pytest.raises(ModelArgumentError, match="opset"):
        build(name, opset=12)


def test_integer_batch_gives_a_fixed_batch_dim() -> None:
    model = build("cnn", batch=1)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert _run(model, {"input": np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 10)


# -- structure of individual builders --------------------------------------------------------------
def test_documented_node_counts() -> None:
    assert len(build("cnn", blocks=3).graph.node) == 13 + 14 * 3
    assert len(build("deep-cnn", blocks=11).graph.node) == models.DEEP_CNN_FIXED_NODES + 7 * 11
    assert len(build("transformer", layers=3).graph.node) == 12 + 34 * 3
    assert len(build("mlp", hidden=(8, 8, 8)).graph.node) == 3 * 3 + 2
    assert len(build("mlp", hidden=(8, 8, 8), use_gemm=True).graph.node) == 2 * 3 + 1
    assert len(build("layernorm-classifier", layers=4).graph.node) == 12 * 4 + 3


def test_deep_cnn_reaches_ten_thousand_nodes_and_stays_finite() -> None:
    blocks = models.deep_cnn_blocks_for(10_000)
    assert abs(len(build("deep-cnn", blocks=blocks).graph.node) - 10_000) <= models.DEEP_CNN_NODES_PER_BLOCK
    model = build("deep-cnn", blocks=300)
    assert np.isfinite(_run(model)[0]).all()


def test_cnn_has_strided_depthwise_and_nontrivial_batchnorm() -> None:
    model = build("cnn")
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    assert any(attrs(n)["strides"] == [2, 2] for n in convs)
    assert any(attrs(n)["group"] == 32 for n in convs)
    for bn in (n for n in model.graph.node if n.op_type == "BatchNormalization"):
        scale, bias, mean, var = (_init(model, i) for i in bn.input[1:])
        assert (var > 0).all() and not np.allclose(var, 1) and not np.allclose(mean, 0)
        assert not np.allclose(scale, 1) and not np.allclose(bias, 0)


def test_mlp_unfused_uses_matmul_add_and_gemm_variant_uses_gemm() -> None:
    ops = lambda m: {n.op_type for n in m.graph.node}  # noqa: E731
    assert ops(build("mlp")) == {"MatMul", "Add", "Relu"}
    assert ops(build("mlp", use_gemm=True)) == {"Gemm", "Relu"}


def test_transformer_masked_tokens_do_not_affect_the_others() -> None:
    model = build("transformer", layers=2)
    sess = _session(model)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (2, 9))
    mask = np.ones((2, 9), np.int64)
    mask[:, 6:] = 0
    changed = ids.copy()
    changed[:, 6:] = rng.integers(0, 1000, (2, 3))
    a = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    b = sess.run(None, {"input_ids": changed, "attention_mask": mask})[0]
    np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[:, 6:], b[:, 6:])
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LayerNormalization") == 1 + 2 * 2 and "Erf" in ops and "Softmax" in ops


def test_transformer_runs_for_any_sequence_up_to_max_seq() -> None:
    sess = _session(build("transformer", max_seq=16))
    for seq in (1, 16):
        out = sess.run(None, {"input_ids": np.zeros((1, seq), np.int64), "attention_mask": np.ones((1, seq), np.int64)})
        assert out[0].shape == (1, seq, 64)


def test_transformer_hidden_must_divide_into_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        build("transformer", hidden=65)


@pytest.mark.skipif(not os.environ.get("ONNXQ_SLOW_TESTS"), reason="set ONNXQ_SLOW_TESTS=1 (builds ~90 MB)")
def test_transformer_at_realistic_size() -> None:
    model = build("transformer", vocab=30522, hidden=384, heads=12, layers=6, max_seq=512)
    onnx.checker.check_model(model, full_check=True)
    out = _session(model).run(None, {"input_ids": np.ones((2, 128), np.int64),
                                     "attention_mask": np.ones((2, 128), np.int64)})[0]
    assert out.shape == (2, 128, 384) and np.isfinite(out).all()


def test_detector_concat_mixes_pixel_boxes_and_probabilities() -> None:
    model = build("detector")
    assert [n.op_type for n in model.graph.node].count("Concat") == 1
    det = _run(model, {"input": np.random.default_rng(1).random((2, 3, 64, 64), np.float32)})[0]
    boxes, scores = det[..., :4], det[..., 4:]
    assert boxes.min() >= 0 and boxes.max() <= 320 and boxes.max() > 100
    assert scores.min() >= 0 and scores.max() <= 1


def test_layernorm_classifier_uses_the_decomposed_chain() -> None:
    ops = [n.op_type for n in build("layernorm-classifier", layers=2).graph.node]
    for op in ("ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Mul"):
        assert op in ops
    assert "LayerNormalization" not in ops


def test_if_model_computes_in_both_branches_with_outer_scope_weights() -> None:
    model = build("if-model")
    assert [n.op_type for n in model.graph.node] == ["ReduceSum", "Greater", "If"]
    main_inits = {t.name for t in model.graph.initializer}
    assert "branch_a/fc1/weight" in main_inits and "branch_b/fc1/weight" not in main_inits
    sess = _session(model)
    x = np.abs(np.random.default_rng(0).standard_normal((2, 16))).astype(np.float32)
    hidden = np.maximum(x @ _init(model, "branch_a/fc1/weight") + _init(model, "branch_a/fc1/bias"), 0)
    expected = hidden @ _init(model, "branch_a/fc2/weight") + _init(model, "branch_a/fc2/bias")
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)
    other = sess.run(None, {"input": -x})[0]  # negative sum → else branch, its own weights
    assert other.shape == expected.shape and np.isfinite(other).all()


def test_lstm_forward_and_bidirectional_with_fixed_sequence() -> None:
    for bidirectional in (False, True):
        model = build("lstm", bidirectional=bidirectional, seq=5)
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 5
        w = next(t for t in model.graph.initializer if t.name.endswith("/W"))
        assert w.dims[0] == (2 if bidirectional else 1)
        assert _run(model, {"input": np.ones((5, 3, 16), np.float32)})[0].shape == (3, 10)


def test_cnn_lstm_outputs_per_column_probabilities() -> None:
    probs = _run(build("cnn-lstm"), {"input": np.random.default_rng(0).random((2, 1, 32, 100), np.float32)})[0]
    assert probs.shape == (25, 2, 37)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_mobilenet_has_squeeze_excite_and_hardswish() -> None:
    ops = [n.op_type for n in build("mobilenet").graph.node]
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Mul"} <= set(ops)
    assert ops.count("Add") >= 2  # residual connections


# -- registry, build() and the CLI -------------------------------------------------------------------
def test_registry_has_every_short_name() -> None:
    assert set(BUILDERS) == {"cnn", "mlp", "transformer", "lstm", "mobilenet", "detector",
                             "layernorm-classifier", "if-model", "cnn-lstm", "deep-cnn", "yolo-detector", "ctc-recognizer",
                             "streaming-if", "loop-decoder", "scan-rnn", "mobilenetv2"}


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names: cnn, cnn-lstm"):
        build("resnet")


def test_unknown_or_mistyped_argument_is_a_clear_error() -> None:
    with pytest.raises(ModelArgumentError, match=r"no parameter.*wdth.*valid: seed, width"):
        build("cnn", wdth=3)
    with pytest.raises(ModelArgumentError, match="width must be int"):
        build("cnn", width="wide")


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("-2", -2), ("0.5", 0.5), ("true", True), ("False", False), ("none", None),
    ("N", "N"), ("64,64", (64, 64)), ("8,", (8,)),
])
def test_parse_value(text: str, value: object) -> None:
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_parse_overrides_rejects_items_without_equals() -> None:
    assert parse_overrides(["width=8", "use-gemm=true"]) == {"width": 8, "use_gemm": True}
    with pytest.raises(ModelArgumentError, match="key=value"):
        parse_overrides(["width"])


def test_cli_writes_the_same_model_as_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "mlp.onnx"
    assert main(["mlp", "-o", str(out), "--seed", "5", "--set", "hidden=16,16", "--set", "use_gemm=true"]) == 0
    expected = build("mlp", seed=5, hidden=(16, 16), use_gemm=True)
    assert onnx.load(str(out)).SerializeToString() == expected.SerializeToString()
    assert "mlp.onnx" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "unknown model 'nope'; valid names"),
    (["cnn", "--set", "depth=3"], "no parameter(s) depth"),
    (["cnn", "--set", "width=wide"], "width must be int"),
])
def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*args, "-o", str(tmp_path / "x.onnx")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
