"""Dense models: an MLP, a BERT-style transformer encoder and a classifier with decomposed LayerNorms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import onnx
from onnx import TensorProto

from ._common import DEFAULT_OPSET, Dim, GraphBuilder, check_opset, require
from ._layers import decomposed_layer_norm, gelu_erf, gemm, layer_norm, linear

__all__ = ["build_layernorm_classifier", "build_mlp", "build_transformer"]

_FLOAT32_MIN = -3.4028234663852886e38
"""torch.finfo(float32).min: HuggingFace multiplies ``(1 - mask)`` by it to build additive masks."""

_BERT_INIT_STD = 0.02
"""BERT's ``initializer_range``: transformer weights are N(0, 0.02), not He-normal."""


def build_mlp(
    *, seed: int = 0, in_features: int = 32, hidden: Sequence[int] = (64, 64), num_classes: int = 10,
    use_gemm: bool = False, batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A multilayer perceptron on ``input`` float32 [batch, in_features] → ``logits``.

    With ``use_gemm=False`` each layer is MatMul + Add(bias) (+ Relu), the unfused form that a
    MatMul+Add → Gemm fusion pass targets; with ``use_gemm=True`` each layer is Gemm(transB=1)
    (+ Relu), as torch exports ``nn.Linear`` on 2-D inputs. The last layer has no Relu.
    Node count: 3 * len(hidden) + 2 (unfused) or 2 * len(hidden) + 1 (Gemm).
    Realistic benchmark size: ``in_features=784, hidden=(1024, 1024, 1024)``.

    Failure class: the simplest quantization target; the reference for MatMul/Gemm handling.
    """
    check_opset(opset, 13, "build_mlp")
    sizes = [in_features, *hidden, num_classes]
    require(all(int(s) >= 1 for s in sizes), f"build_mlp: all sizes must be >= 1, got {sizes}")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, in_features])
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        last = i == len(sizes) - 2
        name, out = ("head/fc", "logits") if last else (f"layer{i + 1}/fc", None)
        if use_gemm:
            x = gemm(g, x, fan_in, fan_out, name=name, out=out)
        else:
            x = linear(g, x, fan_in, fan_out, name=name, out=out)
        if not last:
            x = g.op("Relu", [x], name=f"layer{i + 1}/relu")
    g.output(x, "logits", [batch, num_classes])
    return g.model("mlp", doc="onnxq.models.build_mlp")


def _embeddings(g: GraphBuilder, ids: str, vocab: int, hidden: int, max_seq: int) -> str:
    """Word Gather + position Gather + Add + LayerNormalization, positions sliced as HF exports them.

    ``position_ids[:, :seq]`` becomes Shape → Gather(1) → Unsqueeze → Slice of the registered
    [1, max_seq] int64 buffer, exactly the subgraph torch exports for BERT.
    """
    with g.scope("embeddings"):
        word_table = (g.rng.standard_normal((vocab, hidden)) * _BERT_INIT_STD).astype(np.float32)
        pos_table = (g.rng.standard_normal((max_seq, hidden)) * _BERT_INIT_STD).astype(np.float32)
        words = g.op("Gather", [g.const("word_embeddings", word_table), ids], name="word_gather", axis=0)
        seq_len = g.op("Gather", [g.op("Shape", [ids], name="shape"), g.const("seq_axis", np.array(1, np.int64))],
                       name="seq_len", axis=0)
        seq_end = g.unsqueeze(seq_len, [0], name="seq_end")
        position_ids = g.const("position_ids", np.arange(max_seq, dtype=np.int64)[None, :])
        positions = g.op("Slice", [position_ids, g.ints("slice_starts", [0]), seq_end, g.ints("slice_axes", [1])],
                         name="position_slice")  # [1, seq]
        pos = g.op("Gather", [g.const("position_embeddings", pos_table), positions], name="position_gather", axis=0)
        x = g.op("Add", [words, pos], name="add")
        return layer_norm(g, x, hidden, name="layernorm")


def _additive_mask(g: GraphBuilder, mask: str) -> str:
    """HF's extended mask: Unsqueeze to [b,1,1,s], Cast float, (1 - m) * float32.min (Sub, Mul)."""
    with g.scope("mask"):
        m = g.unsqueeze(mask, [1, 2], name="unsqueeze")
        m = g.op("Cast", [m], name="cast", to=TensorProto.FLOAT)
        m = g.op("Sub", [g.scalar("one", 1.0), m], name="sub")
        return g.op("Mul", [m, g.scalar("min_value", _FLOAT32_MIN)], name="mul")


def _attention(g: GraphBuilder, x: str, mask: str, hidden: int, heads: int) -> str:
    """Multi-head self-attention as HF BERT exports it, ending with output projection (no residual)."""
    head_dim = hidden // heads
    split_shape = g.ints("split_heads_shape", [0, 0, heads, head_dim])  # 0 copies batch and seq

    def project(name: str, perm: list[int]) -> str:
        y = linear(g, x, hidden, hidden, std=_BERT_INIT_STD, name=name)
        y = g.op("Reshape", [y, split_shape], name=f"{name}/reshape")
        return g.op("Transpose", [y], name=f"{name}/transpose", perm=perm)

    with g.scope("attention"):
        q = project("query", [0, 2, 1, 3])
        k_t = project("key", [0, 2, 3, 1])  # K already transposed, as torch exports k.transpose(-1, -2)
        v = project("value", [0, 2, 1, 3])
        scores = g.op("MatMul", [q, k_t], name="qk_matmul")
        scores = g.op("Div", [scores, g.scalar("scale", math.sqrt(head_dim))], name="scale_div")
        scores = g.op("Add", [scores, mask], name="mask_add")
        probs = g.op("Softmax", [scores], name="softmax", axis=-1)
        ctx = g.op("MatMul", [probs, v], name="context_matmul")
        ctx = g.op("Transpose", [ctx], name="context_transpose", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, g.ints("merge_heads_shape", [0, 0, hidden])], name="context_reshape")
        return linear(g, ctx, hidden, hidden, std=_BERT_INIT_STD, name="output")


