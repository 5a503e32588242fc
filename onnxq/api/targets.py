"""A deployment target in a conversion: the static pipeline adapted to its profile, and the result checked.

The profile's option settings are applied where the options are validated
(:class:`~onnxq.api.ConversionOptions`); what remains is pipeline data, done here on the list of
steps (no pass knows about targets):

- ``expand-hardswish`` runs only where the target lacks a HardSwish kernel (onnxruntime's CPU);
- ``annotate-quantization`` gets ``reduce_range`` decided by the target's own kernels when left
  automatic (OpenVINO: :func:`onnxq.runtime.openvino.openvino_products_saturate`);
- ``tune-latency`` evaluates on the target's runtime, and times only where that runtime runs here;
- ``mixed-precision`` evaluates and times on the target's runtime (the options refuse it for a target
  whose runtime does not run here), over the precisions that runtime takes: ``dynamic-int8`` only on
  onnxruntime (its contrib ops), ``int16`` only where the profile allows 16-bit activations; without
  ``int16`` the opset stays the profile's;
- ``measure-fixed-point`` runs before ``insert-qdq`` with ``power_of_two_scales``.

After the run, :func:`check_result` validates the model on the target's runtime and lints it
(:func:`onnxq.targets.check.check_target`); with ``strict`` a failed check is one error. The
profile settings the user overrode with values of their own (:attr:`ConversionOptions.profile_overrides`)
go into the report's target section (``overrides``) and its notes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..ir import Model
from ..passes.quantization.mixed_precision import INT16, PRECISIONS, search_space
from ..plan import AccuracyGuardConfig
from ..targets import TargetError, TargetProfile, get_target
from ..targets.check import TargetReport, check_target
from .options import ConversionOptions, option_flag
from .recipes import recipe_target

__all__ = ["conversion_target", "adapt_steps", "check_result", "override_note", "artifact_paths", "write_artifacts"]

Step = dict[str, Any]
_WIDE = ("int16", "uint16")
_GUARD_FIELDS = ("min_agreement", "min_cosine", "eval_samples", "max_accuracy_trials", "accuracy_metric")


def conversion_target(opts: ConversionOptions) -> TargetProfile | None:
    """The target of a conversion: ``opts.target``, or the one its recipe names.

    Raises:
        ConfigError: ``--target`` and the recipe's ``target`` disagree, or ``strict`` without a target
            from either.
    """
    named = recipe_target(opts.recipe) if opts.recipe is not None else None
    if opts.target is not None and named is not None and named != opts.target:
        raise ConfigError(f"--target {opts.target} but the recipe '{opts.recipe}' names target '{named}'; drop one of them")
    name = opts.target or named
    if opts.strict and name is None:  # the options refuse this without a recipe; a recipe may name no target either
        raise ConfigError("--strict checks the result against a target's rules; give --target or a recipe with target = \"...\"")
    profile = get_target(name) if name is not None else None
    if profile is not None and "openvino" in (profile.runtime, profile.tune_runtime):
        from ..runtime.openvino import require_openvino

        require_openvino()  # before any work: the message names the extra to install
    return profile


def adapt_steps(opts: ConversionOptions, profile: TargetProfile | None, steps: list[Step]) -> tuple[list[Step], list[str]]:
    """The static pipeline's steps for ``profile`` (see the module docstring), and notes for the report.

    A recipe's steps, and other modes', are returned unchanged.
    """
    if opts.recipe is not None or opts.mode != "static":
        return steps, []
    notes = list(profile.notes) if profile is not None else []
    space = _mixed_space(opts, profile) if profile is not None else None
    out: list[Step] = []
    for step in steps:
        name = step["pass"]
        if profile is not None and space is not None and name == "upgrade-opset" and INT16 not in space and opts.activation_dtype not in _WIDE:
            step = {**step, "target": min(step["target"], profile.opset)}
        if profile is not None and space is not None and name == "mixed-precision":
            step = {**step, "runtime": profile.tune_runtime, "precisions": tuple(p for p in step.get("precisions", PRECISIONS) if p in space)}
        if profile is not None and name == "expand-hardswish" and not profile.expand_hardswish:
            continue
        if profile is not None and name == "annotate-quantization" and step.get("reduce_range") is None and profile.saturation_probe == "openvino":
            step, note = _openvino_reduce_range(step)
            notes += [note] if note else []
        if profile is not None and name == "choose-weight-range" and profile.saturation_probe != "onnxruntime":
            continue  # it measures onnxruntime's kernels; another runtime's 7-bit decision is annotate's
        if profile is not None and name == "tune-latency":
            step = {**step, "runtime": profile.tune_runtime, "latency": profile.tune_latency, "float_activations": profile.float_activations}
        if name == "insert-qdq" and opts.power_of_two_scales:
            runtime = profile.tune_runtime if profile is not None else "onnxruntime"
            out.append({"pass": "measure-fixed-point", "runtime": runtime, "threads": opts.threads, **{k: getattr(opts, k) for k in _GUARD_FIELDS}})
        out.append(step)
        if profile is not None and name == "close-float-islands" and profile.float_activations:
            out.append({"pass": "drop-qdq-before-float-ops", "float_ops": profile.float_activations})
    return out, notes


def _mixed_space(opts: ConversionOptions, profile: TargetProfile) -> tuple[str, ...] | None:
    """The precisions the mixed-precision search may give units on ``profile``'s runtime (None: no search)."""
    if not (opts.tune and opts.mixed_precision):
        return None
    dtypes = set(profile.rules.activation_dtypes) & set(profile.allowed.get("activation_dtype", profile.rules.activation_dtypes))
    return search_space(dynamic=profile.rules.support == "onnxruntime", activation_dtypes=dtypes, activation_dtype=opts.activation_dtype)


