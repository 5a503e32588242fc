"""Where the benchmarked models and their inputs come from, and the ``.npz`` folders between processes.

* model sources: a ``models/`` builder written to a file, a zoo model (``models.zoo``), the MiniLM
  export (``models.minilm``); each raises :class:`Skip` with the reason when it cannot be had here;
* seeded feeds: BERT-style token feeds;
* calibration folders: one ``.npz`` per sample (what ``onnxq convert --data DIR`` reads), written by
  the parent, read by the converters in their children through :class:`NpzReader` or
  :func:`load_feeds`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ROOT
from .report import one_line

__all__ = ["NpzReader", "Skip", "builder_file", "load_feeds", "minilm_file", "minilm_module", "save_feeds", "text_feeds", "zoo_file"]

Feed = dict[str, np.ndarray]


class Skip(Exception):
    """A model cannot be benchmarked here (file or package absent); the message says why."""


# ---- model sources ------------------------------------------------------------------------------
def builder_file(workdir: Path, name: str, kwargs: dict[str, Any]) -> Path:
    """``models.build(name, **kwargs)`` written to ``workdir/fp32.onnx``."""
    import onnx

    from models import build

    path = workdir / "fp32.onnx"
    onnx.save(build(name, **kwargs), str(path))
    return path


def zoo_file(name: str) -> Path:
    """A zoo model's file (``models.zoo.fetch``); :class:`Skip` when its package is not installed."""
    from models.zoo import ZooUnavailable, fetch

    try:
        return fetch(name)
    except ZooUnavailable as e:
        raise Skip(str(e)) from e


def minilm_module() -> Any:
    """``models.minilm`` (:class:`Skip` when the module does not exist in this checkout)."""
    if not (ROOT / "models" / "minilm.py").is_file():
        raise Skip("models/minilm.py does not exist yet")
    return importlib.import_module("models.minilm")


def minilm_file() -> Path:
    """The all-MiniLM-L6-v2 export from ``models/minilm.py`` (exported once into the zoo cache)."""
    module = minilm_module()
    path = module.minilm_path()
    if path.is_file():
        return path
    reason = module.available()
    if reason:
        raise Skip(f"MiniLM export unavailable: {reason}")
    try:
        return module.export_minilm()
    except Exception as e:
        raise Skip(f"MiniLM export failed: {one_line(e)}") from e


# ---- seeded feeds -------------------------------------------------------------------------------
def text_feeds(names: Sequence[str], n: int, seed: int, seq: int, vocab: int) -> list[Feed]:
    """BERT-style int64 feeds, batch 1: random ids, a padded tail (real length seq/2..seq).

    ``names`` are the model's inputs in order: ``*mask*`` gets the attention mask, ``*type*``
    zeros, ``*position*`` ``0..seq-1``, anything else ids in ``[1, vocab)``. Per sample the length
    is drawn first, then the ids, so the same seed gives the same feeds whatever else the model takes.
    """
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        length = int(rng.integers(seq // 2, seq + 1))
        feed = {}
        for name in names:
            if "mask" in name:
                value = (np.arange(seq) < length).astype(np.int64)[None]
            elif "type" in name:
                value = np.zeros((1, seq), np.int64)
            elif "position" in name:
                value = np.arange(seq, dtype=np.int64)[None]
            else:
                value = rng.integers(1, vocab, (1, seq)).astype(np.int64)
            feed[name] = value
        feeds.append(feed)
    return feeds


def input_names(path: Path) -> list[str]:
    """The graph inputs of a model file, in order (read by onnxruntime, as the benchmarks run it)."""
    import onnxruntime as ort

    return [i.name for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()]


# ---- .npz folders -------------------------------------------------------------------------------
def save_feeds(feeds: Sequence[Feed], folder: Path) -> None:
    """One ``sample_NNNNN.npz`` per feed, one array per input."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds):
        np.savez(folder / f"sample_{i:05d}.npz", **feed)


def _load(path: Path) -> Feed:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_feeds(folder: str | Path) -> list[Feed]:
    """Every sample of a folder written by :func:`save_feeds`, in order."""
    return [_load(f) for f in sorted(Path(folder).glob("*.npz"))]


class NpzReader:
    """onnxruntime ``CalibrationDataReader`` over an ``.npz`` folder, loading one sample at a time.

    Also iterable (each ``iter()`` starts over, without touching ``get_next``'s position): onnxq's
    latency tuner takes its sample input with ``iter(data)`` and silently skips tuning for a reader
    that only has ``get_next()``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.files = sorted(Path(folder).glob("*.npz"))
        self.index = 0

    def get_next(self) -> Feed | None:
        if self.index >= len(self.files):
            return None
        self.index += 1
        return _load(self.files[self.index - 1])

    def __iter__(self) -> Iterator[Feed]:
        return (_load(f) for f in self.files)

    def rewind(self) -> None:
        self.index = 0
