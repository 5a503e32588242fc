"""The pass contract: a typed, frozen config + a registry name + requires / run / ensures.

A pass does one job. ``run`` may edit the model in place and returns a :class:`PassResult` whose
``modified`` flag is truthful (tests check it both ways). Options live in a frozen dataclass
validated in ``__post_init__``; building a pass from plain data (a TOML table, CLI options) goes
through :func:`make_pass`, which refuses unknown passes and options and lists what is valid.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import ConfigError, PreconditionError
from .ir import Model

__all__ = [
    "PassConfig",
    "PassResult",
    "PassContext",
    "Pass",
    "register_pass",
    "registered_passes",
    "get_pass_class",
    "make_pass",
    "config_fields",
    "EmptyConfig",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassConfig:
    """Base class of pass configs. Subclasses are frozen dataclasses validated in ``__post_init__``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            hint = _hints(type(self)).get(f.name)
            if hint is not None:
                object.__setattr__(self, f.name, coerce_option(type(self).__name__, f.name, value, hint))


@dataclass(frozen=True)
class EmptyConfig(PassConfig):
    """Config of passes that take no options."""


@dataclass
class PassResult:
    """What a pass returns: the (possibly same) model, whether it changed, and counters."""

    model: Model
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """State shared by the passes of one pipeline run.

    Attributes:
        artifacts: named results one pass leaves for later ones (e.g. ``"ranges"`` from
            calibration, ``"annotations"`` from the quantizers).
        decisions: per-node notes for the report (``{"node": ..., "op": ..., "decision": ...,
            "reason": ...}``), e.g. every node a quantizer left in float and why.
        progress: show progress bars (on a terminal only).
    """

    artifacts: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    progress: bool = False

    def note(self, node: str, op: str, decision: str, reason: str, **extra: Any) -> None:
        """Record a decision about one node for the report."""
        self.decisions.append({"node": node, "op": op, "decision": decision, "reason": reason, **extra})


class Pass(ABC):
    """A graph transformation with one job.

    Subclasses set ``Config`` (a :class:`PassConfig` dataclass) and implement :meth:`run`; they are
    registered with :func:`register_pass`, which also sets ``name``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[PassConfig]] = EmptyConfig
    #: True when the pass may change the graph's structure (the manager normalizes after it).
    changes_structure: ClassVar[bool] = True

    def __init__(self, config: PassConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError(f"pass '{self.name}': give either a config or options, not both")
        if config is None:
            config = build_config(self.name or type(self).__name__, self.Config, options)
        elif not isinstance(config, self.Config):
            raise ConfigError(f"pass '{self.name}': config must be {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def requires(self, model: Model) -> None:
        """Check preconditions; raise :class:`PreconditionError` naming what is missing."""

    @abstractmethod
    def run(self, model: Model, ctx: PassContext) -> PassResult:
        """Transform ``model`` (in place or not) and report whether anything changed."""

    def ensures(self, model: Model) -> None:
        """Check postconditions (raise on violation)."""

    def __call__(self, model: Model, ctx: PassContext | None = None) -> PassResult:
        """Run ``requires`` → ``run`` → ``ensures``."""
        ctx = ctx if ctx is not None else PassContext()
        self.requires(model)
        result = self.run(model, ctx)
        self.ensures(result.model)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


_REGISTRY: dict[str, type[Pass]] = {}

P = TypeVar("P", bound=type[Pass])


def register_pass(name: str) -> typing.Callable[[P], P]:
    """Class decorator registering a pass under ``name`` (duplicates are refused)."""

    def deco(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"pass name '{name}' is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_library() -> None:
    """Import the pass library so its passes register themselves."""
    from . import passes  # noqa: F401  (import for side effect)


def registered_passes() -> dict[str, type[Pass]]:
    """All registered passes by name (sorted)."""
    _load_library()
    return dict(sorted(_REGISTRY.items()))


def get_pass_class(name: str) -> type[Pass]:
    """The pass class registered as ``name``.

    Raises:
        ConfigError: unknown name, listing the valid ones.
    """
    _load_library()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown pass '{name}'; valid passes: {', '.join(sorted(_REGISTRY))}") from None


def make_pass(name: str, options: Mapping[str, Any] | None = None) -> Pass:
    """Build a registered pass from plain data (e.g. a TOML table)."""
    cls = get_pass_class(name)
    return cls(**dict(options or {}))


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {}


def config_fields(config_cls: type[PassConfig]) -> list[tuple[str, str, Any]]:
    """(name, type text, default) of each option, for ``onnxq passes`` and error messages.

    A config's own options come before those it inherits (shared selection options last).
    """
    hints = _hints(config_cls)
    own = set(vars(config_cls).get("__annotations__", {}))
    out = []
    for f in sorted(dataclasses.fields(config_cls), key=lambda f: f.name not in own):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        out.append((f.name, _type_text(hints.get(f.name, Any)), default))
    return out


def _type_text(hint: Any) -> str:
    if hint is Ellipsis:
        return "..."
    origin = typing.get_origin(hint)
    if origin is None:
        return getattr(hint, "__name__", str(hint))
    args = ", ".join(_type_text(a) for a in typing.get_args(hint))
    name = getattr(origin, "__name__", str(origin))
    if name == "UnionType" or origin is typing.Union:
        return " | ".join(_type_text(a) for a in typing.get_args(hint))
    if name == "Literal":
        return "|".join(repr(a) for a in typing.get_args(hint))
    return f"{name}[{args}]"


def build_config(pass_name: str, config_cls: type[PassConfig], options: Mapping[str, Any]) -> PassConfig:
    """Instantiate ``config_cls`` from ``options``, refusing unknown keys with the valid ones listed."""
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "(none)"
        raise ConfigError(f"pass '{pass_name}': unknown option(s) {', '.join(unknown)}; valid options: {listing}")
    try:
        return config_cls(**options)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"pass '{pass_name}': {e}") from e


def coerce_option(owner: str, key: str, value: Any, hint: Any) -> Any:
    """Check (and gently convert) an option value against its annotation.

    Lists become tuples (configs are frozen and hashable); ints are accepted for floats.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        errors = []
        for arg in args:
            try:
                return coerce_option(owner, key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{owner}: option '{key}' must be {_type_text(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{owner}: option '{key}' must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}: option '{key}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(coerce_option(owner, key, v, inner) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{owner}: option '{key}' must be a table, got {value!r}")
        return value
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{owner}: option '{key}' must be None, got {value!r}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}: option '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{owner}: option '{key}' must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}: option '{key}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{owner}: option '{key}' must be a string, got {value!r}")
        return value
    return value


def precondition(ok: bool, message: str) -> None:
    """Raise :class:`PreconditionError` with ``message`` unless ``ok``."""
    if not ok:
        raise PreconditionError(message)
