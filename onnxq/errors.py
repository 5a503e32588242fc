"""Typed errors raised by onnxq.

Every error onnxq raises on purpose derives from :class:`OnnxqError`, so the CLI can turn it into one
clear line and exit code 2 while unexpected exceptions (bugs) keep their traceback. Messages name the
file, node or tensor involved and state what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "OnnxqError",
    "InvalidModelError",
    "UnsupportedOpError",
    "CalibrationDataError",
    "CalibrationError",
    "PassError",
    "PreconditionError",
    "ConfigError",
    "OutputError",
    "InternalError",
]


class OnnxqError(Exception):
    """Base class of all errors onnxq raises deliberately."""


class InvalidModelError(OnnxqError):
    """The model file or ModelProto cannot be read, fails the checker, or uses an unsupported opset."""


class UnsupportedOpError(OnnxqError):
    """An operator (or operator configuration) that onnxq cannot handle where it was required."""


class CalibrationDataError(OnnxqError):
    """Calibration / evaluation data is missing, unreadable or does not match the model's inputs."""


class CalibrationError(OnnxqError):
    """Running the model on calibration data failed (onnxruntime error, NaN/Inf activations, ...)."""


class PassError(OnnxqError):
    """A pass failed; the message names the pass and the passes that ran before it."""


class PreconditionError(OnnxqError):
    """A pass's precondition does not hold (e.g. the opset is too old for the op it must emit)."""


class ConfigError(OnnxqError):
    """A pass option, pipeline file or CLI option is invalid; the message lists what is valid."""


class OutputError(OnnxqError):
    """An output cannot be written where asked: it would overwrite an input, its folder is missing or
    not writable, the disk is full, ... The message names the output and the path."""


class InternalError(OnnxqError):
    """onnxq produced something invalid from valid input: a bug in onnxq, never blamed on the input.

    The CLI reports it as one line with exit code 1 (a bug), unlike the other errors (exit code 2).
    """
