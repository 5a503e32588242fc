"""Realistic, seeded OCR data and task metrics for the PP-OCR zoo models (``ppocr-det/rec/cls``).

Text is rendered with Pillow and DejaVu Sans, then preprocessed exactly like
``rapidocr-onnxruntime`` 1.4.x does before calling its ONNX models (numbers copied from its
``config.yaml``, ``ch_ppocr_rec/text_recognize.py``, ``ch_ppocr_cls/text_cls.py`` and
``ch_ppocr_det/utils.py``; the package itself is not imported because it pulls in OpenCV):

* images are BGR uint8 (rapidocr loads with cv2 / converts PIL RGB to BGR);
* resizing replicates ``cv2.resize`` INTER_LINEAR (fixed-point, no antialiasing), see :func:`resize_bilinear`;
* recogniser: keep aspect ratio, height 48, width ``ceil(48 * w / h)`` capped at the target width
  (``rec_img_shape: [3, 48, 320]``), ``x / 255``, ``(x - 0.5) / 0.5``, zero-pad on the right;
* classifier: the same with ``cls_image_shape: [3, 48, 192]``, ``label_list: ['0', '180']``;
* detector: ``limit_type: min``, ``limit_side_len: 736``, sides rounded to multiples of 32,
  ``(x / 255 - mean) / std`` with ``mean = std = [0.5, 0.5, 0.5]``; binarisation ``thresh: 0.3``;
* CTC: greedy argmax, merge repeats, drop blank; the class table is ``['blank'] + dictionary + [' ']``
  where the dictionary is the rec model's ``metadata_props['character']`` split into lines.

Every function is pure: the same arguments (and seed) give bit-identical arrays. This module is the
one to import; the preprocessing (``_ocr_image``), the metrics (``_ocr_metrics``) and the random text
(``_ocr_text``) live in sibling modules and are re-exported here.

    python benchmarks/ocr_data.py [--n 16] [--seed 0]     # fp32 sanity figures on the zoo models
"""

from __future__ import annotations

import argparse
import functools
import math
import string
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the sibling modules below, also when imported as ``benchmarks.ocr_data``
    sys.path.insert(0, _HERE)

from _ocr_image import (  # noqa: E402 - re-exported: ocr_data is the one module to import
    CLS_SHAPE,
    DET_LIMIT_SIDE_LEN,
    DET_MEAN,
    DET_STD,
    REC_SHAPE,
    cls_preprocess,
    det_preprocess,
    rec_preprocess,
    resize_bilinear,
)
from _ocr_image import to_bgr as _to_bgr  # noqa: E402
from _ocr_metrics import (  # noqa: E402
    DET_THRESH,
    box_coverage,
    boxes_mask,
    char_accuracy,
    cls_top1,
    det_mask,
    edit_distance,
    mask_iou,
    rec_decode,
)
from _ocr_text import random_text  # noqa: E402

__all__ = [
    "CLS_LABELS", "CLS_SHAPE", "DEFAULT_CHARSET", "DET_LIMIT_SIDE_LEN", "DET_MEAN", "DET_STD", "DET_THRESH",
    "FONT_PACKAGE", "FontNotFoundError", "REC_SHAPE", "box_coverage", "boxes_mask", "char_accuracy",
    "cls_preprocess", "cls_samples", "cls_top1", "default_charset", "det_mask", "det_preprocess",
    "det_samples", "edit_distance", "find_font", "mask_iou", "random_text", "rec_decode", "rec_dictionary",
    "rec_preprocess", "rec_samples", "render_line", "resize_bilinear", "save_npz_folder",
]

# ---- constants copied from rapidocr_onnxruntime 1.4.4 (the others live with their code) ---------
CLS_LABELS = ("0", "180")  # config.yaml Cls.label_list

# ---- fonts -----------------------------------------------------------------------------------
FONT_PACKAGE = "fonts-dejavu-core"
_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian / Ubuntu (fonts-dejavu-core)
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",  # Fedora / Alpine
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
)