def _encoder_layer(g: GraphBuilder, x: str, mask: str, hidden: int, heads: int, ffn: int, last: bool) -> str:
    """Attention + residual + LayerNorm, FFN (GELU via Erf) + residual + LayerNorm."""
    a = _attention(g, x, mask, hidden, heads)
    x = layer_norm(g, g.op("Add", [a, x], name="attention/residual"), hidden, name="attention/layernorm")
    with g.scope("ffn"):
        h = linear(g, x, hidden, ffn, std=_BERT_INIT_STD, name="intermediate")
        h = gelu_erf(g, h)
        h = linear(g, h, ffn, hidden, std=_BERT_INIT_STD, name="output")
        h = g.op("Add", [h, x], name="residual")
        return layer_norm(g, h, hidden, name="layernorm", out="last_hidden_state" if last else None)


def build_transformer(
    *, seed: int = 0, vocab: int = 1000, hidden: int = 64, heads: int = 4, layers: int = 1,
    ffn: int | None = None, max_seq: int = 128, opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A BERT-style encoder as HuggingFace's ONNX export spells it (no fused attention ops).

    Inputs ``input_ids`` and ``attention_mask``, int64 [batch, seq]. Embeddings: word Gather +
    position Gather over a Slice of ``position_ids`` (any seq <= ``max_seq``) + Add + LayerNormalization.
    Additive mask: Unsqueeze → Cast → (1 - m) → * float32.min. Each layer: Q/K/V MatMul+Add,
    Reshape [0, 0, heads, head_dim] + Transpose, MatMul QK^T, Div sqrt(head_dim), Add mask,
    Softmax(-1), MatMul V, Transpose, Reshape, output MatMul+Add, residual Add, LayerNormalization;
    FFN MatMul+Add → GELU (Erf form) → MatMul+Add, residual Add, LayerNormalization.
    Output ``last_hidden_state`` float32 [batch, seq, hidden]. ``ffn`` defaults to 4 * hidden.
    Node count: 12 + 34 * layers. Realistic benchmark size (MiniLM-like, ~23M parameters):
    ``vocab=30522, hidden=384, heads=12, layers=6, max_seq=512``.

    Failure class: Softmax/LayerNorm/GELU chains, the -3.4e38 mask constant that breaks naive
    min/max calibration of the ``mask_add`` output, and MatMuls between two activations (QK^T).
    """
    check_opset(opset, 17, "build_transformer")  # LayerNormalization appeared in opset 17
    ffn = 4 * hidden if ffn is None else ffn
    require(min(vocab, hidden, heads, layers, ffn, max_seq) >= 1, "build_transformer: all sizes must be >= 1")
    require(hidden % heads == 0, f"build_transformer: hidden ({hidden}) must be divisible by heads ({heads})")
    g = GraphBuilder(seed, opset)
    ids = g.input("input_ids", TensorProto.INT64, ["batch", "seq"])
    mask = g.input("attention_mask", TensorProto.INT64, ["batch", "seq"])
    x = _embeddings(g, ids, vocab, hidden, max_seq)
    additive = _additive_mask(g, mask)
    for i in range(layers):
        with g.scope(f"encoder/layer{i}"):
            x = _encoder_layer(g, x, additive, hidden, heads, ffn, last=i == layers - 1)
    g.output(x, "last_hidden_state", ["batch", "seq", hidden])
    return g.model("transformer", doc="onnxq.models.build_transformer")


def build_layernorm_classifier(
    *, seed: int = 0, in_features: int = 32, hidden: int = 64, num_classes: int = 10, layers: int = 2,
    seq: int = 8, batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A token classifier whose LayerNorms are decomposed into nine elementwise/reduce nodes.

    Input ``input`` float32 [batch, seq, in_features]. Each of ``layers`` layers: MatMul+Add → decomposed
    LayerNorm (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta) → Relu.
    Then ReduceMean over the sequence axis → MatMul+Add → ``logits`` [batch, num_classes].
    Each linear bias has a few large "outlier" channels (about ±20), as trained transformers do, so the
    ``Pow`` output spans several orders of magnitude. Node count: 12 * layers + 3.
    Realistic benchmark size: ``in_features=256, hidden=768, layers=6, seq=128``.

    Failure class: exporters below opset 17 emit LayerNorm this way; quantizing the chain (8-bit
    ``Pow``/``Sqrt``/``Div`` tensors) destroys accuracy, so a pass must recognise and skip or fuse it.
    """
    check_opset(opset, 13, "build_layernorm_classifier")
    require(min(in_features, hidden, num_classes, layers, seq) >= 1, "build_layernorm_classifier: sizes >= 1")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, seq, in_features])
    fan_in = in_features
    for i in range(layers):
        with g.scope(f"layer{i + 1}"):
            bias = (g.rng.standard_normal(hidden) * 0.01).astype(np.float32)
            outliers = g.rng.choice(hidden, size=min(2, hidden), replace=False)
            bias[outliers] = np.float32(20.0) * np.sign(g.rng.standard_normal(len(outliers))).astype(np.float32)
            x = linear(g, x, fan_in, hidden, bias=bias, name="fc")
            x = decomposed_layer_norm(g, x, hidden)
            x = g.op("Relu", [x], name="relu")
        fan_in = hidden
    with g.scope("head"):
        x = g.reduce("ReduceMean", x, [1], keepdims=False, name="pool")
        x = linear(g, x, hidden, num_classes, name="fc", out="logits")
    g.output(x, "logits", [batch, num_classes])
    return g.model("layernorm_classifier", doc="onnxq.models.build_layernorm_classifier")
