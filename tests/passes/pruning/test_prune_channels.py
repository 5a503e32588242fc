"""prune-channels: dependency groups, exact maths when pruned channels are zero, shapes, skips and refusals."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper

from models import build
from onnxq import ConfigError, PassContext, PreconditionError, ir, make_pass
from onnxq.passes.pruning import channel_groups, channel_stat_tensors, collect_channel_stats
from tests.helpers import assert_same_outputs, checked, random_feeds
from tests.passes.pruning._models import init, initializers, model_of, node, run_pass, set_initializer, vi, weight

RNG = np.random.default_rng(0)
DIMS = {"N": 2, "batch": 2, "seq": 5}


def conv_w(o: int, i: int, k: int = 3) -> np.ndarray:
    return RNG.standard_normal((o, i, k, k)).astype(np.float32)


def _out_axis(op: str, n: onnx.NodeProto) -> int:
    if op == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in n.attribute) else 1
    return 1 if op == "MatMul" else 0


def zero_channels(src: onnx.ModelProto, ratio: float, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy of ``src`` where every prunable group has floor(ratio*C) all-zero channels.

    Biases, BatchNorm betas/means and 1-D Add constants are zeroed too, so a zero channel stays zero
    through BN and activations and contributes nothing downstream. Returns the model and, per group,
    the number of channels expected to remain.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(src)
    values = initializers(proto)
    by_name = {n.name: n for n in proto.graph.node}
    for n in proto.graph.node:
        if n.op_type == "BatchNormalization":
            for name in n.input[2:4]:
                set_initializer(proto, name, np.zeros_like(values[name]))
        elif n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            set_initializer(proto, n.input[2], np.zeros_like(values[n.input[2]]))
        elif n.op_type == "Add":
            for name in n.input:
                if name in values and values[name].ndim == 1 and values[name].dtype == np.float32:
                    set_initializer(proto, name, np.zeros_like(values[name]))
    rng = np.random.default_rng(seed)
    expected = {}
    for group in channel_groups(ir.load(proto)):
        if group["blocked"]:
            continue
        c = group["channels"]
        dead = rng.choice(c, int(math.floor(ratio * c)), replace=False)
        expected[group["name"]] = c - dead.size
        for producer in group["producers"]:
            n = by_name[producer]
            w = initializers(proto)[n.input[1]].copy()
            np.moveaxis(w, _out_axis(n.op_type, n), 0)[dead] = 0
            set_initializer(proto, n.input[1], w)
    return proto, expected


@pytest.mark.parametrize("name", ["cnn", "mobilenet", "transformer", "mlp"])
def test_exact_when_pruned_channels_are_zero(name: str) -> None:
    src, expected = zero_channels(build(name), 0.5)
    assert expected, "the builder should have prunable groups"
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.5, "round_to": 1})
    assert modified and stats["pruned_groups"] == len(expected)
    for group, kept in expected.items():
        assert stats["groups"][group]["channels_after"] == kept
    assert stats["params_after"] < stats["params_before"]
    assert_same_outputs(src, checked(model), random_feeds(src, seed=3, dims=DIMS), atol=1e-5, rtol=1e-4)


def test_cnn_structure_residual_depthwise_and_flatten_gemm() -> None:
    src = build("cnn")  # width 16: stage 1 has 16 channels, stage 2 32 (its depthwise conv joins the group)
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.5, "round_to": 1})
    assert modified
    assert stats["groups"]["stem/conv"]["members"] == ["stem/conv", "stage1/block1/conv2", "stage1/block2/conv2"]
    assert weight(model, "stem/conv").shape == (8, 3, 3, 3)
    assert weight(model, "stage1/block1/conv1").shape == (8, 8, 3, 3)  # in: stem group, out: its own group
    assert weight(model, "stage1/block1/conv2").shape == (8, 8, 3, 3)
    assert weight(model, "stage1/block1/bn2", 1).shape == (8,)
    dw = node(model, "head/depthwise/conv")
    assert weight(model, "head/depthwise/conv").shape == (16, 1, 3, 3) and dw.attrs["group"] == 16
    assert weight(model, "head/fc").shape == (10, 16)  # GAP → Flatten → Gemm(transB) rows follow the channels
    assert "head/fc" in stats["skipped"] and "graph output" in stats["skipped"]["head/fc"]
    checked(model)


def _two_branch(op: str) -> onnx.ModelProto:
    """conv1 (4 ch) and conv2 (6 ch) on x, joined by Concat(axis=1) or coupled by Add (both 6 ch), then conv3."""
    c1 = 4 if op == "Concat" else 6
    c3_in = c1 + 6 if op == "Concat" else 6
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu1"),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node(op, ["ar", "b"], ["j"], name="join", **({"axis": 1} if op == "Concat" else {})),
        helper.make_node("Conv", ["j", "w3"], ["y"], name="conv3"),
    ]
    inits = [init("w1", conv_w(c1, 3)), init("b1", np.zeros(c1, np.float32)), init("w2", conv_w(6, 3)), init("w3", conv_w(5, c3_in, 1))]
    return model_of(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", [1, 5, 6, 6])], inits)


def _zero_out(proto: onnx.ModelProto, name: str, channels: list[int]) -> None:
    w = initializers(proto)[name].copy()
    w[channels] = 0
    set_initializer(proto, name, w)


def test_concat_group_offsets() -> None:
    src = _two_branch("Concat")
    _zero_out(src, "w1", [1, 3])
    _zero_out(src, "w2", [0, 5, 2])
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.5, "round_to": 1})
    assert modified and {g: v["channels_after"] for g, v in stats["groups"].items()} == {"conv1": 2, "conv2": 3}
    original = initializers(src)["w3"]
    # conv3 keeps concat channels [0, 2] of conv1 and [1, 3, 4] of conv2 (offset 4)
    np.testing.assert_array_equal(weight(model, "conv3"), original[:, [0, 2, 5, 7, 8]])
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-5)


def test_residual_add_prunes_both_branches_together() -> None:
    src = _two_branch("Add")
    _zero_out(src, "w1", [0, 4])
    _zero_out(src, "w2", [0, 4])
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.34, "round_to": 1})
    assert modified and list(stats["groups"]) == ["conv1"]
    assert stats["groups"]["conv1"]["members"] == ["conv1", "conv2"]
    assert weight(model, "conv1").shape[0] == weight(model, "conv2").shape[0] == weight(model, "conv3").shape[1] == 4
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-5)


def test_per_channel_constant_mul_is_sliced_and_silu_couples_with_itself() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
        helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
        helper.make_node("Mul", ["a", "s"], ["silu"], name="silu"),
        helper.make_node("Mul", ["silu", "scale"], ["m"], name="scale"),
        helper.make_node("Conv", ["m", "w2"], ["y"], name="conv2"),
    ]
    scale = RNG.uniform(0.5, 2, (1, 8, 1, 1)).astype(np.float32)
    src = model_of(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 2, 4, 4])], [init("w1", conv_w(8, 3, 1)), init("scale", scale), init("w2", conv_w(2, 8, 1))])
    _zero_out(src, "w1", [1, 2, 6, 7])
    model, modified, _ = run_pass(src, "prune-channels", {"ratio": 0.5, "round_to": 1})
    assert modified and weight(model, "scale", 1).shape == (1, 4, 1, 1)
    np.testing.assert_array_equal(weight(model, "scale", 1).ravel(), scale.ravel()[[0, 3, 4, 5]])
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-5)


def test_pass_through_ops_resize_pad_pool_and_gemm_consumer() -> None:
    """Conv → LeakyRelu → Clip → Pad (spatial) → MaxPool → Resize (constant sizes) → AveragePool → GAP → Flatten → Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1"),
        helper.make_node("LeakyRelu", ["a"], ["l"], name="leaky", alpha=0.1),
        helper.make_node("Clip", ["l", "lo", "hi"], ["c"], name="clip"),
        helper.make_node("Pad", ["c", "pads"], ["p"], name="pad"),
        helper.make_node("MaxPool", ["p"], ["m"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["m", "", "", "sizes"], ["r"], name="resize", mode="nearest"),
        helper.make_node("AveragePool", ["r"], ["v"], name="avgpool", kernel_shape=[2, 2]),
        helper.make_node("GlobalAveragePool", ["v"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="fc"),
    ]
    inits = [
        init("w1", conv_w(8, 3, 1)), init("b1", np.zeros(8, np.float32)), init("lo", np.array(-1.0, np.float32)), init("hi", np.array(3.0, np.float32)),
        init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), init("sizes", np.array([1, 8, 8, 8], np.int64)),
        init("w2", RNG.standard_normal((8, 5)).astype(np.float32)), init("b2", RNG.standard_normal(5).astype(np.float32)),
    ]  # fmt: skip
    src = model_of(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", [1, 5])], inits)
    _zero_out(src, "w1", [2, 3, 5])
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.4, "round_to": 1})
    assert modified and stats["groups"]["conv1"]["channels_after"] == 5
    assert weight(model, "resize", 3).tolist() == [1, 5, 8, 8] and weight(model, "fc").shape == (5, 5)
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-5)


