"""``python -m models NAME -o OUT.onnx [--seed N] [--set key=value ...]`` (see :mod:`models.cli`)."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
