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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..pipeline import load_pipeline_specs

__all__ = ["load_recipe"]


def load_recipe(path: str | Path) -> list[dict[str, Any]]:
    """The steps of the TOML recipe at ``path`` (``[{"pass": name, **options}, ...]``).

    Raises:
        ConfigError: the file is missing, is not TOML, or has no ``[[passes]]`` tables.
    """
    return [dict(step) for step in load_pipeline_specs(path)]