def test_depthwise_conv_joins_the_group() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wd", "bd"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d", "w2"], ["y"], name="conv2"),
    ]
    inits = [init("w1", conv_w(8, 3, 1)), init("wd", conv_w(8, 1)), init("bd", np.zeros(8, np.float32)), init("w2", conv_w(4, 8, 1))]
    src = model_of(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 4, 5, 5])], inits)
    _zero_out(src, "w1", [0, 1, 2, 3, 4, 5])
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.75, "round_to": 1})
    assert modified and stats["groups"]["conv1"]["channels_after"] == 2
    assert weight(model, "dw").shape == (2, 1, 3, 3) and weight(model, "dw", 2).shape == (2,) and node(model, "dw").attrs["group"] == 2
    assert weight(model, "conv2").shape == (4, 2, 1, 1)
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-5)


@pytest.mark.parametrize(
    "blocker, reason",
    [
        (helper.make_node("Softmax", ["a"], ["y"], name="blocker", axis=1), "normalizes over the channel axis"),
        (helper.make_node("Reshape", ["a", "shape"], ["y"], name="blocker"), "Reshape 'blocker'"),
        (helper.make_node("Identity", ["a"], ["y"], name="blocker"), "graph output"),
    ],
)
def test_group_with_unrewritable_consumer_is_skipped_with_reason(blocker: onnx.NodeProto, reason: str) -> None:
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"), blocker]
    inits = [init("w1", conv_w(4, 3, 1)), init("shape", np.array([1, 4, 4, 4], np.int64))]
    src = model_of(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 4, 4, 4])], inits)
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.5, "round_to": 1})
    assert not modified and stats["pruned_groups"] == 0
    assert reason in stats["skipped"]["conv1"]
    assert weight(model, "conv1").shape == (4, 3, 1, 1)


