"""OpenVINO's CPU plugin, reached lazily: sessions shaped like onnxruntime's, the precisions it executed,
the ops it cannot run, and whether its 8-bit kernels saturate on this CPU.

OpenVINO is an optional extra (``pip install 'onnxq[openvino]'``): nothing here imports it at module
load, and :func:`require_openvino` turns its absence into one :class:`~onnxq.errors.ConfigError`
naming the extra.

How OpenVINO runs a QDQ model (its documentation, "Quantized models compute and restrictions" and
"Low Precision Transformations"): the ONNX frontend turns each QuantizeLinear/DequantizeLinear pair
into a ``FakeQuantize``; the low-precision transformations split it into an int8 quantize and a
dequantization that they propagate through the graph until an op with an int8 kernel takes the
quantized tensor. Whether that happened is visible only at run time: with ``PERF_COUNT`` on, each
executed node reports its kernel (``exec_type``), e.g. ``jit_avx2_I8`` or ``brgconv_avx2_f32``.
:func:`executed_precisions` reads them, so "int8 ran" is checked, not assumed.

Saturation: OpenVINO's own "Saturation (overflow) issue workaround" page says that 8-bit
instructions of CPUs without VNNI (SSE, AVX2, AVX-512) may saturate the intermediate sum of the dot
product, and that 7-bit weights avoid it. :func:`openvino_products_saturate` measures it on this
CPU with OpenVINO, as :func:`onnxq.runtime.kernels.int8_products_saturate` does for onnxruntime.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .. import ir
from ..errors import ConfigError, InvalidModelError

__all__ = [
    "OPENVINO_EXTRA",
    "OpenVINOSession",
    "require_openvino",
    "openvino_version",
    "executed_precisions",
    "int8_nodes",
    "openvino_unsupported_ops",
    "openvino_products_saturate",
]

log = logging.getLogger(__name__)

#: How to install OpenVINO for onnxq (named by every error about its absence).
OPENVINO_EXTRA = "pip install 'onnxq[openvino]'"
#: Node types whose int8 execution carries the speedup (the others are glue around them).
_COMPUTE_TYPES = frozenset(
    {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "FullyConnectedQuantizedLegacy", "MatMul", "Gemm", "GroupDeconvolution"}
)


def require_openvino() -> ModuleType:
    """The ``openvino`` module.

    Raises:
        ConfigError: OpenVINO is not installed (the message names the extra to install).
    """
    try:
        import openvino
    except ImportError as e:
        raise ConfigError(f"OpenVINO is not installed; install the openvino extra: {OPENVINO_EXTRA}") from e
    return openvino


def openvino_version() -> str:
    """The installed OpenVINO's version string."""
    return str(require_openvino().__version__)


@functools.cache
def _core() -> Any:
    return require_openvino().Core()


