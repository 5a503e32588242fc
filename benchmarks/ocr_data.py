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

Every function is pure: the same arguments (and seed) give bit-identical arrays.

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

__all__ = [
    "CLS_LABELS",
    "CLS_SHAPE",
    "DEFAULT_CHARSET",
    "DET_LIMIT_SIDE_LEN",
    "DET_MEAN",
    "DET_STD",
    "DET_THRESH",
    "FONT_PACKAGE",
    "FontNotFoundError",
    "REC_SHAPE",
    "box_coverage",
    "boxes_mask",
    "char_accuracy",
    "cls_preprocess",
    "cls_samples",
    "cls_top1",
    "default_charset",
    "det_mask",
    "det_preprocess",
    "det_samples",
    "edit_distance",
    "find_font",
    "mask_iou",
    "random_text",
    "rec_decode",
    "rec_dictionary",
    "rec_preprocess",
    "rec_samples",
    "render_line",
    "resize_bilinear",
    "save_npz_folder",
]

# ---- constants copied from rapidocr_onnxruntime 1.4.4 -----------------------------------------
REC_SHAPE = (3, 48, 320)  # config.yaml Rec.rec_img_shape
CLS_SHAPE = (3, 48, 192)  # config.yaml Cls.cls_image_shape
CLS_LABELS = ("0", "180")  # config.yaml Cls.label_list
DET_LIMIT_SIDE_LEN = 736  # config.yaml Det.limit_side_len (limit_type: min)
DET_MEAN = (0.5, 0.5, 0.5)  # config.yaml Det.mean
DET_STD = (0.5, 0.5, 0.5)  # config.yaml Det.std
DET_THRESH = 0.3  # config.yaml Det.thresh (DBPostProcess binarisation)
CTC_BLANK = 0  # ch_ppocr_rec/utils.py: get_ignored_tokens() -> [0]; ' ' is appended last

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


# ---- text and rendering ----------------------------------------------------------------------
_PUNCT_TAIL = ",.;:!?"
_WRAPS = ("()", "[]", '""', "''", "{}", "<>")
_NUMBER_SEPS = ".,:/-"
_PREFIXES = "$#@+-~*&%="


def random_text(rng: np.random.Generator, charset: str, min_len: int, max_len: int, words: bool = True) -> str:
    """``min_len..max_len`` characters from ``charset`` (the space is always allowed between words).

    ``words=True`` (default) builds word-like text, as OCR sees it: lowercase, Capitalised and
    UPPER words, numbers such as ``12.50`` or ``2024-05``, some punctuation attached to words,
    single spaces between tokens. Case and digit runs give the recogniser the context real text
    has (``0``/``O``, ``l``/``I``/``1`` are ambiguous as isolated glyphs). ``words=False`` draws
    characters uniformly (a space in ``charset`` then never starts/ends the text nor doubles).
    """
    if not charset or min_len < 1 or max_len < min_len:
        raise ValueError(f"need a non-empty charset and 1 <= min_len <= max_len, got {min_len}, {max_len}")
    solid = [c for c in dict.fromkeys(charset) if c != " "]
    if not solid:
        raise ValueError("charset holds only spaces")
    length = int(rng.integers(min_len, max_len + 1))
    lower = [c for c in solid if c in string.ascii_lowercase]
    upper = [c for c in solid if c in string.ascii_uppercase]
    digits = [c for c in solid if c in string.digits]
    if not words or not (lower or upper or digits):
        chars = solid + ([" "] if " " in charset else [])
        out: list[str] = []
        for i in range(length):
            pool = solid if (i == 0 or i == length - 1 or out[-1] == " ") else chars
            out.append(pool[int(rng.integers(len(pool)))])
        return "".join(out)

    def pick(pool: Sequence[str], k: int) -> str:
        return "".join(pool[int(i)] for i in rng.integers(0, len(pool), size=k))

    def token() -> str:
        kind = rng.choice(5, p=[0.42, 0.2, 0.08, 0.2, 0.1])
        if kind == 3 and digits:  # number, maybe with one separator
            text = pick(digits, int(rng.integers(1, 5)))
            seps = [c for c in _NUMBER_SEPS if c in solid]
            if seps and rng.random() < 0.4:
                text += seps[int(rng.integers(len(seps)))] + pick(digits, int(rng.integers(1, 4)))
            return text
        if kind == 4:  # a mixed code such as A7X2 or k9
            return pick(solid if rng.random() < 0.3 else (upper + digits or solid), int(rng.integers(2, 6)))
        letters = upper if kind == 2 else lower
        letters = letters or lower or upper or digits
        text = pick(letters, int(rng.integers(2 if kind == 2 else 1, 6 if kind == 2 else 9)))
        if kind == 1 and upper:
            text = pick(upper, 1) + text[1:]
        return text

    def decorate(text: str) -> str:
        roll = rng.random()
        tails = [c for c in _PUNCT_TAIL if c in solid]
        wraps = [w for w in _WRAPS if w[0] in solid and w[1] in solid]
        prefixes = [c for c in _PREFIXES if c in solid]
        if roll < 0.25 and tails:
            return text + tails[int(rng.integers(len(tails)))]
        if roll < 0.33 and wraps:
            w = wraps[int(rng.integers(len(wraps)))]
            return w[0] + text + w[1]
        if roll < 0.40 and prefixes:
            return prefixes[int(rng.integers(len(prefixes)))] + text
        return text

    text = decorate(token())[:length]
    while len(text) < length:
        nxt = decorate(token())
        if len(text) + 1 + len(nxt) > length:
            break
        text += " " + nxt
    return text if len(text) >= min_len else text + pick(lower or solid, min_len - len(text))


