"""annotate-quantization alone: which nodes it quantizes or leaves float (and why), the plan it writes.

Every test builds a tiny graph and a hand-made :class:`RangeSet`, runs only this pass and reads the
:class:`QuantPlan` it leaves in the context. Nothing here calibrates or converts.
"""

from __future__ import annotations

import onnx
import pytest

from onnxq import ir
from onnxq.context import PassContext
from onnxq.errors import ConfigError, PreconditionError
from onnxq.pass_base import make_pass
from onnxq.plan import QuantizationConfig
from onnxq.runtime.kernels import int8_products_saturate
from tests.passes.quantization._pass_util import annotate, load, parse_with, range_set, run_pass, to_qdq, tr

#: x → conv1 → relu1 → conv2 → relu2 → conv3 → y (named nodes, 1x1 convolutions, biases on 1 and 2).
CHAIN = """
<ir_version: 8, opset_import: ["" : 18]>
chain (float[1,4,6,6] x) => (float[1,4,6,6] y) {
  [conv1] c1 = Conv (x, w1, b1)
  [relu1] r1 = Relu (c1)
  [conv2] c2 = Conv (r1, w2, b2)
  [relu2] r2 = Relu (c2)
  [conv3] y = Conv (r2, w3)
}
"""
CHAIN_WEIGHTS = {"w1": (4, 4, 1, 1), "b1": (4,), "w2": (4, 4, 1, 1), "b2": (4,), "w3": (4, 4, 1, 1)}
CHAIN_RANGES = {"x": (-3, 3), "c1": (-4, 5), "r1": (0, 5), "c2": (-2, 6), "r2": (0, 6), "y": (-7, 3)}


def _chain(**ranges: object) -> tuple[ir.Model, PassContext]:
    """The chain annotated with CHAIN_RANGES, where ``name=None`` drops a range and a TensorRange replaces it."""
    merged = {**CHAIN_RANGES, **ranges}
    model = load(parse_with(CHAIN, CHAIN_WEIGHTS))
    return model, PassContext(ranges=range_set({k: v for k, v in merged.items() if v is not None}))  # type: ignore[misc]


def _decisions(ctx: PassContext) -> dict[str, tuple[bool, str]]:
    assert ctx.plan is not None
    return {d.node: (d.quantized, d.reason) for d in ctx.plan.decisions.values()}


def _float(ctx: PassContext) -> dict[str, str]:
    return {node: reason for node, (quantized, reason) in _decisions(ctx).items() if not quantized}


def test_chain_is_quantized_and_relus_fold_into_their_convs() -> None:
    model, ctx = _chain()
    result = run_pass("annotate-quantization", model, ctx)
    plan = ctx.plan
    # reduce_range=None (auto) is resolved to what this CPU needs: on exactly where its u8·s8 kernel saturates
    assert plan is not None and ctx.quant_config == QuantizationConfig(reduce_range=int8_products_saturate("uint8", "int8"))
    assert _float(ctx) == {}
    assert plan.quantized_nodes == ["conv1", "relu1", "conv2", "relu2", "conv3"]
    # c1 and c2 are read only by a kept Relu: onnxruntime folds Relu into the requantization, so
    # only the Relu outputs get Q/DQ.
    assert sorted(plan.activations) == ["r1", "r2", "x", "y"]
    assert {(w.tensor, w.kind, w.axis, w.derived_from) for w in plan.weights} == {
        ("w1", "weight", 0, None),
        ("w2", "weight", 0, None),
        ("w3", "weight", 0, None),
        ("b1", "bias", 0, ("x", 1)),
        ("b2", "bias", 0, ("r1", 1)),
    }
    assert all(w.dtype == "int8" and w.symmetric for w in plan.weights if w.kind == "weight")
    assert all(w.dtype == "int32" for w in plan.weights if w.kind == "bias")
    assert {tq.dtype for tq in plan.activations.values()} == {"uint8"}
    assert result.stats == plan.summary() == {"quantized_nodes": 5, "float_nodes": 0, "activations": 4, "weights": 3, "biases": 2}


def test_per_tensor_config_drops_every_axis() -> None:
    model, ctx = _chain()
    run_pass("annotate-quantization", model, ctx, per_channel=False, activation_dtype="int8", activation_symmetric=True)
    assert ctx.plan is not None
    assert [w.axis for w in ctx.plan.weights] == [None] * 5
    assert {(tq.dtype, tq.symmetric) for tq in ctx.plan.activations.values()} == {("int8", True)}


