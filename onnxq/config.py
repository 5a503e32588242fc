"""Typed, frozen option dataclasses: the base of every pass config and of the conversion options.

A config is a frozen dataclass whose fields are checked against their annotations in
``__post_init__`` (lists become tuples so configs stay hashable, ints are accepted for floats). It is
built from plain data (a TOML table, CLI options) through :func:`build_config`, which refuses
unknown keys and lists the valid ones, so a typo in a recipe is an error rather than a silent
default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["PassConfig", "EmptyConfig", "build_config", "config_fields", "coerce_option", "parse_number", "type_text"]

C = TypeVar("C", bound="PassConfig")


@dataclass(frozen=True)
class PassConfig:
    """Base class of configs. Subclasses are frozen dataclasses validated in ``__post_init__``."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            hint = hints.get(f.name)
            if hint is not None:
                object.__setattr__(self, f.name, coerce_option(type(self).__name__, f.name, getattr(self, f.name), hint))


@dataclass(frozen=True)
class EmptyConfig(PassConfig):
    """Config of passes that take no options."""


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that does not resolve: skip checking, never crash
        return {}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_fields(config_cls: type[PassConfig]) -> list[tuple[str, str, Any]]:
    """(name, type text, default) of each option, for ``onnxq passes`` and error messages.

    A config's own options come before those it inherits (shared selection options last).
    """
    hints = _hints(config_cls)
    own = set(vars(config_cls).get("__annotations__", {}))
    ordered = sorted(dataclasses.fields(config_cls), key=lambda f: f.name not in own)
    return [(f.name, type_text(hints.get(f.name, Any)), _default(f)) for f in ordered]


def type_text(hint: Any) -> str:
    """A short human spelling of a type annotation (``int | None``, ``'qdq'|'qoperator'``)."""
    if hint is Ellipsis:
        return "..."
    origin = typing.get_origin(hint)
    if origin is None:
        return getattr(hint, "__name__", str(hint))
    args = typing.get_args(hint)
    if _is_union(origin):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return "|".join(repr(a) for a in args)
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join(type_text(a) for a in args)}]"


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or getattr(origin, "__name__", "") == "UnionType"


def build_config(owner: str, config_cls: type[C], options: Mapping[str, Any]) -> C:
    """Instantiate ``config_cls`` from ``options``, refusing unknown keys with the valid ones listed."""
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "(none)"
        raise ConfigError(f"{owner}: unknown option(s) {', '.join(unknown)}; valid options: {listing}")
    try:
        return config_cls(**options)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"{owner}: {e}") from e


def coerce_option(owner: str, key: str, value: Any, hint: Any) -> Any:
    """Check (and gently convert) an option value against its annotation.

    Lists become tuples (configs are frozen and hashable); ints are accepted for floats.

    Raises:
        ConfigError: the value does not fit, naming the owner, the option and what it must be.
    """
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is not None and _is_union(origin):
        for arg in typing.get_args(hint):
            try:
                return coerce_option(owner, key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{owner}: option '{key}' must be {type_text(hint)}, got {value!r}")
    if origin is typing.Literal:
        args = typing.get_args(hint)
        if value in args:
            return value
        raise ConfigError(f"{owner}: option '{key}' must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}: option '{key}' must be a list, got {value!r}")
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(coerce_option(owner, key, v, inner) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{owner}: option '{key}' must be a table, got {value!r}")
        return value
    checker = _SCALARS.get(hint)
    return value if checker is None else checker(owner, key, value)


def parse_number(text: str) -> int | float | str:
    """``text`` as an int, else as a float, else unchanged: the last step of reading a value typed on a
    command line or in a spec (callers first take the words they give a meaning, such as ``true``)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _none(owner: str, key: str, value: Any) -> None:
    if value is not None:
        raise ConfigError(f"{owner}: option '{key}' must be None, got {value!r}")


def _number(owner: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{owner}: option '{key}' must be a number, got {value!r}")
    return float(value)


def _integer(owner: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}: option '{key}' must be an integer, got {value!r}")
    return value


def _boolean(owner: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: option '{key}' must be true or false, got {value!r}")
    return value


def _string(owner: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{owner}: option '{key}' must be a string, got {value!r}")
    return value


#: Scalar annotation → checker (a registry, not an if-chain).
_SCALARS: dict[Any, typing.Callable[[str, str, Any], Any]] = {
    type(None): _none,
    float: _number,
    int: _integer,
    bool: _boolean,
    str: _string,
}