def render_line(text: str, height: int = 48, seed: int = 0):
    """One text line as a PIL RGB image of the given height, width fitted to the text.

    Mimics a detector crop: dark gray text on a light gray background, font size 58-72 % of the
    height, small random margins and vertical offset, slight blur and pixel noise.
    """
    from PIL import Image, ImageDraw, ImageFilter

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
    blur = rng.uniform(0.0, 0.6)
    if blur > 0.25:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(0.0, 6.0), pixels.shape).astype(np.float32)
    gray = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _to_bgr(image) -> np.ndarray:
    """PIL image → HxWx3 uint8 BGR, as rapidocr's LoadImage does."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)[..., ::-1])


# ---- preprocessing ---------------------------------------------------------------------------
def _linear_taps(n_in: int, n_out: int, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """OpenCV INTER_LINEAR taps (resize.cpp): float32 centre-aligned source position, the two weights
    each rounded to 1/2048ths (INTER_RESIZE_COEF_BITS = 11). Along x a position outside the image
    gets weight (1, 0) on the border pixel; along y OpenCV only clamps the row indices."""
    pos = ((np.arange(n_out) + 0.5) * (1.0 / (n_out / n_in)) - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0).astype(np.float32)
    if clamp_weights:
        low = i0 < 0
        frac[low], i0[low] = 0, 0
        high = i0 >= n_in - 1
        frac[high], i0[high] = 0, n_in - 1
    i1 = np.clip(i0 + 1, 0, n_in - 1)
    i0 = np.clip(i0, 0, n_in - 1)
    c0 = np.rint((np.float32(1) - frac) * 2048).astype(np.int64)
    c1 = np.rint(frac * 2048).astype(np.int64)
    return i0, i1, c0, c1


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an HxWxC uint8 image like ``cv2.resize(img, (width, height))`` (INTER_LINEAR).

    Replicates OpenCV's fixed-point path: horizontal pass in 11-bit integer weights, vertical pass
    with its SIMD rounding ``((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2 >> 2``. Against
    opencv-python-headless 5.0.0 (x86-64) the output was bit-identical on every size tried.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    y0, y1, b0, b1 = _linear_taps(h, height, clamp_weights=False)
    x0, x1, a0, a1 = _linear_taps(w, width, clamp_weights=True)
    src = image.astype(np.int64)
    if src.ndim == 2:
        src = src[:, :, None]
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    out = (((rows[y0] >> 4) * b0[:, None, None]) >> 16) + (((rows[y1] >> 4) * b1[:, None, None]) >> 16)
    out = np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)
    return out if image.ndim == 3 else out[:, :, 0]


def _resize_norm_pad(image_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr TextRecognizer/TextClassifier.resize_norm_img for a fixed target width."""
    h, w = image_bgr.shape[:2]
    ratio = w / float(h)
    resized_w = width if math.ceil(height * ratio) > width else int(math.ceil(height * ratio))
    resized = resize_bilinear(image_bgr, resized_w, height).astype(np.float32)
    resized = resized.transpose(2, 0, 1) / 255
    resized -= 0.5
    resized /= 0.5
    padded = np.zeros((3, height, width), dtype=np.float32)
    padded[:, :, :resized_w] = resized
    return padded


def rec_preprocess(image, width: int = REC_SHAPE[2]) -> np.ndarray:
    """A PIL image or BGR uint8 array → float32 [3, 48, width] as rapidocr's recogniser."""
    bgr = image if isinstance(image, np.ndarray) else _to_bgr(image)
    return _resize_norm_pad(bgr, REC_SHAPE[1], width)


def cls_preprocess(image) -> np.ndarray:
    """A PIL image or BGR uint8 array → float32 [3, 48, 192] as rapidocr's direction classifier."""
    bgr = image if isinstance(image, np.ndarray) else _to_bgr(image)
    return _resize_norm_pad(bgr, CLS_SHAPE[1], CLS_SHAPE[2])