class _Port:
    """An input or output as onnxruntime's sessions describe them (``.name``)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _read(model: Any, where: str) -> Any:
    """An OpenVINO model from a path, bytes, ModelProto or :class:`~onnxq.ir.Model`."""
    core = _core()
    try:
        if isinstance(model, (str, os.PathLike)):
            return core.read_model(os.fspath(model))
        if isinstance(model, ir.Model) and not ir.serializes_cheaply(model):
            with ir.session_file(model) as path:
                return core.read_model(str(path))
        from .session import model_bytes

        return core.read_model(model_bytes(model), b"")
    except RuntimeError as e:  # OpenVINO reports conversion failures as RuntimeError with a report
        raise InvalidModelError(f"{where}: OpenVINO cannot read the model: {_one_line(e)}") from e


class OpenVINOSession:
    """A model compiled for OpenVINO's CPU plugin, run like an onnxruntime session.

    ``run(None, feeds)`` returns the outputs in graph order (copies: OpenVINO reuses its buffers),
    ``get_inputs()`` / ``get_outputs()`` list ports with a ``.name``; so the latency tuner and the
    benchmark harness time either runtime the same way.

    Args:
        model: a path, bytes, ModelProto or Model.
        threads: ``INFERENCE_NUM_THREADS`` (0: OpenVINO's default).
        perf_counters: collect per-node execution info (``PERF_COUNT``), read by
            :func:`executed_precisions`.
        shapes: static input shapes to compile for (``{input: shape}``); dynamic dims otherwise.

    Precision: ``INFERENCE_PRECISION_HINT`` is fixed to f32, so a float model is timed in fp32 on every
    CPU (OpenVINO would pick bf16 on CPUs that have it) and an int8 model's float parts too.
    """

    def __init__(
        self, model: Any, *, threads: int = 1, perf_counters: bool = False, shapes: Mapping[str, Sequence[int]] | None = None, where: str = "model"
    ) -> None:
        ov_model = _read(model, where)
        if shapes:
            ov_model.reshape({name: list(shape) for name, shape in shapes.items()})
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if perf_counters:
            config["PERF_COUNT"] = "YES"
        try:
            self.compiled = _core().compile_model(ov_model, "CPU", config)
        except RuntimeError as e:
            raise InvalidModelError(f"{where}: OpenVINO's CPU plugin cannot compile the model: {_one_line(e)}") from e
        self.request = self.compiled.create_infer_request()
        self._inputs = [_Port(p.get_any_name()) for p in self.compiled.inputs]
        self._outputs = [_Port(p.get_any_name()) for p in self.compiled.outputs]

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds`` (extra keys ignored); the outputs named (all when None), copied."""
        names = {p.name for p in self._inputs}
        result = self.request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items() if k in names})
        values = {port.get_any_name(): np.array(result[port], copy=True) for port in self.compiled.outputs}
        wanted = output_names if output_names is not None else [p.name for p in self._outputs]
        return [values[n] for n in wanted]

    def profiling(self) -> list[tuple[str, str, str]]:
        """``(node name, node type, exec type)`` of every node the last run executed (needs ``perf_counters``)."""
        return [(p.node_name, p.node_type, p.exec_type) for p in self.request.get_profiling_info() if p.status == p.Status.EXECUTED]


def _precision(exec_type: str) -> str:
    """The precision suffix of an OpenVINO kernel name (``jit_avx2_I8`` → ``i8``, ``brgconv_avx2_f32`` → ``f32``)."""
    tail = exec_type.rsplit("_", 1)[-1].lower()
    return tail if tail in ("i8", "u8", "f32", "f16", "bf16", "i32", "i64") else "other"


def executed_precisions(session: OpenVINOSession) -> Counter[tuple[str, str]]:
    """``(node type, precision) → count`` over the nodes the last run executed."""
    return Counter((node_type, _precision(exec_type)) for _, node_type, exec_type in session.profiling())


def int8_nodes(session: OpenVINOSession) -> tuple[list[str], list[str]]:
    """(compute nodes that ran an 8-bit kernel, compute nodes that ran a float kernel) of the last run."""
    int8: list[str] = []
    other: list[str] = []
    for name, node_type, exec_type in session.profiling():
        if node_type in _COMPUTE_TYPES:
            (int8 if _precision(exec_type) in ("i8", "u8") else other).append(name)
    return int8, other


def openvino_unsupported_ops(model: ir.Model) -> dict[str, str]:
    """Op types of ``model`` that OpenVINO cannot run on CPU, each with why.

    Two questions asked of OpenVINO itself: which nodes its ONNX frontend cannot convert
    (``convert_partially`` leaves them as framework nodes), and which converted ops the CPU plugin
    does not support (``Core.query_model``).
    """
    ov = require_openvino()
    op_of = {n.name: (f"{n.domain}." if n.domain not in (None, "", "ai.onnx") else "") + n.op for n in ir.iter_nodes(model.graph)}
    found: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="onnxq-ov-") as tmp:
        path = Path(tmp) / "model.onnx"
        ir.save(model, path)
        frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
        partial = frontend.convert_partially(frontend.load(str(path)))
        for op in partial.get_ordered_ops():
            if "FrameworkNode" in op.get_type_name():
                name = op.get_friendly_name()
                found[op_of.get(name, name)] = "OpenVINO's ONNX frontend has no conversion rule for it"
        if found:
            return found
        ov_model = _core().read_model(str(path))
        supported = _core().query_model(ov_model, "CPU")
        for op in ov_model.get_ordered_ops():
            if op.get_type_name() not in ("Parameter", "Result", "Constant") and op.get_friendly_name() not in supported:
                found.setdefault(op.get_type_name(), "OpenVINO's CPU plugin does not support it (query_model)")
    return found