def test_tensor_without_range_keeps_its_producer_and_readers_float() -> None:
    model, ctx = _chain(r1=None)
    run_pass("annotate-quantization", model, ctx)
    assert _float(ctx) == {
        "relu1": "no calibration range for tensor 'r1'",
        "conv2": "no calibration range for tensor 'r1'",
        # conv2 is float, so relu2 is neither between two int8 anchors nor a kept anchor's activation
        "relu2": "not between quantized compute ops (int8 here would only add conversions)",
    }
    assert ctx.plan is not None
    # conv1's Relu is float now: conv1 requantizes its own output instead of folding the Relu
    assert "c1" in ctx.plan.activations and "r1" not in ctx.plan.activations


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (tr(0, 5, nonfinite=3), "tensor 'r1' holds 3 non-finite value(s)"),
        (tr(0, 5, extreme=2, data_max=3e38), "tensor 'r1' holds 2 value(s) with |x| >= 1e30 (e.g. an attention mask)"),
        (tr(-2e7, 5), "tensor 'r1' has a huge range [-2e+07, 5]"),
    ],
    ids=["nonfinite", "extreme", "huge"],
)
def test_saturating_tensor_keeps_its_nodes_float(bad: object, reason: str) -> None:
    model, ctx = _chain(r1=bad)
    run_pass("annotate-quantization", model, ctx)
    floated = _float(ctx)
    assert floated["relu1"] == floated["conv2"] == reason
    assert _decisions(ctx)["conv1"][0] and _decisions(ctx)["conv3"][0]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"exclude_op_types": ("Relu",)}, {"relu1": "op type excluded by the user", "relu2": "op type excluded by the user"}),
        ({"op_types": ("Conv",)}, {"relu1": "op type not in --op-types (Conv)", "relu2": "op type not in --op-types (Conv)"}),
        (
            {"exclude_nodes": ("conv[23]",)},
            {
                "conv2": "node excluded by the user",
                "conv3": "node excluded by the user",
                "relu2": "not between quantized compute ops (int8 here would only add conversions)",
            },
        ),
        # node patterns match the whole name: "conv" alone excludes nothing
        ({"exclude_nodes": ("conv",)}, {}),
        ({"include_nodes": ("conv1|relu1|conv2",)}, {"relu2": "node not in the include list", "conv3": "node not in the include list"}),
    ],
    ids=["exclude-op-types", "op-types", "exclude-regex", "regex-full-match", "include-regex"],
)
def test_user_exclusions(options: dict[str, tuple[str, ...]], expected: dict[str, str]) -> None:
    model, ctx = _chain()
    run_pass("annotate-quantization", model, ctx, **options)
    assert _float(ctx) == expected


def test_invalid_node_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"invalid node-name regex 'conv\['"):
        make_pass("annotate-quantization", {"exclude_nodes": ("conv[",)})


def test_keep_first_and_last_and_the_trailing_relu_of_a_kept_anchor() -> None:
    model, ctx = _chain()
    run_pass("annotate-quantization", model, ctx, keep_first=1, keep_last=1)
    assert _float(ctx) == {
        "conv1": "kept float by --keep-first",
        "conv3": "kept float by --keep-last",
        # relu1 follows a float anchor: int8 there would be one more conversion
        "relu1": "not between quantized compute ops (int8 here would only add conversions)",
    }
    # relu2 leads only to a float conv, but as conv2's sole reader it stays int8 so onnxruntime
    # can fuse conv2 + relu2 into one QLinearConv
    assert ctx.plan is not None and sorted(ctx.plan.activations) == ["r1", "r2"]


def test_keep_first_and_last_overlapping_float_every_anchor() -> None:
    model, ctx = _chain()
    run_pass("annotate-quantization", model, ctx, keep_first=2, keep_last=2)
    assert ctx.plan is not None and ctx.plan.quantized_nodes == [] and ctx.plan.activations == {} and ctx.plan.weights == []


GLUE = """
<ir_version: 8, opset_import: ["" : 18]>
glue (float[1,4,6,6] x) => (float[1,4,6,6] y) {
  [transpose] t = Transpose <perm=[0,1,3,2]> (x)
  [conv] c = Conv (t, w)
  [sigmoid] y = Sigmoid (c)
}
"""


def test_glue_outside_int8_regions_stays_float() -> None:
    model = load(parse_with(GLUE, {"w": (4, 4, 1, 1)}))
    ctx = annotate(model, range_set({"x": (-1, 1), "t": (-1, 1), "c": (-2, 2), "y": (0.1, 0.9)}))
    why = "not between quantized compute ops (int8 here would only add conversions)"
    assert _float(ctx) == {"transpose": why, "sigmoid": why}
    assert ctx.plan is not None and sorted(ctx.plan.activations) == ["c", "t"]


GEMM_RELU = """
<ir_version: 8, opset_import: ["" : 18]>
mlp (float[2,8] x) => (float[2,4] y{outs}) {{
  [gemm] g = Gemm <transB=1> (x, w, b)
  [relu] r = Relu (g)
  [tail] y = Sigmoid (r)
  {extra}
}}
"""