def det_preprocess(image, limit_side_len: int = DET_LIMIT_SIDE_LEN, limit_type: str = "min") -> np.ndarray:
    """A PIL image or BGR uint8 array → float32 [1, 3, H, W] as rapidocr's DetPreProcess."""
    bgr = image if isinstance(image, np.ndarray) else _to_bgr(image)
    h, w = bgr.shape[:2]
    if limit_type == "max":
        ratio = float(limit_side_len) / max(h, w) if max(h, w) > limit_side_len else 1.0
    else:
        ratio = float(limit_side_len) / min(h, w) if min(h, w) < limit_side_len else 1.0
    resize_h = int(round(int(h * ratio) / 32) * 32)
    resize_w = int(round(int(w * ratio) / 32) * 32)
    if resize_h <= 0 or resize_w <= 0:
        raise ValueError(f"image {w}x{h} is too small for the detector")
    resized = resize_bilinear(bgr, resize_w, resize_h)
    mean = np.array(DET_MEAN)
    std = np.array(DET_STD)
    normed = (resized.astype("float32") * (1 / 255.0) - mean) / std  # float64, like rapidocr
    return normed.transpose(2, 0, 1)[np.newaxis].astype(np.float32)


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


def rec_decode(logits: np.ndarray, charset: Sequence[str]) -> list[str]:
    """Greedy CTC decoding of [N, T, C] scores, as rapidocr's CTCLabelDecode.

    ``charset`` is the recogniser dictionary (``C - 2`` entries, see :func:`rec_dictionary`): class 0
    is the CTC blank and class ``C - 1`` a space. A full ``C``-entry table (blank first) is used as is.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"expected logits [N, T, C], got shape {logits.shape}")
    classes = logits.shape[2]
    table = list(charset)
    if len(table) == classes - 2:
        table = ["blank", *table, " "]
    elif len(table) != classes:
        raise ValueError(f"charset has {len(table)} entries; logits have {classes} classes (expected C - 2 or C)")
    index = logits.argmax(axis=2)
    keep = np.ones(index.shape, dtype=bool)
    keep[:, 1:] = index[:, 1:] != index[:, :-1]
    keep &= index != CTC_BLANK
    return ["".join(table[i] for i in row[sel]) for row, sel in zip(index, keep)]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit insert / delete / substitute), one numpy row per character of ``a``."""
    if not a or not b:
        return len(a) + len(b)
    codes = np.array([ord(c) for c in b], dtype=np.int64)
    steps = np.arange(len(b) + 1, dtype=np.int64)
    prev = steps.copy()
    row = np.empty_like(prev)
    for i, char in enumerate(a, start=1):
        row[0] = i
        np.minimum(prev[:-1] + (codes != ord(char)), prev[1:] + 1, out=row[1:])
        prev = np.minimum.accumulate(row - steps) + steps  # insertions: row[j] = min(row[j], row[j-1] + 1)
    return int(prev[-1])


def char_accuracy(pred: Sequence[str], truth: Sequence[str]) -> float:
    """``1 - total edit distance / total ground-truth characters``, clipped at 0."""
    if len(pred) != len(truth):
        raise ValueError(f"{len(pred)} predictions for {len(truth)} ground truths")
    total = sum(len(t) for t in truth)
    errors = sum(edit_distance(p, t) for p, t in zip(pred, truth))
    if total == 0:
        return 1.0 if errors == 0 else 0.0
    return max(0.0, 1.0 - errors / total)


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


def cls_top1(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Fraction of rows of [N, 2] scores whose argmax equals the label."""
    logits = np.asarray(logits).reshape(len(labels), -1)
    return float(np.mean(logits.argmax(axis=1) == np.asarray(labels))) if len(labels) else 1.0


# ---- detector --------------------------------------------------------------------------------
def _page(size: int, rng: np.random.Generator, charset: str) -> tuple[np.ndarray, np.ndarray]:
    """A light page with 4..10 non-overlapping text lines; returns BGR uint8 and [k, 4] boxes."""
    from PIL import Image, ImageDraw, ImageFilter

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
    blur = rng.uniform(0.0, 0.6)
    if blur > 0.25:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(0.0, 5.0), pixels.shape).astype(np.float32)
    gray = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
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


def det_mask(prob: np.ndarray, thresh: float = DET_THRESH, dilate: bool = False) -> np.ndarray:
    """Binarise a DB probability map ([N, 1, H, W] → bool [N, H, W]; lower ranks kept as is).

    ``dilate`` applies rapidocr's 2x2 dilation (``use_dilation: true``; cv2 anchor at (1, 1)).
    """
    prob = np.asarray(prob)
    mask = (prob[:, 0] if prob.ndim == 4 else prob) > thresh
    if dilate:
        grown = mask.copy()
        grown[..., 1:, :] |= mask[..., :-1, :]
        grown[..., :, 1:] |= mask[..., :, :-1]
        grown[..., 1:, 1:] |= mask[..., :-1, :-1]
        mask = grown
    return mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-shape binary masks; two empty masks give 1.0."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def boxes_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool [H, W] mask that is True inside any ``x0, y0, x1, y1`` box."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        mask[y0:y1, x0:x1] = True
    return mask


def box_coverage(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per box, the fraction of its pixels set in the [H, W] ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    return np.array([mask[y0:y1, x0:x1].mean() if x1 > x0 and y1 > y0 else 0.0
                     for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4)], dtype=np.float64)


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