def test_softmax_over_another_axis_and_excluded_group() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
        helper.make_node("Softmax", ["a"], ["s"], name="softmax", axis=-1),
        helper.make_node("Conv", ["s", "w2"], ["y"], name="conv2"),
    ]
    src = model_of(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 2, 4, 4])], [init("w1", conv_w(4, 3, 1)), init("w2", conv_w(2, 4, 1))])
    _, modified, _ = run_pass(src, "prune-channels", {"ratio": 0.5, "round_to": 1})
    assert modified
    _, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.5, "exclude_names": ["^conv1$"], "round_to": 1})
    assert not modified and "exclude pattern" in stats["skipped"]["conv1"]


def test_ratio_limits_min_channels_and_round_to() -> None:
    with pytest.raises(ConfigError, match=r"ratio must be in \[0, 1\).*every channel"):
        run_pass(build("mlp"), "prune-channels", {"ratio": 1.0, "round_to": 1})
    with pytest.raises(ConfigError, match="min_channels must be >= 1"):
        run_pass(build("mlp"), "prune-channels", {"ratio": 0.5, "min_channels": 0, "round_to": 1})
    src = build("mlp", hidden=(2, 16))
    model, modified, stats = run_pass(src, "prune-channels", {"ratio": 0.99, "round_to": 1})
    assert modified and stats["groups"]["layer1/fc/matmul"]["channels_after"] == 1  # never all channels
    assert stats["groups"]["layer2/fc/matmul"]["channels_after"] == 1
    _, _, stats = run_pass(src, "prune-channels", {"ratio": 0.99, "min_channels": 3, "round_to": 1})
    assert stats["groups"]["layer2/fc/matmul"]["channels_after"] == 3 and stats["groups"]["layer1/fc/matmul"]["channels_after"] == 2
    _, _, stats = run_pass(build("mlp", hidden=(32, 16)), "prune-channels", {"ratio": 0.3, "round_to": 8})
    assert stats["groups"]["layer1/fc/matmul"]["channels_after"] == 24  # 32 - 9 = 23, rounded up to 24
    assert stats["groups"]["layer2/fc/matmul"]["channels_after"] == 16  # 16 - 4 = 12 → 16: unchanged
    checked(model)