#: Dot-product length of the saturation probe (as onnxruntime's probe).
_SATURATION_K = 64


@functools.cache
def openvino_products_saturate(activation_dtype: str = "uint8", weight_dtype: str = "int8") -> bool:
    """Does OpenVINO's 8-bit convolution on this CPU saturate for these operand types? Measured.

    Runs ``Q → DQ → Conv(DQ(int8 weight)) → Q → DQ`` (a 1x1 convolution over 64 channels, the form
    onnxq writes) on the extremes of both grids, where the exact result needs the int32 accumulator,
    through OpenVINO's CPU plugin, and compares with the exact result. Cached per process.

    Raises:
        ConfigError: OpenVINO is not installed.
    """
    require_openvino()
    if activation_dtype not in ("uint8", "int8") or weight_dtype not in ("uint8", "int8"):
        return False
    a_np, w_np = np.dtype(activation_dtype), np.dtype(weight_dtype)
    a_max, w_max = int(np.iinfo(a_np).max), int(np.iinfo(w_np).max)
    exact = _SATURATION_K * a_max * w_max
    out_scale = float(2 ** int(np.ceil(np.log2(exact / 100))))
    session = OpenVINOSession(_probe_model(a_np, w_np, w_max, out_scale), threads=1, where="OpenVINO saturation probe")
    got = float(session.run(None, {"x": np.full((1, _SATURATION_K, 2, 2), a_max, np.float32)})[0].ravel()[0])
    expected = float(np.rint(exact / out_scale) * out_scale)
    log.debug("OpenVINO saturation probe %s x %s: got %s, exact %s", activation_dtype, weight_dtype, got, expected)
    return abs(got - expected) > out_scale / 2


def _probe_model(a_np: np.dtype, w_np: np.dtype, w_max: int, out_scale: float) -> Any:
    x = ir.make_variable("x", dtype=np.float32, shape=[1, _SATURATION_K, 2, 2])
    xq, xd, wd, c, cq, y = (ir.make_variable(n) for n in ("xq", "xd", "wd", "c", "cq", "y"))
    one = ir.make_constant("unit", np.array(1.0, np.float32))
    ones = ir.make_constant("w_scale", np.ones(8, np.float32))
    a_zp, w_zp = ir.make_constant("a_zp", np.zeros((), a_np)), ir.make_constant("w_zp", np.zeros(8, w_np))
    y_scale = ir.make_constant("y_scale", np.array(out_scale, np.float32))
    weight = ir.make_constant("w", np.full((8, _SATURATION_K, 1, 1), w_max, w_np))
    nodes = [
        ir.make_node("QuantizeLinear", [x, one, a_zp], [xq]),
        ir.make_node("DequantizeLinear", [xq, one, a_zp], [xd]),
        ir.make_node("DequantizeLinear", [weight, ones, w_zp], [wd], attrs={"axis": 0}),
        ir.make_node("Conv", [xd, wd], [c]),
        ir.make_node("QuantizeLinear", [c, y_scale, a_zp], [cq]),
        ir.make_node("DequantizeLinear", [cq, y_scale, a_zp], [y]),
    ]
    y.dtype = np.float32
    return ir.nodes_to_proto(nodes, [y], {ir.ONNX_DOMAIN: 13}, inputs=[x])


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return " ".join(useful or lines)[:400]
