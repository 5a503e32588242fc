"""Command line for the model builders: ``python -m models NAME -o OUT.onnx [--seed N] [--set k=v ...]``.

It uses argparse rather than click so that ``models`` stays dependency-free. The pieces onnxq's own
CLI needs to offer the same command (``parse_value``, ``parse_overrides``, ``build_and_save``) are
public functions; ``main`` only wires them to argparse and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from onnxq.config import parse_number

from . import BUILDERS, build
from ._common import ModelArgumentError

__all__ = ["build_and_save", "main", "parse_overrides", "parse_value"]


def _parse_scalar(text: str) -> Any:
    """``true``/``false`` → bool, ``none`` → None, then int, then float, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return parse_number(text)


def parse_value(text: str) -> Any:
    """Parse one ``--set`` value; a comma makes a tuple (``hidden=128,128`` → ``(128, 128)``)."""
    if "," in text:
        return tuple(_parse_scalar(part) for part in text.split(",") if part.strip())
    return _parse_scalar(text)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["width=32", "batch=1"]`` into ``{"width": 32, "batch": 1}``.

    Raises:
        ModelArgumentError: for an item without ``=`` or with an empty key.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ModelArgumentError(f"--set expects key=value, got {item!r}")
        result[key.strip().replace("-", "_")] = parse_value(value)
    return result


def build_and_save(
    name: str, output: Path, *, seed: int = 0, overrides: dict[str, Any] | None = None
) -> onnx.ModelProto:
    """Build model ``name`` with ``seed`` and ``overrides`` and write it to ``output``.

    Raises:
        ModelArgumentError: unknown model name or parameter (the message lists the valid ones).
    """
    model = build(name, **{"seed": seed, **(overrides or {})})  # an explicit --set seed=N wins
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(output))
    return model


def _parser() -> argparse.ArgumentParser:
    """The argparse definition, kept apart from :func:`main` so it can be inspected in tests."""
    parser = argparse.ArgumentParser(
        prog="python -m models", description="Build a deterministic onnxq test model and save it.")
    parser.add_argument("name", help=f"model to build: {', '.join(BUILDERS)}")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the .onnx file")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="builder argument, repeatable (e.g. --set width=64 --set hidden=128,128)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m models``; returns 0, or exits with status 2 on a usage error."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        model = build_and_save(args.name, args.output, seed=args.seed, overrides=parse_overrides(args.overrides))
    except ModelArgumentError as e:
        parser.error(str(e))  # prints usage + message, exits 2
    print(f"{args.output}: {args.name}, {len(model.graph.node)} nodes, opset "
          f"{model.opset_import[0].version}", file=sys.stdout)
    return 0
