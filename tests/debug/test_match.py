"""Matching QUANT's quantized tensors to their float twins: Q/DQ pairs, QLinear ops, folded and renamed nodes."""

from __future__ import annotations

import pytest

from onnxq import ir
from onnxq.debug import match_tensors
from tests.debug._models import float_model, quantized

#: builder → (tensors compared, quantized tensors) with the default static conversion
EXPECTED = {"cnn": (20, 19), "detector": (7, 6), "transformer": (5, 4)}


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_quantized_tensor_has_a_float_twin(name: str, fmt: str) -> None:
    fm, qm = ir.load(float_model(name)), ir.load(quantized(name, fmt))
    result = match_tensors(fm, qm)
    assert (len(result.matches), result.quantized) == EXPECTED[name]
    assert result.unmatched == []
    float_names = {t.name for t in fm.graph.inputs} | {t.name for n in fm.graph.nodes for t in n.outputs}
    quant_names = {t.name for t in qm.graph.inputs} | {t.name for n in qm.graph.nodes for t in n.outputs}
    for m in result.matches:
        assert m.name in float_names and m.quant_tensor in quant_names
        assert (m.qparams is None) == (m.how == "output")


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_a_folded_batchnorm_moves_the_twin_to_its_output(fmt: str) -> None:
    """``conv2/out`` in QUANT carries the folded BatchNorm: its twin is ``bn2/out``, not FLOAT's ``conv2/out``."""
    result = match_tensors(ir.load(float_model("cnn")), ir.load(quantized("cnn", fmt)))
    by_quant = {m.quant_tensor: m for m in result.matches}
    m = by_quant["stage1/block1/conv2/out/q"]
    assert m.name == "stage1/block1/bn2/out" and m.how == "name through folded BatchNormalization"
    assert by_quant["stem/relu/out/q"].name == "stem/relu/out"  # an activation after the conv: no move


def test_a_renamed_qlinear_output_is_matched_by_lineage() -> None:
    qm = ir.load(quantized("cnn", "qoperator"))
    tensor = next(t for n in qm.graph.nodes for t in n.outputs if t.name == "stage1/block1/relu/out/q")
    tensor.name = "renamed_by_a_rewrite/q"
    result = match_tensors(ir.load(float_model("cnn")), qm)
    m = next(m for m in result.matches if m.quant_tensor == "renamed_by_a_rewrite/q")
    # QLinearAdd(conv2, stem) with its Relu absorbed: FLOAT's Add reading the same twins, then its Relu
    assert (m.name, m.how) == ("stage1/block1/relu/out", "lineage through folded Relu")


def test_a_tensor_without_twin_is_listed_with_the_reason() -> None:
    qm = ir.load(quantized("cnn", "qdq"))
    renamed = {"stem/relu/out": "orphan", "stem/relu/out/q": "orphan/q", "stem/conv/out": "orphan_conv"}
    for n in qm.graph.nodes:
        for t in n.outputs:
            t.name = renamed.get(t.name, t.name)
    result = match_tensors(ir.load(float_model("cnn")), qm)
    assert [u.tensor for u in result.unmatched] == ["orphan/q"]
    assert "no FLOAT tensor of the same name" in result.unmatched[0].reason
    assert result.quantized == EXPECTED["cnn"][1]


def test_expanded_hardswish_readers_view_and_introduced_tensors() -> None:
    """MobileNetV3's HardSwish runs as x · HardSigmoid(x): the input is compared as the readers see it
    (flat below -3), and the HardSigmoid outputs the conversion introduced are listed, saying so."""
    from models import build
    from onnxq import convert
    from tests.helpers import random_feeds

    source = build("mobilenet")
    quant = convert(source, [random_feeds(source, seed=i, dims={"N": 1}) for i in range(2)], tune=False).model
    result = match_tensors(ir.load(source), quant)
    clips = {m.name: m.clip for m in result.matches}
    assert clips["stem/bn/out"] == (-3.0, float("inf"))
    assert clips["block1/se/fc2/out"] == pytest.approx((-3.0, 3.0))  # read by a HardSigmoid only
    assert result.unmatched and all("HardSwish written as x · HardSigmoid(x)" in u.reason for u in result.unmatched)