def _openvino_reduce_range(step: Step) -> tuple[Step, str | None]:
    """Decide 7-bit weights by OpenVINO's kernels on this CPU (its docs: 'Saturation (overflow) issue workaround')."""
    from ..runtime.openvino import openvino_products_saturate

    saturates = openvino_products_saturate(step["activation_dtype"], step["weight_dtype"])
    note = None
    if saturates:
        note = (
            f"7-bit weights (reduce_range): OpenVINO's {step['activation_dtype']}·{step['weight_dtype']} kernel on this CPU saturates "
            "(no VNNI; measured with OpenVINO); pass --no-reduce-range for a VNNI deployment target"
        )
    return {**step, "reduce_range": saturates}, note


def check_result(
    opts: ConversionOptions, profile: TargetProfile, model: Model, source: Model, samples: Iterable[Mapping[str, np.ndarray]] | None
) -> TargetReport:
    """Validate and lint the converted ``model`` for ``profile``.

    Raises:
        TargetError: with ``strict``, anything the checks found (one line).
    """
    guard = AccuracyGuardConfig(**{k: getattr(opts, k) for k in _GUARD_FIELDS})
    first = list(islice(samples, opts.eval_samples)) if samples is not None else []
    report = check_target(profile, model, source, first, guard, threads=opts.threads, power_of_two=opts.power_of_two_scales)
    overrides = opts.profile_overrides
    report.overrides = {name: {"user": _plain(user), "profile": _plain(setting)} for name, (user, setting) in overrides.items()}
    report.notes[:0] = [override_note(profile.name, name, user, setting) for name, (user, setting) in overrides.items()]
    problems = report.problems()
    if opts.strict and problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise TargetError(f"{source.source}: not ready for {profile.name}: {'; '.join(problems[:3])}{more}")
    return report


def override_note(target: str, name: str, user: Any, setting: Any) -> str:
    """One sentence for the report: the user's value of ``name`` was kept over the profile's ``setting``."""
    return f"target {target}: {option_flag(name)} {_shown(user)} as you set it (the profile sets {_shown(setting)})"


def _shown(value: Any) -> str:
    if value is None:
        return "auto"  # reduce_range: decided by measuring this CPU's kernels
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(value) if isinstance(value, (tuple, list)) else str(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def artifact_paths(model_path: str | os.PathLike[str], suffixes: Iterable[str]) -> dict[str, Path]:
    """Where each artifact goes beside the model: ``m.onnx`` → ``m.ort``, ``m.required_operators.config``."""
    path = Path(model_path)
    return {suffix: path.with_name(path.stem + suffix) for suffix in suffixes}


def write_artifacts(model_path: str | os.PathLike[str], artifacts: Mapping[str, bytes]) -> list[Path]:
    """Write each artifact beside the model, atomically (a temporary file renamed into place)."""
    written = []
    for suffix, target in artifact_paths(model_path, artifacts).items():
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(artifacts[suffix])
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


__all__ += ["TargetError"]
