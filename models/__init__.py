"""Deterministic ONNX test models for onnxq, each representing a real-world failure class.

Every builder is a pure function ``build_xxx(*, seed=0, <sizes>, opset=17) -> onnx.ModelProto``:
the same arguments give byte-identical ``SerializeToString()``, the model passes
``onnx.checker.check_model(full_check=True)`` and runs on onnxruntime's CPU provider. Default sizes
are tiny (milliseconds per run); the docstrings give "realistic" sizes for benchmarks.

``BUILDERS`` maps short names to builders and :func:`build` looks one up by name, which is what the
``python -m models NAME -o OUT.onnx`` command (and onnxq's ``models`` subcommand) call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import onnx

from ._cnn import (
    DEEP_CNN_FIXED_NODES,
    DEEP_CNN_NODES_PER_BLOCK,
    build_cnn,
    build_deep_cnn,
    build_mobilenet_v3_like,
    deep_cnn_blocks_for,
)
from ._common import DEFAULT_IR_VERSION, DEFAULT_OPSET, ModelArgumentError
from ._control_flow import build_loop_decoder, build_scan_rnn, build_streaming_if
from ._dense import build_layernorm_classifier, build_mlp, build_transformer
from ._mobilenetv2 import build_mobilenet_v2_like
from ._rnn import build_cnn_lstm, build_lstm
from ._special import build_detector_head, build_if_model
from ._task import build_ctc_recognizer, build_yolo_detector

__all__ = [
    "BUILDERS",
    "DEEP_CNN_FIXED_NODES",
    "DEEP_CNN_NODES_PER_BLOCK",
    "DEFAULT_IR_VERSION",
    "DEFAULT_OPSET",
    "ModelArgumentError",
    "build",
    "build_cnn",
    "build_cnn_lstm",
    "build_ctc_recognizer",
    "build_deep_cnn",
    "build_detector_head",
    "build_if_model",
    "build_layernorm_classifier",
    "build_loop_decoder",
    "build_lstm",
    "build_mlp",
    "build_mobilenet_v3_like",
    "build_scan_rnn",
    "build_streaming_if",
    "build_transformer",
    "build_yolo_detector",
    "builder_parameters",
    "deep_cnn_blocks_for",
]

BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "cnn": build_cnn,
    "mlp": build_mlp,
    "transformer": build_transformer,
    "lstm": build_lstm,
    "mobilenet": build_mobilenet_v3_like,
    "detector": build_detector_head,
    "layernorm-classifier": build_layernorm_classifier,
    "if-model": build_if_model,
    "cnn-lstm": build_cnn_lstm,
    "deep-cnn": build_deep_cnn,
    "yolo-detector": build_yolo_detector,
    "ctc-recognizer": build_ctc_recognizer,
    "streaming-if": build_streaming_if,
    "loop-decoder": build_loop_decoder,
    "scan-rnn": build_scan_rnn,
    "mobilenetv2": build_mobilenet_v2_like,
}
"""Short name → builder; the names the CLI accepts."""


def builder_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters (with defaults) of builder ``name``, e.g. to list valid ``--set`` keys."""
    return dict(inspect.signature(_lookup(name)).parameters)


def _lookup(name: str) -> Callable[..., onnx.ModelProto]:
    """Return the builder called ``name`` or raise an error that lists the valid names."""
    try:
        return BUILDERS[name]
    except KeyError:
        raise ModelArgumentError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(BUILDERS))}") from None


_ACCEPTS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "Dim": lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
    "None": lambda v: v is None,
    "Sequence[int]": lambda v: isinstance(v, (tuple, list)) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in v),
}


def _check_argument(name: str, param: inspect.Parameter, value: Any) -> None:
    """Refuse a value whose type the builder's annotation (e.g. ``Dim | None``) does not allow.

    Values typed on a command line arrive as int/float/bool/str/tuple; checking them here gives
    "width must be int" instead of a TypeError from deep inside a builder.
    """
    alternatives = [a.strip() for a in str(param.annotation).split("|")]
    if all(a in _ACCEPTS for a in alternatives) and not any(_ACCEPTS[a](value) for a in alternatives):
        raise ModelArgumentError(
            f"model {name!r}: parameter {param.name} must be {param.annotation}, got {value!r}")


def build(name: str, **kwargs: Any) -> onnx.ModelProto:
    """Build the model registered as ``name`` with builder keyword arguments ``kwargs``.

    Raises:
        ModelArgumentError: (a ``ValueError``) for an unknown name, an argument the builder does
            not take (both messages list what is valid) or a value of the wrong type.
    """
    builder = _lookup(name)
    valid = builder_parameters(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ModelArgumentError(
            f"model {name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    for key, value in kwargs.items():
        _check_argument(name, valid[key], value)
    return builder(**kwargs)