# Digits, Latin letters and common ASCII punctuation: all in the PP-OCRv4 dictionary and drawn by
# DejaVu Sans (checked by default_charset() and the tests). No CJK: DejaVu has no CJK glyphs.
DEFAULT_CHARSET = string.digits + string.ascii_letters + "!\"#$%&'()*+,-./:;<=>?@[]_{}~"


class FontNotFoundError(FileNotFoundError):
    """DejaVu Sans is not installed."""


def find_font() -> Path:
    """Path of ``DejaVuSans.ttf``; raises :class:`FontNotFoundError` naming the Debian package."""
    for candidate in _FONT_CANDIDATES:
        path = Path(candidate)
        if path.is_file():
            return path
    raise FontNotFoundError(
        f"DejaVu Sans (DejaVuSans.ttf) not found in {', '.join(_FONT_CANDIDATES)}; install the Debian "
        f"package {FONT_PACKAGE} (apt-get install {FONT_PACKAGE})"
    )


@functools.lru_cache(maxsize=128)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(find_font()), size)


def _glyph_renders(char: str, size: int = 32) -> bool:
    """True when the font has a real glyph for ``char`` (not the .notdef box, not blank)."""
    font = _font(size)
    mask = font.getmask(char)
    if mask.getbbox() is None:
        return False
    missing = font.getmask("\U000f0000")  # private-use plane 15: never in DejaVu → .notdef
    return not (mask.size == missing.size and bytes(mask) == bytes(missing))


def default_charset(dictionary: Sequence[str] | None = None, candidates: str = DEFAULT_CHARSET) -> str:
    """``candidates`` kept when in the recogniser ``dictionary`` (if given) and drawn by the font."""
    allowed = set(dictionary) if dictionary is not None else None
    return "".join(c for c in candidates if (allowed is None or c in allowed) and _glyph_renders(c))


@functools.lru_cache(maxsize=4)
def _dictionary_from(path: str) -> tuple[str, ...]:
    import onnx

    model = onnx.load_model(path, load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path}: no metadata_props['character'] (not a PP-OCR recogniser?)")
    return tuple(meta["character"].splitlines())  # as rapidocr's OrtInferSession.get_character_list


def rec_dictionary(model_path: str | Path | None = None) -> list[str]:
    """The recogniser's character dictionary (6,623 entries for PP-OCRv4), from its metadata_props.

    ``model_path`` defaults to the ``ppocr-rec`` file inside the installed rapidocr wheel.
    """
    if model_path is None:
        from models.zoo import source_path

        model_path = source_path("ppocr-rec")
    return list(_dictionary_from(str(model_path)))


