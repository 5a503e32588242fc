"""``ConversionOptions``: every option of a conversion, for every mode, in one frozen, validated dataclass.

The CLI's ``onnxq convert`` flags and the Python API's keyword arguments are the same set (a test
checks both ways): each field here is one flag (``--activation-dtype`` ↔ ``activation_dtype``).
Validation happens once, here, for both faces: value ranges, and options that do not apply to the
chosen mode (``--format qoperator`` with ``--mode dynamic``) or that a recipe would silently
ignore. An option that does not apply is refused only when it differs from its default, so a flag
left at (or set to) its default never trips.

The options a target profile covers (:data:`PROFILE_OPTIONS`) default to :data:`UNSET` rather than
a value: a value the caller gives is *explicit* (:attr:`ConversionOptions.explicit`) and always wins
over the profile, even when it equals the plain default (``--activation-dtype uint8`` with ``--target
tensorrt`` is refused, not silently changed to int8); ``__post_init__`` resolves what is left unset to
the profile's setting, or without a target to the plain default. After construction every field holds
a real value. The CLI passes only the flags the user gave (click's parameter source), so both faces
agree on what "set" means.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from ..plan import AccuracyGuardConfig, ActivationDtype, QuantizationConfig

if TYPE_CHECKING:
    from ..targets import TargetProfile

__all__ = ["ConversionOptions", "Mode", "MODES", "APPLIES_TO", "PROFILE_OPTIONS", "UNSET", "option_flag"]

Mode = Literal["static", "dynamic", "weight-only", "fp16", "bf16"]
#: Conversion modes of ``onnxq convert --mode``.
MODES: tuple[str, ...] = ("static", "dynamic", "weight-only", "fp16", "bf16")


class _Unset:
    """The default of an option a target profile covers: "not given", resolved in ``__post_init__``."""

    def __repr__(self) -> str:
        return "<target profile's setting, else the default>"


#: Default of the :data:`PROFILE_OPTIONS` fields (typed ``Any``: it never outlives ``__post_init__``).
UNSET: Any = _Unset()
_QUANT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(QuantizationConfig)}
#: Where ``__post_init__`` keeps what the caller gave and what it overrode: plain instance attributes,
#: not fields (they are no options: not compared, not in ``as_dict``, no CLI flag).
_EXPLICIT, _OVERRIDES = "_explicit", "_overrides"
#: The options a target profile may set, and their value when neither the user nor a profile sets them.
PROFILE_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "format": "qdq",
        **{
            name: _QUANT_DEFAULTS[name]
            for name in (
                "activation_dtype", "activation_symmetric", "weight_dtype", "weight_symmetric", "per_channel", "reduce_range", "op_types", "int32_bias",
            )
        },
    }
)


@dataclass(frozen=True)
class ConversionOptions(QuantizationConfig, AccuracyGuardConfig):
    """Options of one conversion (``onnxq convert`` / :func:`onnxq.convert`).

    General:
        mode: static int8 (default), dynamic int8, weight-only int4/int8, fp16 or bf16.
        recipe: a TOML pipeline replacing the mode's default passes.
        samples: use at most this many calibration samples (None: all).
        pass_options: extra options for passes of the pipeline, ``{pass name: {option: value}}``
            (CLI: ``--pass-option quantize-dynamic.min_weight_elements=0``).

    Static calibration:
        method: observer (``percentile`` 99.999 measured best on real models; ``minmax``,
            ``entropy``, ``mse``, ``moving-average``).
        percentile: the percentile of ``method="percentile"``.
        max_memory_mb: MB of exposed activations per calibration pass (also weight-only GPTQ/AWQ's
            statistics pass).
        smooth: SmoothQuant alpha for LayerNorm→MatMul outliers (static, and dynamic with data);
            0 disables. Not used with precomputed ranges (they were measured without it).

    Static quantization (see :class:`onnxq.plan.QuantizationConfig`):
        format: ``qdq`` pairs or ``qoperator`` (QLinear ops).
        activation_dtype, weight_dtype, activation_symmetric, weight_symmetric, per_channel,
        reduce_range, reduce_range_nodes, op_types, exclude_op_types, exclude_nodes, include_nodes, keep_first,
        keep_last, quantize_activation_matmul, concat_range_ratio.

    Static tuning (see ``tune-latency``):
        tune: measure int8 against float and keep float where int8 is slower or costs accuracy.
        threads: threads for timing (also dynamic mode's latency guard).
        min_agreement / min_cosine: the accuracy guard's targets.
        accuracy_metric: guard specs replacing the default metric of the outputs they name
            (CLI: ``--metric``; see :mod:`onnxq.metrics.guard`).
        max_accuracy_trials / eval_samples: the guard's budget.
        replay: a previous report whose tuning decisions are re-applied without measuring.

    Mixed precision (static; runs ``mixed-precision`` in place of ``tune-latency``):
        accuracy_target: targets ``METRIC>=T[@OUTPUT]`` (``cosine>=0.999``, a user metric) or
            ``agreement>=T``; per unit, int8 / dynamic int8 / fp32 is chosen for the lowest measured
            latency meeting them (see ``passes/quantization/mixed_precision.py``).
        max_latency_ms / min_speedup: latency constraints on the chosen plan (median, ``threads``).

    Weight-only:
        weight_bits, block_size, symmetric, weight_format (``matmulnbits`` or opset-21 ``qdq``),
        scale_search (``mse`` clipping search or ``none``), include_gather (also Gather tables;
        dynamic mode too), algorithm (``rtn`` round to nearest, or from calibration data (``data``):
        ``gptq`` error-compensating rounding, ``awq`` activation-aware channel scaling).

    Dynamic: dynamic_format (``fused`` DynamicQuantizeMatMul or ``standard`` ops).

    fp16 / bf16: keep_io_types (inputs/outputs stay float32).

    Target (static; see :mod:`onnxq.targets.profiles`):
        target: a deployment target (``generic``, ``ort-cpu``, ``ort-mobile``, ``openvino``,
            ``tensorrt``, ``qnn``). Its profile sets every option above that it covers and that the
            caller did not give (format, activation/weight types and symmetry, per-channel,
            ``reduce_range``, which op types get Q/DQ, int32 or float bias: :data:`PROFILE_OPTIONS`),
            chooses where the tuner measures, and validates the result on the target's runtime (or
            its documented rules) with the linter. A value the caller gave is never replaced: one
            the target cannot take is a ``ConfigError``, one it can take but the profile sets
            otherwise is kept and listed in the report (:attr:`profile_overrides`). With a recipe, the
            recipe's passes run unchanged and the result is validated for the target.
        strict: fail (exit code 2) when the result has ops the target cannot run, fails its
            validation, or has lint errors; without it they are reported.
        power_of_two_scales / int32_bias: see :class:`onnxq.plan.QuantizationConfig`.
    """

    mode: Mode = "static"
    recipe: str | None = None
    samples: int | None = None
    pass_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    method: str = "percentile"
    percentile: float | None = None
    max_memory_mb: float | None = None
    smooth: float = 0.5
    format: Literal["qdq", "qoperator"] = UNSET
    tune: bool = True
    threads: int = 1
    replay: str | None = None
    weight_bits: Literal[4, 8] = 4
    block_size: Literal[16, 32, 64, 128, 256] = 32
    symmetric: bool = False
    weight_format: Literal["matmulnbits", "qdq"] = "matmulnbits"
    scale_search: Literal["none", "mse"] = "mse"
    include_gather: bool = False
    algorithm: Literal["rtn", "gptq", "awq"] = "rtn"
    dynamic_format: Literal["fused", "standard"] = "fused"
    keep_io_types: bool = True
    target: str | None = None
    strict: bool = False
    accuracy_target: tuple[str, ...] = ()
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    # Inherited from QuantizationConfig, re-declared so a target profile can tell "not given" (UNSET)
    # from a value the caller gave; a re-declared field keeps its inherited place in the field order.
    activation_dtype: ActivationDtype = UNSET
    activation_symmetric: bool = UNSET
    weight_dtype: Literal["int8", "uint8"] = UNSET
    weight_symmetric: bool = UNSET
    per_channel: bool = UNSET
    reduce_range: bool | None = UNSET
    op_types: tuple[str, ...] = UNSET
    int32_bias: bool = UNSET

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode '{self.mode}'; valid: {', '.join(MODES)}")
        for name in ("recipe", "replay"):  # paths are accepted as str or os.PathLike
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if isinstance(self.accuracy_target, str):  # one target given as a string
            object.__setattr__(self, "accuracy_target", (self.accuracy_target,))
        _resolve_unset(self)  # before the type checks of super().__post_init__: every field real from here on
        super().__post_init__()
        from ..calibration.observers import OBSERVERS

        if self.method not in OBSERVERS:
            raise ConfigError(f"unknown calibration method '{self.method}'; valid: {', '.join(sorted(OBSERVERS))}")
        _apply_target(self)
        _check_ranges(self)
        _check_applicable(self)
        for name, opts in self.pass_options.items():
            if not isinstance(opts, Mapping):
                raise ConfigError(f"pass_options['{name}'] must be a table of options, got {opts!r}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> ConversionOptions:
        """Build from plain data, refusing unknown names with the valid ones listed."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(f"unknown conversion option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        return cls(**dict(values))

    def as_dict(self) -> dict[str, Any]:
        """Field → value (tuples as lists), for the report: this class's own options first, then the
        static-quantization and accuracy-guard options it inherits (re-declared ones included)."""
        inherited = {f.name for f in dataclasses.fields(QuantizationConfig)} | {f.name for f in dataclasses.fields(AccuracyGuardConfig)}
        own = [n for n in vars(ConversionOptions)["__annotations__"] if not n.startswith("_") and n not in inherited]
        names = own + [f.name for f in dataclasses.fields(self) if f.name not in own]
        return {name: _plain(getattr(self, name)) for name in names}

    @property
    def mixed_precision(self) -> bool:
        """Whether an accuracy target or a latency constraint asks for the mixed-precision search."""
        return bool(self.accuracy_target) or self.max_latency_ms is not None or self.min_speedup is not None

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults (a target profile's settings included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != _default(f)}

    @property
    def explicit(self) -> frozenset[str]:
        """The :data:`PROFILE_OPTIONS` the caller gave (whatever their value); a target never replaces them.

        ``dataclasses.replace`` passes every field on, so on a replaced copy all of them count as given.
        """
        explicit: frozenset[str] = vars(self)[_EXPLICIT]
        return explicit

    @property
    def profile_overrides(self) -> dict[str, tuple[Any, Any]]:
        """Option → (the caller's value, the target profile's setting) where the caller set an option the
        profile also sets, to another value the target accepts (empty without a target, or when the
        profile does not apply: other modes, recipes)."""
        return dict(vars(self)[_OVERRIDES])


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _default(f: dataclasses.Field[Any]) -> Any:
    """The value a field takes when nothing sets it (a profile option's plain default, not UNSET)."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return PROFILE_OPTIONS[f.name] if value is UNSET else value


_STATIC = frozenset({"static"})
_INT8 = frozenset({"static", "dynamic"})
#: Which modes each option means something in (options absent here apply to every mode).
APPLIES_TO: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "method", "percentile", "format", "activation_dtype", "weight_dtype", "activation_symmetric",
            "weight_symmetric", "reduce_range_nodes", "op_types", "exclude_op_types", "include_nodes", "keep_first", "keep_last",
            "quantize_activation_matmul", "concat_range_ratio", "tune", "min_agreement", "min_cosine",
            "max_accuracy_trials", "eval_samples", "replay", "accuracy_metric", "target", "strict", "power_of_two_scales", "int32_bias",
            "accuracy_target", "max_latency_ms", "min_speedup",
        ),
        _STATIC,
    ),
    **dict.fromkeys(("per_channel", "reduce_range", "threads", "smooth"), _INT8),
    "exclude_nodes": frozenset({"static", "dynamic", "weight-only"}),
    **dict.fromkeys(("weight_bits", "block_size", "symmetric", "weight_format", "scale_search", "algorithm"), frozenset({"weight-only"})),
    "max_memory_mb": frozenset({"static", "weight-only"}),
    "include_gather": frozenset({"dynamic", "weight-only"}),
    "dynamic_format": frozenset({"dynamic"}),
    "keep_io_types": frozenset({"fp16", "bf16"}),
}
#: Options a recipe still honours (it replaces the mode's passes and so every pass option).
_RECIPE_OPTIONS = frozenset({"mode", "recipe", "samples", "pass_options", "threads", "target", "strict"})


def option_flag(name: str) -> str:
    """The CLI spelling of an option (``activation_dtype`` → ``--activation-dtype``)."""
    return "--" + name.replace("_", "-")


def _check_applicable(o: ConversionOptions) -> None:
    changed = o.changed()
    if o.recipe is not None:
        ignored = sorted(set(changed) - _RECIPE_OPTIONS)
        if ignored:
            raise ConfigError(
                f"{', '.join(option_flag(n) for n in ignored)} would be ignored with --recipe (the recipe sets every pass option); "
                "put them in the recipe instead"
            )
        return
    for name in sorted(changed):
        modes = APPLIES_TO.get(name)
        if modes is not None and o.mode not in modes:
            raise ConfigError(f"{option_flag(name)} does not apply to --mode {o.mode} (it applies to: {', '.join(sorted(modes))})")
    if o.replay is not None and not o.tune:
        raise ConfigError("--replay re-applies the decisions of latency tuning, which --no-tune turns off; drop one of them")
    if o.mixed_precision and not o.tune:
        raise ConfigError("--accuracy-target / --max-latency-ms / --min-speedup drive the mixed-precision search, which --no-tune turns off; drop one of them")
    if o.mixed_precision and o.target is not None:
        # the search minimizes latency measured on the target's runtime: a target whose runtime does
        # not run here times nothing, and timings of another runtime would choose for the wrong one
        from ..targets import TARGETS, get_target

        if not get_target(o.target).tune_latency:
            here = ", ".join(t.name for t in TARGETS.values() if t.tune_latency)
            raise ConfigError(
                f"--accuracy-target / --max-latency-ms / --min-speedup with --target {o.target}: the mixed-precision search times its candidates "
                f"on the target's runtime, which does not run here; drop them (the accuracy guard still applies) or use a target that runs here ({here})"
            )
    if o.percentile is not None and o.method != "percentile":
        raise ConfigError(f"--percentile applies to --method percentile, not '{o.method}'")
    if o.mode == "static" and o.format == "qoperator" and o.activation_dtype in ("int16", "uint16"):
        raise ConfigError(
            f"--format qoperator needs 8-bit activations, not --activation-dtype {o.activation_dtype}: onnxruntime has no 16-bit "
            "QLinear ops; use --format qdq for 16-bit activations"
        )


def _target_profile(o: ConversionOptions) -> TargetProfile | None:
    """The profile whose settings apply to ``o``: its target's, for a static conversion without a recipe
    (a recipe's passes stay as written; its result is still validated for the target).

    Raises:
        ConfigError: an unknown target.
    """
    if o.target is None:
        return None
    from ..targets import get_target

    profile = get_target(o.target)
    return profile if o.mode == "static" and o.recipe is None else None


def _resolve_unset(o: ConversionOptions) -> None:
    """Record which :data:`PROFILE_OPTIONS` the caller gave, and fill the others with the target profile's
    setting, else the plain default."""
    given = frozenset(name for name in PROFILE_OPTIONS if getattr(o, name) is not UNSET)
    object.__setattr__(o, _EXPLICIT, given)
    profile = _target_profile(o)
    settings = profile.settings if profile is not None else {}
    for name, default in PROFILE_OPTIONS.items():
        if name not in given:
            object.__setattr__(o, name, settings.get(name, default))


def _apply_target(o: ConversionOptions) -> None:
    """Refuse a value the caller gave that the target cannot take, and record the ones it gave over the
    profile's settings (the profile already filled the options left unset: :func:`_resolve_unset`)."""
    object.__setattr__(o, _OVERRIDES, {})
    if o.target is None:
        if o.strict and o.recipe is None:  # a recipe may name its target (checked when it is read)
            raise ConfigError("--strict checks the result against a target's rules; give --target")
        return
    profile = _target_profile(o)
    if profile is None:
        return
    for name, values in profile.allowed.items():
        if getattr(o, name) not in values:
            wanted = " or ".join(str(v) for v in values)
            raise ConfigError(
                f"--target {profile.name} needs {option_flag(name)} {wanted}, not {getattr(o, name)} ({profile.summary}; see onnxq.targets.profiles)"
            )
    overrides = {name: (getattr(o, name), value) for name, value in profile.settings.items() if name in o.explicit and getattr(o, name) != value}
    object.__setattr__(o, _OVERRIDES, overrides)


def _check_ranges(o: ConversionOptions) -> None:
    problems = []
    if o.samples is not None and o.samples < 1:
        problems.append(f"samples must be >= 1, got {o.samples}")
    if o.percentile is not None and not 50.0 < o.percentile <= 100.0:
        problems.append(f"percentile must be in (50, 100], got {o.percentile}")
    if o.max_memory_mb is not None and not 0 < o.max_memory_mb < math.inf:
        problems.append(f"max_memory_mb must be > 0 and finite, got {o.max_memory_mb}")
    if math.isnan(o.concat_range_ratio):
        problems.append(f"concat_range_ratio must be a number > 1, got {o.concat_range_ratio}")
    if not 0.0 <= o.smooth <= 1.0:
        problems.append(f"smooth (SmoothQuant alpha) must be in [0, 1], got {o.smooth}")
    if o.threads < 0:
        problems.append(f"threads must be >= 0, got {o.threads}")
    for name in ("max_latency_ms", "min_speedup"):
        value = getattr(o, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            problems.append(f"{name} must be a positive number, got {value}")
    if o.accuracy_target:
        from ..passes.quantization.mixed_precision import parse_targets  # the pass owns the target grammar

        parse_targets(o.accuracy_target)
    if problems:
        raise ConfigError("invalid conversion option: " + "; ".join(problems))
