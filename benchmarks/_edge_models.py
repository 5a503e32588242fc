"""The models ``bench_edge.py`` runs on every edge runtime: the CNN builders, PP-OCR det/cls/rec and MiniLM.

Each :class:`EdgeModel` says how to get its fp32 file and seeded feeds (calibration and held-out feeds
never share a seed; MiniLM draws them from disjoint sentence pools, as ``bench_static`` does: its
data function is reused from :mod:`_static_models`) and which accuracy figures mean something for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _harness import data
from _static_models import CALIB_SEED, EVAL_SEED, OCR_BATCH
from _static_models import SPECS as STATIC_SPECS

__all__ = ["EdgeModel", "SPECS", "MODELS", "CALIB_SEED", "EVAL_SEED"]

Feed = dict[str, np.ndarray]
FeedMaker = Callable[[Path, int, int, argparse.Namespace], list[Feed]]


@dataclass(frozen=True)
class EdgeModel:
    """One benchmarked model: how to get its fp32 file and seeded feeds, and which accuracy figures apply.

    ``feeds(path, n, seed, args)``: ``n`` feeds drawn with ``seed`` (``CALIB_SEED`` / ``EVAL_SEED``).
    ``top1``: the first output's last axis is a class axis (top-1 agreement means something);
    ``det``: the output is a text-probability map (mask IoU instead of top-1).
    """

    make: Callable[[Path], Path]
    feeds: FeedMaker
    description: str
    top1: bool = True
    det: bool = False


def _random_feeds(shape: tuple[int, ...]) -> FeedMaker:
    def feeds(path: Path, n: int, seed: int, args: argparse.Namespace) -> list[Feed]:
        rng = np.random.default_rng(seed)
        return [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]

    return feeds


def _rec_feeds(path: Path, n: int, seed: int, args: argparse.Namespace) -> list[Feed]:
    import ocr_data

    xs, _truths = ocr_data.rec_samples(n, seed, batch=OCR_BATCH)
    return [{"x": x} for x in xs]


def _cls_feeds(path: Path, n: int, seed: int, args: argparse.Namespace) -> list[Feed]:
    import ocr_data

    xs, _labels = ocr_data.cls_samples(n * OCR_BATCH, seed)
    return [{"x": np.concatenate(xs[i:i + OCR_BATCH])} for i in range(0, len(xs), OCR_BATCH)]


def _det_feeds(path: Path, n: int, seed: int, args: argparse.Namespace) -> list[Feed]:
    import ocr_data

    xs, _boxes = ocr_data.det_samples(n, seed, size=args.det_size)
    return [{"x": x} for x in xs]


def _minilm_feeds(path: Path, n: int, seed: int, args: argparse.Namespace) -> list[Feed]:
    """Real sentences tokenized to seq 64, batch 1 (bench_static's MiniLM data, the same seeds)."""
    feeds, _labels = STATIC_SPECS["minilm"].data(path, n, seed)
    return feeds


def _builder(name: str, kwargs: dict[str, Any]) -> Callable[[Path], Path]:
    return lambda workdir: data.builder_file(workdir, name, kwargs)


def _zoo(name: str) -> Callable[[Path], Path]:
    return lambda workdir: data.zoo_file(name)


SPECS: dict[str, EdgeModel] = {
    "cnn": EdgeModel(_builder("cnn", {"width": 64, "blocks": 3, "input_size": 112, "num_classes": 1000}), _random_feeds((1, 3, 112, 112)),
                     "builder cnn width 64, 3 blocks, 112x112, 1000 classes, batch 1"),
    "mobilenet": EdgeModel(_builder("mobilenet", {"input_size": 224, "width": 32}), _random_feeds((1, 3, 224, 224)),
                           "builder mobilenet-v3-like (depthwise, HardSwish) width 32, 224x224, batch 1"),
    "ppocr-det": EdgeModel(_zoo("ppocr-det"), _det_feeds, "PP-OCRv4 detector, rendered pages ([1,3,S,S], S = --det-size)", top1=False, det=True),
    "ppocr-cls": EdgeModel(_zoo("ppocr-cls"), _cls_feeds, "PP-OCR direction classifier, batch 6 x [3,48,192], half rotated"),
    "ppocr-rec": EdgeModel(_zoo("ppocr-rec"), _rec_feeds, "PP-OCRv4 recogniser, batch 6 x [3,48,320], rendered text (top-1 per time step)"),
    "minilm": EdgeModel(lambda workdir: data.minilm_file(), _minilm_feeds,
                        "all-MiniLM-L6-v2 export (models/minilm.py), 1-2 real sentences x seq 64, batch 1 (cosine of the worse output)", top1=False),
}
MODELS = tuple(SPECS)