def test_modified_false_when_nothing_to_remove() -> None:
    _, modified, stats = run_pass(build("cnn"), "prune-channels", {"ratio": 0.0, "round_to": 1})
    assert not modified and stats["channels_removed"] == 0
    model = ir.load(build("cnn"))
    before = ir.to_proto(model).SerializeToString()
    result = make_pass("prune-channels", {"ratio": 0.0, "round_to": 1})(model)
    assert not result.modified and ir.to_proto(result.model).SerializeToString() == before


def test_transformer_ffn_hidden_units() -> None:
    model, modified, stats = run_pass(build("transformer"), "prune-channels", {"ratio": 0.5, "round_to": 1})
    assert modified and list(stats["groups"]) == ["encoder/layer0/ffn/intermediate/matmul"]
    assert weight(model, "encoder/layer0/ffn/intermediate/matmul").shape == (64, 128)
    assert weight(model, "encoder/layer0/ffn/intermediate/add", 1).shape == (128,)
    assert weight(model, "encoder/layer0/ffn/output/matmul").shape == (128, 64)
    assert "Reshape" in stats["skipped"]["encoder/layer0/attention/query/matmul"]
    assert "couples the channels" in stats["skipped"]["encoder/layer0/ffn/output/matmul"]


def test_mobilenet_squeeze_excite_group() -> None:
    model, modified, stats = run_pass(build("mobilenet"), "prune-channels", {"ratio": 0.5, "round_to": 8})
    assert modified
    assert stats["groups"]["stem/conv"]["members"] == ["stem/conv", "block1/se/fc2"]
    assert weight(model, "block1/se/fc2").shape[0] == weight(model, "stem/conv").shape[0] == 8
    assert weight(model, "block1/se/fc1").shape[1] == 8 and node(model, "block1/conv_dw").attrs["group"] == 8
    for name, group in stats["groups"].items():
        assert group["channels_after"] % 8 == 0 or group["channels_after"] == group["channels_before"], name
    checked(model)


def test_data_driven_criteria_use_channel_stats() -> None:
    src, expected = zero_channels(build("cnn"), 0.25, seed=4)
    model = ir.load(src)
    tensors = channel_stat_tensors(ir.clone(model))
    assert tensors and set(tensors.values()) == {-3, -1}  # NCHW activations and the flattened head input
    samples = [random_feeds(src, seed=s, dims=DIMS) for s in range(3)]
    stats = collect_channel_stats(model, samples, tensors)
    some = next(iter(stats.values()))
    assert some["samples"] == 3 and some["mean_abs"].ndim == 1 and ((0 <= some["apoz"]) & (some["apoz"] <= 1)).all()
    for criterion in ("apoz", "mean-activation"):
        pruned, modified, report = run_pass(src, "prune-channels", {"ratio": 0.25, "criterion": criterion, "round_to": 1}, PassContext(channel_stats=stats))
        assert modified and {g: v["channels_after"] for g, v in report["groups"].items()} == expected
        assert_same_outputs(src, checked(pruned), random_feeds(src, seed=9, dims=DIMS), atol=1e-5, rtol=1e-4)
    # the pipeline is validated before it runs: the data criteria read ctx.channel_stats
    with pytest.raises(ConfigError, match="prune-channels reads 'channel_stats', which no earlier step writes"):
        run_pass(src, "prune-channels", {"ratio": 0.25, "criterion": "apoz", "round_to": 1})
    with pytest.raises(PreconditionError, match="channel_stats"):  # the pass called directly still refuses
        make_pass("prune-channels", {"ratio": 0.25, "criterion": "apoz"})(ir.load(src))
    _, modified, report = run_pass(src, "prune-channels", {"ratio": 0.25, "criterion": "apoz", "round_to": 1}, PassContext(channel_stats={}))
    assert not modified and "no channel statistics" in next(iter(report["skipped"].values()))
