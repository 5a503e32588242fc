"""Models whose compute lives inside control flow: ``If`` branches, a ``Loop`` body, a ``Scan`` body.

Each reproduces a shape that broke onnxq before subgraphs were first-class in its passes: cleanup
made an ``If`` branch return an outer-scope value directly (onnxruntime refuses to load that),
static conversion died in calibration, and ``Loop``/``Scan`` bodies were never calibrated or
quantized. Every body reads tensors of the enclosing graph (outer-scope weights, graph inputs,
activations computed outside), the pattern passes must respect when they edit a body.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ._common import DEFAULT_OPSET, Dim, GraphBuilder, check_opset, he_normal, require
from ._layers import gemm, linear

__all__ = ["build_loop_decoder", "build_scan_rnn", "build_streaming_if"]

#: Sample rates above this take the wideband branch of ``build_streaming_if``.
WIDEBAND_THRESHOLD_HZ = 12000


def _conv1d(g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: int, *, name: str) -> str:
    """A 1-D Conv ("same" padding, stride 1) with He-normal weights and a small bias, then Relu."""
    w = g.const(f"{name}/weight", he_normal(g.rng, (out_ch, in_ch, kernel), in_ch * kernel))
    b = g.const(f"{name}/bias", (g.rng.standard_normal(out_ch) * 0.01).astype(np.float32))
    y = g.op("Conv", [x, w, b], name=name, kernel_shape=[kernel], strides=[1], pads=[kernel // 2] * 2, dilations=[1], group=1)
    return g.op("Relu", [y], name=f"{name}_relu")


def _lstm_weights(g: GraphBuilder, input_size: int, hidden: int) -> list[str]:
    """W, R, B of a forward LSTM (PyTorch's init, uniform in ±1/sqrt(hidden)), as outer initializers."""
    k = 1.0 / np.sqrt(hidden)
    w = g.rng.uniform(-k, k, (1, 4 * hidden, input_size)).astype(np.float32)
    r = g.rng.uniform(-k, k, (1, 4 * hidden, hidden)).astype(np.float32)
    b = g.rng.uniform(-k, k, (1, 8 * hidden)).astype(np.float32)
    return [g.const("W", w), g.const("R", r), g.const("B", b)]


def _speech_branch(sub: GraphBuilder, features: str, convs: list[tuple[int, int, int]], shared: dict[str, list[str]], hidden: int, *,
                   narrow: int | None) -> list[str]:
    """Conv stack → [T, N, C] → LSTM (shared outer weights, state from the graph inputs) → head.

    ``convs`` lists (in_ch, out_ch, kernel); ``narrow`` keeps only the lowest mel bins first (a
    narrowband signal has nothing above 4 kHz). Returns the branch outputs: logits, h_n, c_n.
    """
    x = features
    if narrow is not None:
        x = sub.op("Slice", [x, sub.ints("bins_start", [0]), sub.ints("bins_end", [narrow]), sub.ints("bins_axis", [1])], name="low_bins")
    for i, (cin, cout, k) in enumerate(convs):
        x = _conv1d(sub, x, cin, cout, k, name=f"conv{i + 1}")
    x = sub.op("Transpose", [x], name="to_time_major", perm=[2, 0, 1])  # [T, N, C]
    y, h_n, c_n = sub.op_multi("LSTM", [x, *shared["lstm"], "", "h0", "c0"], 3, name="lstm", suffixes=["Y", "Y_h", "Y_c"], hidden_size=hidden)
    y = sub.squeeze(y, [1], name="drop_direction")  # [T, 1, N, H] → [T, N, H]
    y = sub.op("MatMul", [y, shared["head"][0]], name="head/matmul")
    return [sub.op("Add", [y, shared["head"][1]], name="head/add"), h_n, c_n]


def build_streaming_if(
    *, seed: int = 0, mels: int = 40, narrow_mels: int = 24, channels: int = 32, hidden: int = 64, num_classes: int = 64,
    batch: Dim = "N", frames: Dim = "T", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A streaming speech recogniser step (Conv front-end + LSTM) whose whole compute sits in ``If`` branches.

    Inputs: ``features`` float32 [batch, mels, frames] (log-mel frames of one audio chunk),
    ``sample_rate`` int64 scalar, ``h0`` / ``c0`` float32 [1, batch, hidden] (the LSTM state carried
    from the previous chunk). ``If(sample_rate > 12000)``: the *wideband* branch runs two 1-D
    Conv+Relu layers (kernels 5 and 3) over all ``mels`` bins; the *narrowband* branch (8 kHz audio
    has nothing above 4 kHz) slices the lowest ``narrow_mels`` bins and runs its own convolutions
    (kernels 3 and 3). Both transpose to [frames, batch, channels] and run the same LSTM and
    MatMul+Add head, whose weights are OUTER-SCOPE initializers read by both branches; the LSTM
    reads ``h0``/``c0`` from the outer scope too. Outputs: ``logits`` [frames, batch, num_classes],
    ``h_n`` / ``c_n`` [1, batch, hidden]. Nodes: 2 in the main graph, 9 + 10 in the branches.
    Realistic benchmark size: ``mels=80, channels=256, hidden=512, num_classes=512``.

    Failure class: cleanup dropping a branch's Identity of an outer value (onnxruntime refuses
    the branch), calibration of tensors that exist only in the branch taken, and an outer weight
    read by two branches that must be quantized once.
    """
    check_opset(opset, 13, "build_streaming_if")
    require(min(mels, channels, hidden, num_classes) >= 1, "build_streaming_if: sizes must be >= 1")
    require(1 <= narrow_mels <= mels, f"build_streaming_if: narrow_mels must be in [1, mels], got {narrow_mels}")
    g = GraphBuilder(seed, opset)
    x = g.input("features", TensorProto.FLOAT, [batch, mels, frames])
    rate = g.input("sample_rate", TensorProto.INT64, [])
    g.input("h0", TensorProto.FLOAT, [1, batch, hidden])
    g.input("c0", TensorProto.FLOAT, [1, batch, hidden])
    with g.scope("wideband"):
        cond = g.op("Greater", [rate, g.scalar("threshold_hz", WIDEBAND_THRESHOLD_HZ, np.int64)], name="is_wideband")
    with g.scope("shared"):
        shared = {
            "lstm": _lstm_weights(g, channels, hidden),
            "head": [g.const("head/weight", he_normal(g.rng, (hidden, num_classes), hidden)),
                     g.const("head/bias", (g.rng.standard_normal(num_classes) * 0.01).astype(np.float32))],
        }
    branches = []
    for tag, convs, narrow in (
        ("wideband", [(mels, channels, 5), (channels, channels, 3)], None),
        ("narrowband", [(narrow_mels, channels, 3), (channels, channels, 3)], narrow_mels),
    ):
        with g.scope(tag):
            sub = g.subgraph()
            outs = _speech_branch(sub, x, convs, shared, hidden, narrow=narrow)
            sub.outputs.extend([
                helper.make_tensor_value_info(outs[0], TensorProto.FLOAT, [frames, batch, num_classes]),
                helper.make_tensor_value_info(outs[1], TensorProto.FLOAT, [1, batch, hidden]),
                helper.make_tensor_value_info(outs[2], TensorProto.FLOAT, [1, batch, hidden]),
            ])
            branches.append(sub.graph(tag))
    g.op_multi("If", [cond], 3, name="route", output_names=["logits", "h_n", "c_n"], then_branch=branches[0], else_branch=branches[1])
    g.outputs.extend([
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [frames, batch, num_classes]),
        helper.make_tensor_value_info("h_n", TensorProto.FLOAT, [1, batch, hidden]),
        helper.make_tensor_value_info("c_n", TensorProto.FLOAT, [1, batch, hidden]),
    ])
    return g.model("streaming_if", doc="onnxq.models.build_streaming_if")


def build_loop_decoder(
    *, seed: int = 0, features: int = 32, hidden: int = 64, vocab: int = 64, steps: int = 6, batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A greedy-style recurrent decoder: a ``Loop`` with a fixed trip count updating a state.

    Input ``context`` float32 [batch, features]. Encoder: Gemm(transB) → Tanh gives ``memory``
    [batch, hidden], the initial state. ``Loop(M=steps, cond=true)`` body, per step:
    ``h1 = Relu(Gemm(state, W1, b1))`` (body-local weights), ``pre = Gemm(h1, W2, b2) +
    MatMul(memory, Wm)`` (W2 and Wm are OUTER-SCOPE initializers, ``memory`` an outer activation),
    ``state' = Tanh(pre)``, ``logits_t = Gemm(state', Wo, bo)`` (outer weights); the condition is
    passed through. Outputs: ``final_state`` [batch, hidden] (the loop-carried value) and
    ``logits`` [steps, batch, vocab] (the stacked scan output). Nodes: 3 in the main graph, 8 in
    the body. Realistic benchmark size: ``features=256, hidden=512, vocab=1000, steps=32``.

    Failure class: calibration must observe every iteration of the body (one exposed tensor per
    step, merged), and fp16 must keep the loop-carried state's type equal at the body's input and
    output.
    """
    check_opset(opset, 13, "build_loop_decoder")
    require(min(features, hidden, vocab, steps) >= 1, "build_loop_decoder: sizes must be >= 1")
    g = GraphBuilder(seed, opset)
    x = g.input("context", TensorProto.FLOAT, [batch, features])
    with g.scope("encoder"):
        memory = g.op("Tanh", [gemm(g, x, features, hidden, name="fc")], name="tanh")
    with g.scope("decoder"):
        trip = g.const("steps", np.array(steps, np.int64))
        keep_going = g.const("keep_going", np.array(True))
        w2 = g.const("step/fc2/weight", he_normal(g.rng, (hidden, hidden), hidden) * np.float32(0.5))
        b2 = g.const("step/fc2/bias", (g.rng.standard_normal(hidden) * 0.01).astype(np.float32))
        wm = g.const("step/memory/weight", he_normal(g.rng, (hidden, hidden), hidden) * np.float32(0.5))
        wo = g.const("step/out/weight", he_normal(g.rng, (vocab, hidden), hidden))
        bo = g.const("step/out/bias", (g.rng.standard_normal(vocab) * 0.01).astype(np.float32))
        body = g.subgraph()
        with body.scope("step"):
            body.input(body.unique("iteration"), TensorProto.INT64, [])  # unused: every step is alike
            cond_in = body.input(body.unique("cond_in"), TensorProto.BOOL, [])
            state = body.input(body.unique("state"), TensorProto.FLOAT, [batch, hidden])
            h1 = body.op("Relu", [gemm(body, state, hidden, hidden, name="fc1")], name="relu")
            pre = body.op("Gemm", [h1, w2, b2], name="fc2", transB=1)
            pre = body.op("Add", [pre, body.op("MatMul", [memory, wm], name="memory/matmul")], name="add_memory")
            new_state = body.op("Tanh", [pre], name="tanh")
            logits = body.op("Gemm", [new_state, wo, bo], name="out", transB=1)
            cond_out = body.op("Identity", [cond_in], name="keep_going")
        body.outputs.extend([
            helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
            helper.make_tensor_value_info(new_state, TensorProto.FLOAT, [batch, hidden]),
            helper.make_tensor_value_info(logits, TensorProto.FLOAT, [batch, vocab]),
        ])
        g.op_multi("Loop", [trip, keep_going, memory], 2, name="loop", output_names=["final_state", "logits"], body=body.graph("decoder_step"))
    g.outputs.extend([
        helper.make_tensor_value_info("final_state", TensorProto.FLOAT, [batch, hidden]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [steps, batch, vocab]),
    ])
    return g.model("loop_decoder", doc="onnxq.models.build_loop_decoder")


def build_scan_rnn(
    *, seed: int = 0, input_size: int = 64, hidden: int = 64, num_classes: int = 16, seq: Dim = "T", batch: Dim = "N",
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """An Elman RNN written as a ``Scan`` over time steps, then a per-step classifier.

    Inputs ``x`` float32 [seq, batch, input_size] and ``h0`` [batch, hidden]. ``Scan`` (one state,
    one scan input along axis 0) body: ``h' = Tanh(MatMul(x_t, Wx) + MatMul(h, Wh) + b)`` with
    ``Wx`` an OUTER-SCOPE initializer and ``Wh``, ``b`` the body's own; the body returns ``h'`` as
    the new state and, through an Identity (an output name appears once per graph), as the scan
    output. Main graph: MatMul+Add classifier on the stacked states. Outputs ``h_n`` [batch,
    hidden] and ``logits`` [seq, batch, num_classes]. Nodes: 3 in the main graph, 6 in the body.
    Weights follow PyTorch's RNN init (uniform in ±1/sqrt(hidden)). Realistic benchmark size:
    ``input_size=256, hidden=512`` over 100 steps.

    Failure class: the body's tensors take one value per time step; calibration must merge all
    of them, and cleanup must keep the body's state/scan-output Identity (it copies a body output).
    """
    check_opset(opset, 13, "build_scan_rnn")
    require(min(input_size, hidden, num_classes) >= 1, "build_scan_rnn: sizes must be >= 1")
    g = GraphBuilder(seed, opset)
    x = g.input("x", TensorProto.FLOAT, [seq, batch, input_size])
    h0 = g.input("h0", TensorProto.FLOAT, [batch, hidden])
    k = 1.0 / np.sqrt(hidden)
    with g.scope("rnn"):
        wx = g.const("Wx", g.rng.uniform(-k, k, (input_size, hidden)).astype(np.float32))
        body = g.subgraph()
        with body.scope("cell"):
            h = body.input(body.unique("h"), TensorProto.FLOAT, [batch, hidden])
            x_t = body.input(body.unique("x_t"), TensorProto.FLOAT, [batch, input_size])
            a = body.op("MatMul", [x_t, wx], name="input_matmul")
            r = body.op("MatMul", [h, body.const("Wh", body.rng.uniform(-k, k, (hidden, hidden)).astype(np.float32))], name="recurrent_matmul")
            s = body.op("Add", [a, r], name="add")
            s = body.op("Add", [s, body.const("b", body.rng.uniform(-k, k, hidden).astype(np.float32))], name="add_bias")
            h_new = body.op("Tanh", [s], name="tanh")
            y = body.op("Identity", [h_new], name="scan_out")
        body.outputs.extend([
            helper.make_tensor_value_info(h_new, TensorProto.FLOAT, [batch, hidden]),
            helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, hidden]),
        ])
        g.op_multi("Scan", [h0, x], 2, name="scan", output_names=["h_n", "rnn/states"], body=body.graph("rnn_cell"), num_scan_inputs=1)
    y = linear(g, "rnn/states", hidden, num_classes, name="head/fc", out="logits")
    g.outputs.extend([
        helper.make_tensor_value_info("h_n", TensorProto.FLOAT, [batch, hidden]),
        helper.make_tensor_value_info(y, TensorProto.FLOAT, [seq, batch, num_classes]),
    ])
    return g.model("scan_rnn", doc="onnxq.models.build_scan_rnn")