def test_trailing_relu_is_kept_with_its_anchor_even_before_float_ops() -> None:
    model = load(parse_with(GEMM_RELU.format(outs="", extra=""), {"w": (4, 8), "b": (4,)}))
    ctx = annotate(model, range_set({"x": (-1, 1), "g": (-3, 3), "r": (0, 3), "y": (0, 1)}))
    assert _float(ctx) == {"tail": "not between quantized compute ops (int8 here would only add conversions)"}
    assert ctx.plan is not None
    assert sorted(ctx.plan.activations) == ["r", "x"]  # g is absorbed by the kept Relu
    bias = next(w for w in ctx.plan.weights if w.kind == "bias")
    assert (bias.tensor, bias.axis, bias.derived_from) == ("b", 0, ("x", 1))
    weight = next(w for w in ctx.plan.weights if w.kind == "weight")
    assert weight.axis == 0  # transB=1: output channels are the rows


def test_relu_sharing_its_input_with_another_reader_is_not_trailing() -> None:
    text = GEMM_RELU.format(outs=", float[2,4] z", extra="[other] z = Neg (g)")
    model = load(parse_with(text, {"w": (4, 8), "b": (4,)}))
    ctx = annotate(model, range_set({"x": (-1, 1), "g": (-3, 3), "r": (0, 3), "y": (0, 1), "z": (-3, 3)}))
    assert _decisions(ctx)["gemm"][0]
    assert _decisions(ctx)["relu"] == (False, "not between quantized compute ops (int8 here would only add conversions)")
    # Gemm's float output needs no requantization (QGemm can write float)
    assert ctx.plan is not None and sorted(ctx.plan.activations) == ["x"]


SHARED = """
<ir_version: 8, opset_import: ["" : 18]>
shared (float[1,3,6,6] x) => (float[1,4,3,3] y) {
  [conv_a] a = Conv (x, wa)
  [conv_b] b = Conv (x, wb)
  [concat] cat = Concat <axis=1> (a, b)
  [pool] m = MaxPool <kernel_shape=[2,2], strides=[2,2]> (cat)
  [conv_c] y = Conv (m, wc)
}
"""
SHARED_WEIGHTS = {"wa": (2, 3, 1, 1), "wb": (2, 3, 1, 1), "wc": (4, 4, 1, 1)}


def test_concat_and_maxpool_share_one_group() -> None:
    model = load(parse_with(SHARED, SHARED_WEIGHTS))
    ctx = annotate(model, range_set({"x": (-1, 1), "a": (-2, 2), "b": (-3, 1), "cat": (-3, 2), "m": (-3, 2), "y": (-5, 5)}))
    assert _float(ctx) == {}
    plan = ctx.plan
    assert plan is not None
    groups = sorted(sorted(members) for members in plan.groups.values())
    assert groups == [["a", "b", "cat", "m"], ["x"], ["y"]]
    assert len({plan.activations[n].group for n in ("a", "b", "cat", "m")}) == 1
    # a shared group is quantized over its union: no per-tensor clamp
    assert all(plan.activations[n].clamp is None for n in ("a", "b", "cat", "m"))


def test_concat_of_disparate_ranges_stays_float() -> None:
    model = load(parse_with(SHARED, SHARED_WEIGHTS))
    ctx = annotate(model, range_set({"x": (-1, 1), "a": (-0.01, 0.01), "b": (-3, 1), "cat": (-3, 1), "m": (-3, 1), "y": (-5, 5)}))
    reason = _float(ctx)["concat"]
    assert reason.startswith("inputs have disparate ranges ('a' spans 0.02, 'b' spans 4)")
    assert ctx.plan is not None and "cat" not in ctx.plan.activations


FIXED = """
<ir_version: 8, opset_import: ["" : 18]>
fixed (float[2,8] x) => (float[2,4] y) {{
  [mm1] h = MatMul (x, w1)
  [{op}] s = {op} {attrs} (h)
  [mm2] y = MatMul (s, w2)
}}
"""


@pytest.mark.parametrize(("op", "attrs"), [("Sigmoid", ""), ("Softmax", "<axis=-1>")])
def test_sigmoid_and_softmax_outputs_get_the_fixed_unit_range(op: str, attrs: str) -> None:
    model = load(parse_with(FIXED.format(op=op, attrs=attrs), {"w1": (8, 6), "w2": (6, 4)}))
    # the calibrated range of s is narrower than [0, 1]: the op's maths wins
    ctx = annotate(model, range_set({"x": (-1, 1), "h": (-4, 4), "s": (0.2, 0.7), "y": (-2, 2)}))
    assert _float(ctx) == {}
    plan = ctx.plan
    assert plan is not None
    assert plan.activations["s"].fixed == (0.0, 1.0)
    assert plan.activations["h"].fixed is None
    assert plan.groups["s"] == ["s"]
    # MatMul outputs are optional: mm2's float output is not requantized
    assert "y" not in plan.activations
    assert [w.axis for w in plan.weights] == [1, 1]  # MatMul weights: per output column


