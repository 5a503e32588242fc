"""The sensitivity cache: JSON files keyed by content hashes, written atomically, never trusted blindly.

Two kinds of entries under the cache folder (``--cache DIR``; else ``$ONNXQ_CACHE_DIR/sensitivity``;
else ``~/.cache/onnxq/sensitivity``):

- ``runs/<run key>.json``: what preparing the model gave (its digest, the ranges' digest, the units
  and guards), keyed by ``sha256(source model digest, data digest, settings, onnxq version)`` — a
  repeated run reads it and skips calibration altogether;
- ``evaluations/<evaluation key>.json``: one :class:`~onnxq.passes.quantization.sensitivity.Evaluation`'s
  values and cost, keyed by ``sha256(prepared model digest, ranges digest, data digest, evaluation
  settings, evaluation, onnxq version)`` — a pure function of its key, so entries written by any
  process (a later search, a worker elsewhere) are shared.

Digests: a model's is its structural digest (:func:`~onnxq.api.report.model_digest`: ops, names,
connections, weight shapes) plus a SHA-256 of every constant's bytes (the same graph with other
weights is another model). Data: every sample's input names, dtypes, shapes and bytes, in order.

Files are JSON (no pickle), written to a temporary file and renamed into place. An entry that does
not parse or does not have the expected shape is ignored with a warning (and rewritten by the
run); the cache can never make a run fail except by being unwritable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import ir
from .._version import __version__
from ..calibration.ranges import TensorRange
from ..ir import Model
from .report import model_digest

__all__ = ["CACHE_ENV", "SensitivityCache", "content_digest", "data_digest", "default_cache_dir", "ranges_digest", "stable_hash"]

log = logging.getLogger(__name__)

#: Environment variable naming onnxq's cache root (sensitivity entries go to its ``sensitivity/``).
CACHE_ENV = "ONNXQ_CACHE_DIR"
#: Version of the entries' layout; entries of another version are misses.
CACHE_SCHEMA = 1


def default_cache_dir() -> Path:
    """``$ONNXQ_CACHE_DIR/sensitivity`` when set, else ``~/.cache/onnxq/sensitivity``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) / "sensitivity" if root else Path.home() / ".cache" / "onnxq" / "sensitivity"


def stable_hash(*parts: Any) -> str:
    """SHA-256 of JSON-encoded ``parts`` (keys sorted) and onnxq's version."""
    text = json.dumps([__version__, CACHE_SCHEMA, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def content_digest(model: Model) -> str:
    """The structural digest of ``model`` and a SHA-256 of its constants' values."""
    h = hashlib.sha256(model_digest(model).encode())
    for const in sorted(ir.iter_constants(model.graph), key=lambda c: c.name):
        values = np.ascontiguousarray(ir.const_value(const))
        h.update(f"{const.name}|{values.dtype.str}|{values.shape};".encode())
        h.update(values.tobytes())
    return h.hexdigest()


def data_digest(samples: Iterable[Mapping[str, np.ndarray]]) -> tuple[str, int]:
    """SHA-256 of ``samples`` (names, dtypes, shapes, bytes, in order) and how many there were."""
    h = hashlib.sha256()
    count = 0
    for sample in samples:
        count += 1
        for name in sorted(sample):
            array = np.ascontiguousarray(sample[name])
            h.update(f"{name}|{array.dtype.str}|{array.shape};".encode())
            h.update(array.tobytes())
        h.update(b"/")
    return h.hexdigest(), count


def ranges_digest(ranges: Mapping[str, TensorRange]) -> str:
    """SHA-256 of every tensor's range (name, min, max), sorted by name."""
    return stable_hash(sorted((name, float(r.min), float(r.max)) for name, r in ranges.items()))


class SensitivityCache:
    """Cache entries under ``root`` (None: a disabled cache that finds nothing and stores nothing)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, kind: str, key: str) -> Path | None:
        return self.root / kind / f"{key}.json" if self.root is not None else None

    def load(self, kind: str, key: str, required: Iterable[str]) -> dict[str, Any] | None:
        """The entry ``kind/key``, or None when absent, unreadable or not the expected shape (warned)."""
        path = self._path(kind, key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            log.warning("sensitivity cache: ignoring unreadable entry %s (%s)", path, e)
            return None
        missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
        if missing or entry.get("schema") != CACHE_SCHEMA or entry.get("key") != key:
            log.warning("sensitivity cache: ignoring malformed entry %s (%s)", path, f"missing {', '.join(missing)}" if missing else "another schema or key")
            return None
        return entry

    def store(self, kind: str, key: str, entry: Mapping[str, Any]) -> None:
        """Write ``entry`` atomically (temporary file, then rename)."""
        path = self._path(kind, key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"schema": CACHE_SCHEMA, "key": key, **entry}, f, allow_nan=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
