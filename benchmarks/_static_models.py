"""The models bench_static compares on, and their data: builders at benchmark sizes, the PP-OCR zoo
models on rendered text (``ocr_data``), the MiniLM export on real sentences.

Every model gets a seeded calibration set and a disjoint held-out set (``CALIB_SEED`` / ``EVAL_SEED``;
MiniLM: disjoint sentence pools). ``SPECS`` maps a model name to its :class:`ModelSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _harness import data
from _harness.comparison import Feeds

CALIB_SEED = 1001  # calibration and held-out data never share a seed
EVAL_SEED = 2002
OCR_BATCH = 6  # rapidocr runs rec / cls in batches of 6 crops

Samples = tuple[list[dict[str, np.ndarray]], list[Any] | None]  # feeds, labels per feed


@dataclass
class ModelSpec:
    """How to get one model, its data and its task metric.

    ``make(workdir)`` returns the fp32 file (raises ``Skip`` when it cannot); ``data(path, n, seed)``
    returns ``n`` feeds (+ labels: rec truths, cls labels). ``metric`` is rec | cls | det | top1 | cosine.
    """

    name: str
    make: Callable[[Path], Path]
    data: Callable[[Path, int, int], Samples]
    metric: str
    description: str = ""

    def feeds_for(self, calib: int, held_out: int) -> Callable[[Path], Feeds]:
        """The comparison's feeds: ``calib`` calibration samples and ``held_out`` disjoint ones (with labels)."""

        def feeds(path: Path) -> Feeds:
            calib_feeds, _ = self.data(path, calib, CALIB_SEED)
            held, labels = self.data(path, held_out, EVAL_SEED)
            return Feeds(calib_feeds, held, labels)

        return feeds


def _builder_spec(name: str, kwargs: dict[str, Any], shapes: dict[str, tuple[int, ...]], metric: str, what: str) -> ModelSpec:
    def sample(path: Path, n: int, seed: int) -> Samples:
        rng = np.random.default_rng(seed)
        return [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(n)], None

    return ModelSpec(name, lambda workdir: data.builder_file(workdir, name, kwargs), sample, metric, what)


def _transformer_spec() -> ModelSpec:
    spec = _builder_spec("transformer", {"vocab": 30522, "hidden": 384, "heads": 12, "layers": 6, "max_seq": 512}, {}, "cosine",
                         "builder transformer hidden 384, 6 layers, 12 heads, seq 128 (padded tail), batch 1")
    spec.data = lambda path, n, seed: (data.text_feeds(data.input_names(path), n, seed, seq=128, vocab=30522), None)
    return spec


def _rec_data(path: Path, n: int, seed: int) -> Samples:
    import ocr_data

    xs, truths = ocr_data.rec_samples(n, seed, batch=OCR_BATCH)
    return [{"x": x} for x in xs], truths


def _cls_data(path: Path, n: int, seed: int) -> Samples:
    import ocr_data

    xs, labels = ocr_data.cls_samples(n * OCR_BATCH, seed)
    feeds = [{"x": np.concatenate(xs[i:i + OCR_BATCH])} for i in range(0, len(xs), OCR_BATCH)]
    return feeds, [labels[i:i + OCR_BATCH] for i in range(0, len(labels), OCR_BATCH)]


def _det_data(path: Path, n: int, seed: int) -> Samples:
    import ocr_data

    xs, _boxes = ocr_data.det_samples(n, seed, size=ocr_data.DET_LIMIT_SIDE_LEN)
    return [{"x": x} for x in xs], None


MINILM_SPLIT = 0.625  # models.minilm.SENTENCES: the first 62.5% (40 of 64) calibrate, the rest are held out


def _minilm_data(path: Path, n: int, seed: int) -> Samples:
    """Real sentences (one, or two run together, seeded), tokenized to seq 64, batch 1.

    Calibration and held-out samples come from disjoint sentence pools (paraphrase pairs are
    adjacent and the split falls between pairs), so ``n`` can exceed the 64 sentences.
    """
    module = data.minilm_module()
    sentences = list(module.SENTENCES)
    cut = 2 * round(len(sentences) * MINILM_SPLIT / 2)
    pool = sentences[:cut] if seed == CALIB_SEED else sentences[cut:]
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        picked = rng.choice(len(pool), size=int(rng.integers(1, 3)), replace=False)
        feeds.append(module.tokenize([" ".join(pool[i] for i in picked)], 64))
    return feeds, None


def _zoo_spec(name: str, sample: Callable[[Path, int, int], Samples], metric: str, what: str) -> ModelSpec:
    return ModelSpec(name, lambda workdir: data.zoo_file(name), sample, metric, what)


#: Model name -> spec. Sizes: one fp32 run of each builder is ~5-50 ms at 1 thread.
SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    _builder_spec("cnn", {"width": 64, "blocks": 3, "input_size": 112, "num_classes": 1000}, {"input": (1, 3, 112, 112)},
                  "top1", "builder cnn width 64, 3 blocks, 112x112, 1000 classes, batch 1"),
    _builder_spec("mlp", {"in_features": 784, "hidden": (1024, 1024, 1024)}, {"input": (256, 784)},
                  "top1", "builder mlp 784-1024x3-10, batch 256"),
    _transformer_spec(),
    _builder_spec("lstm", {"input_size": 128, "hidden": 512, "bidirectional": True}, {"input": (100, 4, 128)},
                  "top1", "builder lstm bidirectional hidden 512, seq 100, batch 4"),
    _builder_spec("mobilenet", {"input_size": 224, "width": 32}, {"input": (4, 3, 224, 224)},
                  "top1", "builder mobilenet-v3-like width 32, 224x224, batch 4"),
    _builder_spec("detector", {"input_size": 640, "width": 32, "num_classes": 80}, {"input": (1, 3, 640, 640)},
                  "cosine", "builder detector 640x640, width 32, 80 classes (boxes+scores Concat)"),
    _builder_spec("layernorm-classifier", {"in_features": 256, "hidden": 768, "layers": 6, "seq": 128}, {"input": (4, 128, 256)},
                  "top1", "builder layernorm-classifier hidden 768, 6 layers, seq 128, batch 4"),
    _builder_spec("cnn-lstm", {"width": 64, "hidden": 256, "num_classes": 6625}, {"input": (OCR_BATCH, 1, 32, 320)},
                  "top1", "builder cnn-lstm (CRNN) width 64, hidden 256, 6625 classes, batch 6 x 32x320"),
    _builder_spec("if-model", {"in_features": 512, "hidden": 1024}, {"input": (256, 512)},
                  "top1", "builder if-model 512-1024, batch 256"),
    _zoo_spec("ppocr-rec", _rec_data, "rec", "PP-OCRv4 recogniser, batch 6 x [3,48,320], rendered text"),
    _zoo_spec("ppocr-cls", _cls_data, "cls", "PP-OCR direction classifier, batch 6 x [3,48,192], half rotated"),
    _zoo_spec("ppocr-det", _det_data, "det", "PP-OCRv4 detector, [1,3,736,736] rendered pages"),
    ModelSpec("minilm", lambda workdir: data.minilm_file(), _minilm_data, "cosine",
              "all-MiniLM-L6-v2 export (models/minilm.py), 1-2 real sentences x seq 64, batch 1"),
)}
