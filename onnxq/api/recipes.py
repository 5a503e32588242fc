"""Recipes: a conversion pipeline written as TOML, loaded in this one place for the CLI and the API.

```toml
[[passes]]
pass = "cleanup"

[[passes]]
pass = "quantize-dynamic"
per_channel = false
```

A recipe replaces the mode's default passes (see :mod:`onnxq.api.pipelines`); each table names a
registered pass and its options, and both are checked (unknown passes and options are errors that
list what is valid) when the pipeline is built.

Built-in recipes ship with the package (``onnxq/api/builtin_recipes/*.toml``) and are named
instead of a path: ``--recipe accurate`` (error compensation: cross-layer equalization, MSE
calibration, the accuracy guard, AdaRound, bias correction), ``--recipe fast`` (min-max
calibration, no smoothing, no tuning) and ``--recipe compact`` (channel pruning searched to an
accuracy bound, then int8 with the guard). A file that exists always wins over a built-in name.

A recipe may name its deployment target at the top (``target = "openvino"``): its passes run as
written and the result is validated and linted for that target, as ``--target`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..pipeline import specs_from_document

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_recipe", "builtin_recipes", "resolve_recipe", "recipe_target"]

_BUILTIN_DIR = Path(__file__).resolve().with_name("builtin_recipes")


def builtin_recipes() -> dict[str, Path]:
    """The built-in recipes by name (``accurate``, ``fast``, ...)."""
    return {p.stem: p for p in sorted(_BUILTIN_DIR.glob("*.toml"))}


def resolve_recipe(recipe: str | Path) -> Path:
    """The file a recipe reference names: an existing path, else a built-in recipe's name.

    Raises:
        ConfigError: a bare name that is neither a file nor a built-in recipe (listing the built-ins).
    """
    path = Path(recipe)
    if path.is_file():
        return path
    builtins = builtin_recipes()
    name = str(recipe)
    if name in builtins:
        return builtins[name]
    if path.suffix or len(path.parts) > 1:
        return path  # a path: load_pipeline_specs says it does not exist
    raise ConfigError(f"recipe '{name}' is neither a file nor a built-in recipe (built-in: {', '.join(builtins)})")


def load_recipe(path: str | Path) -> list[dict[str, Any]]:
    """The steps of the TOML recipe at ``path``, or of the built-in recipe of that name
    (``[{"pass": name, **options}, ...]``).

    Raises:
        ConfigError: the file is missing, is not TOML, or has no ``[[passes]]`` tables.
    """
    where = resolve_recipe(path)
    return [dict(step) for step in specs_from_document(_document(where), str(where), extra_keys=frozenset({"target"}))]


def recipe_target(path: str | Path) -> str | None:
    """The ``target = "..."`` a recipe names at its top, or None.

    Raises:
        ConfigError: the recipe cannot be read, or its target is not a registered one.
    """
    where = resolve_recipe(path)
    target = _document(where).get("target")
    if target is None:
        return None
    from ..targets import get_target

    if not isinstance(target, str):
        raise ConfigError(f"{where}: target must be a string, got {target!r}")
    return get_target(target).name


def _document(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"pipeline file '{path}' does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
