"""Does onnxruntime's CPU provider have a kernel for this op with these input types? Ask it.

Passes must never emit a node onnxruntime cannot load: the ONNX schema allowing ``float16`` for an op
says nothing about whether the CPU provider registered a ``float16`` kernel (most ops have none for
``bfloat16``, many have none for ``float16``, and the set changes between releases). A hand-kept
table of "known" kernels goes stale with every onnxruntime release, so :func:`has_cpu_kernel` probes
for real: it builds a one-node model whose inputs have the requested element types (shapes left
unknown), creates a CPU session with graph optimizations disabled (so no fusion hides the node) and
reports whether that worked. Session creation is where onnxruntime assigns kernels, so a missing
kernel fails there ("Could not find an implementation for ..."). Results are cached per process.

Loading is not the whole story for float16: onnxruntime's mandatory InsertCastTransformer wraps a
float16 node that has no CPU kernel in Cast-to-float32 nodes (onnxruntime 1.32 does this for Relu,
Add, MatMul, Conv, Softmax...), so the node loads but computes in fp32. The probe therefore also
reads back the graph onnxruntime actually placed (``optimized_model_filepath``) and reports a
*native* kernel only when the node survived unchanged; ``native=False`` accepts the fallback.

A probe answers "would onnxruntime load this node"; it runs nothing, so kernels that only check
their inputs at run time (e.g. shape constraints) still need the real model to be run.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import onnx
import onnxruntime as ort
from onnx import TensorProto

from .. import ir

__all__ = ["has_cpu_kernel", "cpu_kernel_error", "tensor_type", "int8_products_saturate", "resolve_reduce_range", "REDUCE_RANGE_NOTE"]

#: How the report's sentence about automatic 7-bit weights starts (a later measurement may replace it).
REDUCE_RANGE_NOTE = "7-bit weights (reduce_range):"

log = logging.getLogger(__name__)

_ALIASES = {
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "half": "FLOAT16",
    "bf16": "BFLOAT16",
    "fp16": "FLOAT16",
    "fp32": "FLOAT",
}


def tensor_type(name: str | int) -> int:
    """ONNX element type enum for a type name (``"float16"``, ``"tensor(float16)"``, ``"uint4"``...).

    Raises:
        ValueError: unknown type name.
    """
    if isinstance(name, int):
        return name
    text = name.strip()
    if text.startswith("tensor(") and text.endswith(")"):
        text = text[len("tensor(") : -1]
    key = _ALIASES.get(text.lower(), text.upper())
    try:
        return TensorProto.DataType.Value(key)
    except ValueError:
        raise ValueError(f"unknown tensor element type {name!r}") from None


def _freeze_attrs(attrs: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    if not attrs:
        return ()
    frozen = []
    for key, value in sorted(attrs.items()):
        if isinstance(value, list):
            value = tuple(value)
        frozen.append((key, value))
    return tuple(frozen)


def _expand_types(input_types: tuple[str, ...], num_inputs: int | None) -> tuple[str, ...]:
    types = tuple(input_types)
    if num_inputs is None:
        return types
    if num_inputs < 0:
        raise ValueError(f"num_inputs must be >= 0, got {num_inputs}")
    if not types:
        raise ValueError("num_inputs given without input_types")
    if len(types) >= num_inputs:
        return types[:num_inputs]
    return types + (types[-1],) * (num_inputs - len(types))


def _probe_model(
    op_type: str, domain: str, opset: int, types: tuple[str, ...], attrs: tuple[tuple[str, Any], ...], num_outputs: int
) -> onnx.ModelProto:
    inputs = []
    node_inputs = []
    for i, t in enumerate(types):
        if t == "":  # an omitted optional input
            node_inputs.append(ir.make_variable(""))
            continue
        var = ir.make_variable(f"x{i}", dtype=tensor_type(t))
        inputs.append(var)
        node_inputs.append(var)
    outputs = [ir.make_variable(f"y{i}") for i in range(num_outputs)]
    node_attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in attrs}
    node = ir.make_node(op_type, node_inputs, outputs, name="probe", attrs=node_attrs, domain=domain or None)
    opsets = {ir.ONNX_DOMAIN: opset}
    if domain and domain != "ai.onnx":
        opsets[domain] = 1
    # int4/uint4 and the other newer element types need IR 10, which onnxruntime >= 1.20 reads.
    return ir.nodes_to_proto([node], outputs, opsets, inputs=inputs, ir_version=10)


@functools.cache
def _probe(
    op_type: str, domain: str, opset: int, types: tuple[str, ...], attrs: tuple[tuple[str, Any], ...], num_outputs: int
) -> tuple[str | None, str | None]:
    """(why the node does not load, why it has no native kernel) — None where it does."""
    try:
        model = _probe_model(op_type, domain, opset, types, attrs, num_outputs)
    except ValueError as e:
        return str(e), str(e)
    with tempfile.TemporaryDirectory(prefix="onnxq-probe-") as tmp:
        saved = os.path.join(tmp, "probe.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 4
        so.intra_op_num_threads = 1
        so.optimized_model_filepath = saved
        try:
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises NotImplemented / Fail / InvalidGraph from its C++ core
            msg = " ".join(str(e).split())
            log.debug("kernel probe %s(%s) types=%s attrs=%s: %s", op_type, domain or "ai.onnx", types, attrs, msg)
            return msg, msg
        try:
            placed = [(n.op_type, n.domain) for n in onnx.load(saved, load_external_data=False).graph.node]
        except Exception as e:  # the saved graph is only a diagnostic; loading is what matters
            log.debug("kernel probe %s: cannot read onnxruntime's graph: %s", op_type, e)
            return None, None
    if placed != [(op_type, domain or "")]:
        # onnxruntime's mandatory InsertCastTransformer wraps float16 nodes that lack a CPU kernel in
        # Cast-to-float32 (or expands their function body): the model loads, but the op is not
        # computed in the requested type and pays two Casts per node.
        ops = ", ".join(o for o, _ in placed)
        return None, f"no native CPU kernel: onnxruntime rewrote the node into [{ops}] (fp32 fallback)"
    return None, None


def cpu_kernel_error(
    op_type: str,
    domain: str = "",
    opset: int = 17,
    input_types: tuple[str, ...] = ("float",),
    attrs: Mapping[str, Any] | None = None,
    num_inputs: int | None = None,
    num_outputs: int = 1,
    *,
    native: bool = True,
) -> str | None:
    """Why onnxruntime's CPU provider cannot run ``op_type`` with these input types, or None when it can.

    By default (``native=True``) the kernel must really compute in the requested types: for float16
    nodes without a float16 CPU kernel onnxruntime silently inserts Cast-to-float32 around the node
    (its InsertCastTransformer) — such a node *loads* but computes in fp32 and pays two Casts, so it
    counts as missing. ``native=False`` accepts that fallback (the node loads and runs).

    Args:
        op_type: the operator, e.g. ``"Relu"`` or ``"MatMulNBits"``.
        domain: its domain (``""`` for ai.onnx, ``"com.microsoft"`` for contrib ops, which are
            probed at domain version 1).
        opset: the default-domain opset of the probe model (selects the op's version).
        input_types: element type of each input (``"float16"``, ``"tensor(bfloat16)"``, ``"uint4"``);
            ``""`` leaves an optional input out.
        attrs: node attributes (required ones must be given, e.g. MatMulNBits' ``K``/``N``).
        num_inputs: number of inputs; ``input_types`` shorter than this is padded with its last
            entry, so ``input_types=("float16",), num_inputs=2`` probes a float16 binary op.
        num_outputs: outputs to declare (their types are left to onnxruntime's inference).
        native: require a kernel for exactly these types (see above).

    Returns:
        None when a session with that node could be created, else the reason (cached per argument set).
    """
    types = _expand_types(tuple(input_types), num_inputs)
    load_error, native_error = _probe(op_type, domain or "", int(opset), types, _freeze_attrs(attrs), int(num_outputs))
    return native_error if native else load_error


def has_cpu_kernel(op_type: str, *args: Any, **kwargs: Any) -> bool:
    """True when onnxruntime's CPU provider has a kernel for ``op_type`` with these input types:
    :func:`cpu_kernel_error` found no reason against it (same arguments)."""
    return cpu_kernel_error(op_type, *args, **kwargs) is None


#: Dot-product length of the saturation probe: long enough to reach the kernel's vector loop.
_SATURATION_K = 64


@functools.cache
def int8_products_saturate(activation_dtype: str = "uint8", weight_dtype: str = "int8") -> bool:
    """Does onnxruntime's 8-bit GEMM on this CPU saturate for these operand types? Measured, not guessed.

    On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) MLAS multiplies 8-bit operands with
    ``VPMADDUBSW``, which adds two adjacent products into a *saturating* int16: 2·255·127 = 64,770
    does not fit in 32,767, so activations near the top of the grid times weights near ±127 come
    out clipped (int8 activations are shifted to uint8 first, so int8·int8 QDQ saturates too).
    Every int8 Conv/MatMul/Gemm (QLinearConv, QGemm, MatMulInteger, DynamicQuantizeMatMul) goes
    through that kernel; onnxruntime documents the hazard and the cure, 7-bit weights
    (``reduce_range``: 2·255·64 fits). VNNI CPUs (``VPDPBUSD`` accumulates in int32) and ARM do not
    saturate, and uint8·uint8 widens to int16 before multiplying.

    Rather than read CPU flags (which do not say which kernel onnxruntime picks after its graph
    fusions), this runs the form onnxq writes — Q → DQ → MatMul(DQ(int8 weight)) → Q → DQ, fused by
    onnxruntime at full optimization — on the extremes of both grids, where the exact result needs
    the int32 accumulator, and compares. Cached per process.

    Args:
        activation_dtype / weight_dtype: the 8-bit operand types (``"uint8"`` / ``"int8"``); other
            types never saturate (16-bit and float kernels accumulate wider).
    """
    if activation_dtype not in ("uint8", "int8") or weight_dtype not in ("uint8", "int8"):
        return False
    import numpy as np

    a_np, w_np = np.dtype(activation_dtype), np.dtype(weight_dtype)
    a_max, w_max = int(np.iinfo(a_np).max), int(np.iinfo(w_np).max)
    exact = _SATURATION_K * a_max * w_max
    out_scale = float(2 ** int(np.ceil(np.log2(exact / 100))))  # the exact result lands near 100 on the output grid
    one = np.array(1.0, np.float32)
    x = ir.make_variable("x", dtype=np.float32, shape=[1, _SATURATION_K])
    xq, xd, wd, c, cq, y = (ir.make_variable(n) for n in ("xq", "xd", "wd", "c", "cq", "y"))
    a_zp, w_zp = ir.make_constant("a_zp", np.zeros((), a_np)), ir.make_constant("w_zp", np.zeros((), w_np))
    y_scale, unit = ir.make_constant("y_scale", np.array(out_scale, np.float32)), ir.make_constant("unit", one)
    weight = ir.make_constant("w", np.full((_SATURATION_K, 8), w_max, w_np))
    nodes = [
        ir.make_node("QuantizeLinear", [x, unit, a_zp], [xq]),
        ir.make_node("DequantizeLinear", [xq, unit, a_zp], [xd]),
        ir.make_node("DequantizeLinear", [weight, unit, w_zp], [wd]),
        ir.make_node("MatMul", [xd, wd], [c]),
        ir.make_node("QuantizeLinear", [c, y_scale, a_zp], [cq]),
        ir.make_node("DequantizeLinear", [cq, y_scale, a_zp], [y]),
    ]
    y.dtype = np.float32
    proto = ir.nodes_to_proto(nodes, [y], {ir.ONNX_DOMAIN: 13}, inputs=[x])
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        got = float(session.run(None, {"x": np.full((1, _SATURATION_K), a_max, np.float32)})[0].ravel()[0])
    except Exception as e:  # no kernel for these types: nothing runs them, nothing saturates
        log.debug("saturation probe %s x %s: %s", activation_dtype, weight_dtype, e)
        return False
    expected = float(np.rint(exact / out_scale) * out_scale)
    saturates = abs(got - expected) > out_scale / 2
    log.debug("saturation probe %s x %s: got %s, exact %s", activation_dtype, weight_dtype, got, expected)
    return saturates


def resolve_reduce_range(setting: bool | None, activation_dtype: str, weight_dtype: str) -> tuple[bool, str | None]:
    """The ``reduce_range`` to use: the user's choice, or (``None``) what this CPU needs.

    Returns:
        (reduce_range, a sentence for the report when it was switched on automatically, else None).
    """
    if setting is not None:
        return setting, None
    if int8_products_saturate(activation_dtype, weight_dtype):
        return True, (
            f"{REDUCE_RANGE_NOTE} onnxruntime's {activation_dtype}·{weight_dtype} kernel on this CPU saturates "
            "(no VNNI; measured); pass --no-reduce-range for a VNNI deployment target"
        )
    return False, None
