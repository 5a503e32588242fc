"""The OCR task metrics, as rapidocr decodes its models' outputs: greedy CTC decoding, edit distance
and character accuracy (recogniser), top-1 (classifier), binarised text masks and their IoU (detector).
Pure functions; imported through ``ocr_data``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DET_THRESH = 0.3  # config.yaml Det.thresh (DBPostProcess binarisation)
CTC_BLANK = 0  # ch_ppocr_rec/utils.py: get_ignored_tokens() -> [0]; ' ' is appended last


# ---- recogniser --------------------------------------------------------------------------------
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


# ---- direction classifier ----------------------------------------------------------------------
def cls_top1(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Fraction of rows of [N, 2] scores whose argmax equals the label."""
    logits = np.asarray(logits).reshape(len(labels), -1)
    return float(np.mean(logits.argmax(axis=1) == np.asarray(labels))) if len(labels) else 1.0


# ---- detector ----------------------------------------------------------------------------------
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
