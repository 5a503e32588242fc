"""Pipelines as data: a list of ``{pass = "name", option = value}`` tables, e.g. from TOML.

```toml
[[passes]]
pass = "cleanup"

[[passes]]
pass = "fold-constants"
max_output_mb = 64
```
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .pass_base import Pass, make_pass
from .pass_manager import PassManager

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["pipeline_from_data", "load_pipeline", "load_pipeline_specs", "parse_pass_list", "specs_from_document"]


def specs_from_document(doc: Mapping[str, Any], where: str, *, extra_keys: frozenset[str] = frozenset()) -> list[Mapping[str, Any]]:
    """The ``passes`` array of a parsed pipeline document (unknown top-level keys are errors)."""
    unknown = sorted(set(doc) - {"passes", "pipeline"} - extra_keys)
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(unknown)}; expected 'passes' (an array of tables)")
    specs = doc.get("passes", doc.get("pipeline"))
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"{where}: expected a non-empty array of tables [[passes]] each with pass = \"name\"")
    return specs


def pipeline_from_data(specs: Iterable[Mapping[str, Any]], *, where: str = "pipeline", **manager_options: Any) -> PassManager:
    """Build a :class:`PassManager` from a list of ``{"pass": name, **options}`` mappings."""
    passes: list[Pass[Any]] = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "pass" not in spec:
            raise ConfigError(f"{where}: entry {i + 1} must be a table with a 'pass' key, got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "pass"}
        try:
            passes.append(make_pass(str(spec["pass"]), options))
        except ConfigError as e:
            raise ConfigError(f"{where}: entry {i + 1}: {e}") from e
    return PassManager(passes, **manager_options)


def load_pipeline_specs(path: str | Path) -> list[Mapping[str, Any]]:
    """Read a TOML pipeline file into its list of ``{"pass": name, **options}`` tables."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline file '{path}' does not exist")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    return specs_from_document(doc, str(path))


def load_pipeline(path: str | Path, **manager_options: Any) -> PassManager:
    """Read a TOML pipeline file into a :class:`PassManager`."""
    return pipeline_from_data(load_pipeline_specs(path), where=str(path), **manager_options)


def parse_pass_list(text: str) -> list[dict[str, Any]]:
    """``"a,b,c"`` → ``[{"pass": "a"}, {"pass": "b"}, {"pass": "c"}]``."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError("--passes needs a comma-separated list of pass names")
    return [{"pass": n} for n in names]
