"""Deployment targets as data: profiles (what a conversion for a target sets, where it is tuned, how its
output is validated), the ops each target runs, and the checks that run on the target's own runtime
where one runs on this machine (onnxruntime, its mobile ``.ort`` format, OpenVINO).

- :data:`TARGETS` / :func:`get_target`: ``generic``, ``ort-cpu``, ``ort-mobile``, ``openvino``,
  ``tensorrt``, ``qnn`` (:mod:`.profiles` has the table of what each sets and why).
- :func:`unsupported_ops`: the ops of a model a target cannot run.
- :func:`validate` → :class:`Validation`: the profile's validation step.
- :func:`check_target` → :class:`TargetReport`: unsupported ops, validation and lint together.

This package is part of the framework: it never imports the pass library or the application layer.
"""

from __future__ import annotations

from . import profiles  # noqa: F401  (imported to register the profiles)
from ._profile import TARGETS, TargetError, TargetProfile, TargetRules, get_target, register_target, target_names
from .support import unsupported_ops

__all__ = [
    "TARGETS",
    "TargetError",
    "TargetProfile",
    "TargetRules",
    "get_target",
    "register_target",
    "target_names",
    "unsupported_ops",
]
