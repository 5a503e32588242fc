"""The pass contract: a typed, frozen config + a registry name + requires / run / ensures.

A pass does one job. ``run`` may edit the model in place and returns a :class:`PassResult` whose
``modified`` flag is truthful (tests check it both ways). Options live in a frozen dataclass
validated in ``__post_init__`` (:mod:`onnxq.config`); ``Pass`` is generic in that config type, so
``self.config`` is typed in every pass without casts. What a pass needs from earlier passes and
leaves for later ones is declared in ``reads`` / ``writes`` (slots of :class:`PassContext`), so a
pipeline is validated before it runs.

Building a pass from plain data (a TOML table, CLI options) goes through :func:`make_pass`, which
refuses unknown passes and options and lists what is valid. This module is framework: it never
imports the pass library; the library's modules register themselves when the application layer
(:mod:`onnxq.api`, the CLI) imports them.
"""

from __future__ import annotations

import inspect
import logging
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from .config import EmptyConfig, PassConfig, build_config, config_fields
from .context import SLOTS, Need, PassContext, Skip
from .errors import ConfigError, PreconditionError
from .ir import Model

__all__ = [
    "PassConfig",
    "PassResult",
    "PassContext",
    "Skip",
    "Pass",
    "register_pass",
    "registered_passes",
    "get_pass_class",
    "make_pass",
    "config_fields",
    "EmptyConfig",
    "precondition",
    "describe_need",
]

log = logging.getLogger(__name__)

C = TypeVar("C", bound=PassConfig)


@dataclass
class PassResult:
    """What a pass returns: the (possibly same) model, whether it changed, and counters."""

    model: Model
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


def describe_need(need: Need) -> str:
    """``'plan'`` or ``'calibration_data' or 'ranges'``."""
    options = (need,) if isinstance(need, str) else need
    return " or ".join(f"'{n}'" for n in options)


def _satisfied(need: Need, available: set[str]) -> bool:
    return (need in available) if isinstance(need, str) else any(n in available for n in need)


class Pass(ABC, Generic[C]):
    """A graph transformation with one job.

    Subclasses derive from ``Pass[TheirConfig]`` (the config class is taken from the type argument,
    or set explicitly as ``Config``), implement :meth:`run`, and are registered with
    :func:`register_pass`, which also sets ``name``.

    Class attributes:
        reads: context slots the pass needs (each a slot name, or a tuple of alternatives).
        writes: context slots the pass fills.
        changes_structure: the pass may change the graph's structure (the manager normalizes after it).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[PassConfig]] = EmptyConfig
    changes_structure: ClassVar[bool] = True
    reads: ClassVar[tuple[Need, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    config: C

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" not in vars(cls):
            for base in getattr(cls, "__orig_bases__", ()):
                args = typing.get_args(base)
                origin = typing.get_origin(base)
                if args and isinstance(origin, type) and issubclass(origin, Pass) and isinstance(args[0], type) and issubclass(args[0], PassConfig):
                    cls.Config = args[0]
        declared = [n for need in cls.reads for n in ((need,) if isinstance(need, str) else need)] + list(cls.writes)
        unknown = sorted(set(declared) - set(SLOTS))
        if unknown:
            raise ConfigError(f"pass class {cls.__qualname__}: unknown context slot(s) {', '.join(unknown)}; valid: {', '.join(SLOTS)}")

    def __init__(self, config: PassConfig | None = None, **options: Any) -> None:
        owner = f"pass '{self.name or type(self).__name__}'"
        if config is not None and options:
            raise ConfigError(f"{owner}: give either a config or options, not both")
        if config is None:
            config = build_config(owner, self.Config, options)
        elif not isinstance(config, self.Config):
            raise ConfigError(f"{owner}: config must be {self.Config.__name__}, got {type(config).__name__}")
        self.config = typing.cast(C, config)

    def needs(self) -> tuple[Need, ...]:
        """The slots this instance reads (the class's ``reads``; a config may add or drop some)."""
        return self.reads

    def check_needs(self, available: set[str]) -> set[str]:
        """Validate this pass's needs against the slots filled before it; returns them plus its writes.

        Raises:
            ConfigError: a needed slot that no earlier step writes, in one sentence.
        """
        for need in self.needs():
            if not _satisfied(need, available):
                raise ConfigError(f"{self.name or type(self).__name__} reads {describe_need(need)}, which no earlier step writes")
        return available | set(self.writes)

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


_REGISTRY: dict[str, type[Pass[Any]]] = {}

P = TypeVar("P", bound=type[Pass[Any]])


def register_pass(name: str) -> typing.Callable[[P], P]:
    """Class decorator registering a pass under ``name`` (duplicates are refused)."""

    def deco(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"pass name '{name}' is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def registered_passes() -> dict[str, type[Pass[Any]]]:
    """All registered passes by name (sorted)."""
    return dict(sorted(_REGISTRY.items()))


def get_pass_class(name: str) -> type[Pass[Any]]:
    """The pass class registered as ``name``.

    Raises:
        ConfigError: unknown name, listing the valid ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown pass '{name}'; valid passes: {', '.join(sorted(_REGISTRY))}") from None


def make_pass(name: str, options: Mapping[str, Any] | None = None) -> Pass[Any]:
    """Build a registered pass from plain data (e.g. a TOML table)."""
    cls = get_pass_class(name)
    return cls(**dict(options or {}))


def precondition(ok: bool, message: str) -> None:
    """Raise :class:`PreconditionError` with ``message`` unless ``ok``."""
    if not ok:
        raise PreconditionError(message)