ACT_MATMUL = """
<ir_version: 8, opset_import: ["" : 18]>
attn (float[2,4] x, float[4,3] k) => (float[2,3] y) {
  [scores] y = MatMul (x, k)
}
"""


def test_activation_matmul_is_opt_in() -> None:
    model = load(parse_with(ACT_MATMUL))
    ranges = range_set({"x": (-1, 1), "k": (-2, 2), "y": (-8, 8)})
    assert _float(annotate(model, ranges)) == {"scores": "activation × activation MatMul"}
    ctx = annotate(model, ranges, quantize_activation_matmul=True)
    assert ctx.plan is not None and ctx.plan.quantized_nodes == ["scores"]
    assert sorted(ctx.plan.activations) == ["k", "x"] and ctx.plan.weights == []


UNNAMED = """
<ir_version: 8, opset_import: ["" : 18]>
unnamed (float[1,4,6,6] x) => (float[1,4,6,6] y) {
  c1 = Conv (x, w1)
  r1 = Relu (c1)
  [dup] c2 = Conv (r1, w2)
  [dup] y = Relu (c2)
}
"""


def test_unnamed_and_duplicate_names_are_replaced_deterministically() -> None:
    ranges = range_set({"x": (-1, 1), "c1": (-2, 2), "r1": (0, 2), "c2": (-2, 2), "y": (0, 2)})
    names = []
    for _ in range(2):
        model = load(parse_with(UNNAMED, {"w1": (4, 4, 1, 1), "w2": (4, 4, 1, 1)}))
        ctx = PassContext(ranges=ranges)
        result = run_pass("annotate-quantization", model, ctx)
        assert result.modified
        names.append([n.name for n in ir.iter_nodes(model.graph)])
        assert ctx.plan is not None and list(ctx.plan.decisions) == names[-1]
    assert names[0] == names[1]
    assert names[0][:3] == ["Conv_0", "Relu_1", "dup"]  # the first "dup" keeps its name
    assert len(set(names[0])) == 4 and names[0][3] not in ("", "dup")


def test_named_model_is_not_modified() -> None:
    model, ctx = _chain()
    before = ir.to_proto(model).SerializeToString()
    result = run_pass("annotate-quantization", model, ctx)
    assert result.modified is False
    assert ir.to_proto(model).SerializeToString() == before
    assert ctx.plan is not None and len(ctx.plan.decisions) == 5


def test_already_quantized_model_is_refused() -> None:
    model, ctx = _chain()
    qdq, _ = to_qdq(model, ctx.ranges)  # type: ignore[arg-type]
    with pytest.raises(PreconditionError, match=r"already quantized \(found DequantizeLinear, QuantizeLinear\)"):
        annotate(qdq, ctx.ranges)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_16_bit_activations_need_opset_21(dtype: str) -> None:
    old = load(parse_with(CHAIN, CHAIN_WEIGHTS))
    with pytest.raises(PreconditionError, match=rf"{dtype} activations need opset >= 21 \(model has 18\)"):
        annotate(old, range_set(CHAIN_RANGES), activation_dtype=dtype)
    new = load(parse_with(CHAIN.replace('"" : 18', '"" : 21'), CHAIN_WEIGHTS))
    ctx = annotate(new, range_set(CHAIN_RANGES), activation_dtype=dtype)
    assert ctx.plan is not None and {tq.dtype for tq in ctx.plan.activations.values()} == {dtype}


def test_missing_ranges_is_a_precondition_error() -> None:
    model = load(parse_with(CHAIN, CHAIN_WEIGHTS))
    with pytest.raises(PreconditionError, match="needs calibration ranges: run the 'calibrate' pass first"):
        make_pass("annotate-quantization")(model, PassContext())
    # inside a pipeline the gap is found before anything runs
    with pytest.raises(ConfigError, match="annotate-quantization reads 'ranges', which no earlier step writes"):
        run_pass("annotate-quantization", model, PassContext())


def test_model_without_dtypes_leaves_activations_float() -> None:
    """Annotate trusts inferred dtypes (the pipeline's cleanup infers them): none, no int8 region."""
    proto = parse_with(CHAIN, CHAIN_WEIGHTS)
    model = ir.load(onnx.ModelProto.FromString(proto.SerializeToString()))
    ctx = annotate(model, range_set(CHAIN_RANGES))
    assert _float(ctx)["conv2"] == "input is not a float activation"