# ---- rendering -------------------------------------------------------------------------------
def _blur_and_noise(image, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A light random blur (sometimes) and Gaussian pixel noise up to ``noise``: a uint8 gray array."""
    from PIL import ImageFilter

    blur = rng.uniform(0.0, 0.6)
    if blur > 0.25:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(0.0, noise), pixels.shape).astype(np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def render_line(text: str, height: int = 48, seed: int = 0):
    """One text line as a PIL RGB image of the given height, width fitted to the text.

    Mimics a detector crop: dark gray text on a light gray background, font size 58-72 % of the
    height, small random margins and vertical offset, slight blur and pixel noise.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    size = max(8, int(round(height * rng.uniform(0.58, 0.72))))
    font = _font(size)
    ascent, descent = font.getmetrics()
    background = int(rng.integers(205, 256))
    ink = int(rng.integers(0, 70))
    left = int(rng.integers(2, max(3, height // 8) + 1))  # tight crops: a wide right margin makes
    right = int(rng.integers(2, max(3, height // 8) + 1))  # the model emit a trailing space
    width = left + int(math.ceil(font.getlength(text))) + right
    spare = height - (ascent + descent)
    top = spare // 2 + int(rng.integers(-max(1, spare // 4), max(1, spare // 4) + 1))
    image = Image.new("L", (width, height), background)
    ImageDraw.Draw(image).text((left, top), text, fill=ink, font=font)
    gray = _blur_and_noise(image, rng, 6.0)
    return Image.fromarray(gray, "L").convert("RGB")


# ---- recogniser ------------------------------------------------------------------------------
def _seeds(rng: np.random.Generator, k: int) -> list[int]:
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=k)]


def rec_samples(
    n: int, seed: int = 0, width: int = REC_SHAPE[2], batch: int = 1, charset: str = DEFAULT_CHARSET
) -> tuple[list[np.ndarray], list[list[str]]]:
    """``n`` recogniser inputs float32 [batch, 3, 48, width] and their ground-truth strings.

    Each line has 3..20 characters, is rendered at a random height 32..64 (as crops come in any
    size) and is shortened until it fits ``width`` after resizing to height 48, so nothing is squeezed.
    """
    rng = np.random.default_rng(seed)
    inputs: list[np.ndarray] = []
    truths: list[list[str]] = []
    for _ in range(n):
        rows, texts = [], []
        for _ in range(batch):
            text = random_text(rng, charset, 3, 20)
            height = int(rng.integers(32, 65))
            line_seed = _seeds(rng, 1)[0]
            while True:
                image = render_line(text, height, line_seed)
                if math.ceil(REC_SHAPE[1] * image.width / image.height) <= width or len(text) == 1:
                    break
                text = text.rsplit(" ", 1)[0] if " " in text else text[:-1]  # drop the last word
            rows.append(rec_preprocess(image, width))
            texts.append(text)
        inputs.append(np.stack(rows))
        truths.append(texts)
    return inputs, truths


# ---- direction classifier --------------------------------------------------------------------
def cls_samples(n: int, seed: int = 0, charset: str = DEFAULT_CHARSET) -> tuple[list[np.ndarray], list[int]]:
    """``n`` classifier inputs float32 [1, 3, 48, 192] and labels (1 = rotated 180°, ``CLS_LABELS``).

    Exactly ``n // 2`` lines are rotated, in seeded random order. Lines are 8..24 characters at a
    random height 32..64, squeezed to 192 wide when longer, as rapidocr does. (Shorter lines are
    genuinely ambiguous upside down: with 4..16 characters fp32 top-1 drops to about 0.95.)
    """
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.permutation(np.array([0] * (n - n // 2) + [1] * (n // 2)))]
    inputs = []
    for label in labels:
        text = random_text(rng, charset, 8, 24)
        height = int(rng.integers(32, 65))
        image = render_line(text, height, _seeds(rng, 1)[0])
        bgr = _to_bgr(image)
        if label == 1:
            bgr = np.ascontiguousarray(bgr[::-1, ::-1])
        inputs.append(cls_preprocess(bgr)[np.newaxis])
    return inputs, labels


# ---- detector --------------------------------------------------------------------------------
def _page(size: int, rng: np.random.Generator, charset: str) -> tuple[np.ndarray, np.ndarray]:
    """A light page with 4..10 non-overlapping text lines; returns BGR uint8 and [k, 4] boxes."""
    from PIL import Image, ImageDraw

    background = int(rng.integers(215, 256))
    image = Image.new("L", (size, size), background)
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[int, int, int, int]] = []
    gap = max(4, size // 100)
    wanted = int(rng.integers(4, 11))
    for _ in range(wanted * 8):  # bounded number of placement attempts
        if len(boxes) == wanted:
            break
        font = _font(int(rng.integers(max(10, size // 46), max(11, size // 15) + 1)))
        text = random_text(rng, charset + " ", 3, 24)
        x = int(rng.integers(gap, size // 2))
        y = int(rng.integers(gap, size - gap))
        box = draw.textbbox((x, y), text, font=font)
        if box[2] > size - gap or box[3] > size - gap:
            continue
        if any(box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap and b[1] < box[3] + gap
               for b in boxes):
            continue
        draw.text((x, y), text, fill=int(rng.integers(0, 80)), font=font)
        boxes.append(tuple(int(v) for v in box))
    gray = _blur_and_noise(image, rng, 5.0)
    return np.repeat(gray[:, :, None], 3, axis=2), np.array(boxes, dtype=np.int64).reshape(-1, 4)


def det_samples(
    n: int, seed: int = 0, size: int = DET_LIMIT_SIDE_LEN, charset: str = DEFAULT_CHARSET
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` detector inputs float32 [1, 3, size, size] and ground-truth boxes per page.

    Boxes are int64 [k, 4] rows ``x0, y0, x1, y1`` (ink bounding box, exclusive end) in input
    pixels. ``size`` must be a multiple of 32; the page is drawn at that size, so rapidocr's
    resize (``limit_side_len = size``) is the identity.
    """
    if size % 32 or size < 64:
        raise ValueError(f"size must be a multiple of 32 and >= 64, got {size}")
    rng = np.random.default_rng(seed)
    inputs, boxes = [], []
    for _ in range(n):
        page, page_boxes = _page(size, rng, charset)
        inputs.append(det_preprocess(page, limit_side_len=size))
        boxes.append(page_boxes)
    return inputs, boxes


# ---- output ----------------------------------------------------------------------------------
def save_npz_folder(samples: Sequence[np.ndarray], folder: str | Path, input_name: str = "x",
                    labels: Sequence | None = None) -> list[Path]:
    """Write ``sample_00000.npz``... (one sample each, key ``input_name``) for ``--data folder``.

    ``labels`` (optional, one per sample: int, str or list of str) is stored under ``label``.
    """
    if labels is not None and len(labels) != len(samples):
        raise ValueError(f"{len(labels)} labels for {len(samples)} samples")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, sample in enumerate(samples):
        arrays = {input_name: np.asarray(sample)}
        if labels is not None:
            arrays["label"] = np.asarray(labels[i])
        path = folder / f"sample_{i:05d}.npz"
        np.savez(path, **arrays)
        paths.append(path)
    return paths


# ---- fp32 sanity run -------------------------------------------------------------------------
def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fp32 sanity figures of the PP-OCR zoo models on rendered data")
    parser.add_argument("--n", type=int, default=16, help="samples per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--det-size", type=int, default=DET_LIMIT_SIDE_LEN)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models.zoo import fetch

    rec_path = fetch("ppocr-rec")
    dictionary = rec_dictionary(rec_path)
    session = _session(rec_path)
    xs, truths = rec_samples(args.n, args.seed)
    preds = [rec_decode(session.run(None, {"x": x})[0], dictionary) for x in xs]
    flat_pred = [p for batch in preds for p in batch]
    flat_truth = [t for batch in truths for t in batch]
    exact = np.mean([p == t for p, t in zip(flat_pred, flat_truth)])
    print(f"ppocr-rec  fp32 char accuracy {char_accuracy(flat_pred, flat_truth):.4f}  "
          f"exact lines {exact:.3f}  ({len(flat_truth)} lines, {sum(map(len, flat_truth))} chars)")
    for p, t in zip(flat_pred, flat_truth):
        if p != t:
            print(f"    truth {t!r:26} pred {p!r}")

    session = _session(fetch("ppocr-cls"))
    xs, labels = cls_samples(args.n, args.seed)
    logits = np.concatenate([session.run(None, {"x": x})[0] for x in xs])
    print(f"ppocr-cls  fp32 top-1 {cls_top1(logits, labels):.4f}  ({len(labels)} lines, {sum(labels)} rotated)")

    session = _session(fetch("ppocr-det"))
    xs, boxes = det_samples(args.n, args.seed, size=args.det_size)
    covers, precisions, hits = [], [], []
    for x, page_boxes in zip(xs, boxes):
        mask = det_mask(session.run(None, {"x": x})[0])[0]
        truth = boxes_mask(page_boxes, mask.shape)
        coverage = box_coverage(mask, page_boxes)
        covers.append(np.count_nonzero(mask & truth) / max(1, np.count_nonzero(truth)))
        precisions.append(np.count_nonzero(mask & truth) / max(1, np.count_nonzero(mask)))
        hits.extend(coverage >= 0.2)
    print(f"ppocr-det  fp32 text-box pixels covered {np.mean(covers):.3f}  mask pixels inside boxes "
          f"{np.mean(precisions):.3f}  boxes >=20% covered {np.mean(hits):.3f} ({len(hits)} boxes, "
          f"thresh {DET_THRESH})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
