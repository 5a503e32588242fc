"""Tests of ``benchmarks.ocr_data``: seeded OCR data in rapidocr's preprocessing, and the task metrics.

Rendering tests skip when Pillow or DejaVu Sans is missing; model tests skip when the zoo model's
package (rapidocr-onnxruntime) is not installed.
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

from benchmarks import ocr_data as od  # noqa: E402
from models.zoo import zoo_model_or_skip  # noqa: E402


@pytest.fixture(scope="module")
def font() -> Path:
    try:
        return od.find_font()
    except od.FontNotFoundError as e:
        pytest.skip(str(e))


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ---- font, charset, text -----------------------------------------------------------------------
def test_find_font_error_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(od, "_FONT_CANDIDATES", ("/nonexistent/DejaVuSans.ttf",))
    with pytest.raises(od.FontNotFoundError, match="fonts-dejavu-core"):
        od.find_font()


def test_default_charset_is_in_the_dictionary_and_drawn_by_the_font(font: Path) -> None:
    dictionary = od.rec_dictionary(zoo_model_or_skip("ppocr-rec"))
    assert len(dictionary) == 6623
    assert od.default_charset(dictionary) == od.DEFAULT_CHARSET
    assert od.default_charset(dictionary, "a中b") == "ab"  # DejaVu has no CJK glyphs


def test_random_text_is_seeded_bounded_and_from_the_charset() -> None:
    first = [od.random_text(np.random.default_rng(5), od.DEFAULT_CHARSET, 3, 20) for _ in range(3)]
    assert first == [od.random_text(np.random.default_rng(5), od.DEFAULT_CHARSET, 3, 20) for _ in range(3)]
    rng = np.random.default_rng(0)
    allowed = set(od.DEFAULT_CHARSET) | {" "}
    for words in (True, False):
        for _ in range(200):
            text = od.random_text(rng, od.DEFAULT_CHARSET, 3, 20, words=words)
            assert 3 <= len(text) <= 20 and set(text) <= allowed
            assert text == text.strip() and "  " not in text
    spaced = [od.random_text(rng, "ab ", 5, 9, words=False) for _ in range(100)]
    assert all(t == t.strip() and "  " not in t for t in spaced) and any(" " in t for t in spaced)
    with pytest.raises(ValueError):
        od.random_text(rng, "", 1, 3)


def test_render_line_is_deterministic_and_readable(font: Path) -> None:
    a = od.render_line("Hello 42", height=40, seed=3)
    b = od.render_line("Hello 42", height=40, seed=3)
    c = od.render_line("Hello 42", height=40, seed=4)
    assert a.mode == "RGB" and a.height == 40 and a.width > 40
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a)[:, : min(a.width, c.width)], np.asarray(c)[:, : min(a.width, c.width)])
    gray = np.asarray(a)[..., 0].astype(int)
    assert gray.max() - gray.min() > 120  # dark ink on a light background


# ---- preprocessing -----------------------------------------------------------------------------
def test_resize_bilinear_follows_opencv_inter_linear() -> None:
    row = np.array([[[0], [255]]], dtype=np.uint8)  # 1x2x1
    assert od.resize_bilinear(row, 4, 1)[0, :, 0].tolist() == [0, 64, 191, 255]
    flat = np.full((7, 9, 3), 77, dtype=np.uint8)
    assert (od.resize_bilinear(flat, 20, 13) == 77).all()
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert np.array_equal(od.resize_bilinear(image, 6, 5), image)
    assert od.resize_bilinear(image[..., 0], 11, 3).shape == (3, 11)


def test_rec_preprocess_keeps_aspect_and_pads_right() -> None:
    image = np.full((24, 40, 3), 255, dtype=np.uint8)  # → 48 x 80, then zero padding to 320
    x = od.rec_preprocess(image)
    assert x.shape == (3, 48, 320) and x.dtype == np.float32
    assert np.allclose(x[:, :, :80], 1.0) and (x[:, :, 80:] == 0).all()
    wide = od.rec_preprocess(np.zeros((10, 500, 3), dtype=np.uint8))
    assert np.allclose(wide, -1.0)  # squeezed to the full width, no padding
    assert od.cls_preprocess(image).shape == (3, 48, 192)


def test_det_preprocess_applies_rapidocr_min_limit() -> None:
    image = np.full((100, 150, 3), 255, dtype=np.uint8)
    x = od.det_preprocess(image)  # min side 100 → 736; 150 → 1104 = 34.5 * 32, Python round() → 34
    assert x.shape == (1, 3, 736, 1088) and x.dtype == np.float32 and np.allclose(x, 1.0)
    assert od.det_preprocess(image, limit_side_len=64).shape == (1, 3, 96, 160)


# ---- samples -----------------------------------------------------------------------------------
def test_rec_samples_are_deterministic_with_the_right_shapes(font: Path) -> None:
    xs, truths = od.rec_samples(3, seed=7, width=256, batch=2)
    again, truths2 = od.rec_samples(3, seed=7, width=256, batch=2)
    other, _ = od.rec_samples(3, seed=8, width=256, batch=2)
    assert truths == truths2 and len(truths) == 3 and all(len(t) == 2 for t in truths)
    for x, y in zip(xs, again):
        assert x.shape == (2, 3, 48, 256) and x.dtype == np.float32
        assert np.array_equal(x, y)
        assert x.min() >= -1.0 and x.max() <= 1.0
    assert not np.array_equal(xs[0], other[0])


def test_cls_samples_rotate_half(font: Path) -> None:
    xs, labels = od.cls_samples(6, seed=1)
    xs2, labels2 = od.cls_samples(6, seed=1)
    assert labels == labels2 and sorted(labels) == [0, 0, 0, 1, 1, 1]
    assert all(x.shape == (1, 3, 48, 192) and x.dtype == np.float32 for x in xs)
    assert all(np.array_equal(a, b) for a, b in zip(xs, xs2))
    assert od.CLS_LABELS[1] == "180"


def test_det_samples_pages_and_boxes(font: Path) -> None:
    xs, boxes = od.det_samples(2, seed=3, size=256)
    xs2, boxes2 = od.det_samples(2, seed=3, size=256)
    for x, y, b, b2 in zip(xs, xs2, boxes, boxes2):
        assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32 and np.array_equal(x, y)
        assert np.array_equal(b, b2) and b.ndim == 2 and b.shape[1] == 4 and len(b) >= 1
        assert (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
        assert b.min() >= 0 and b.max() <= 256
        for (i, p), (j, q) in itertools.combinations(enumerate(b), 2):  # non-overlapping
            assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1], (i, j)
        inside = od.boxes_mask(b, (256, 256))
        assert x[0, 0][inside].mean() < x[0, 0][~inside].mean()  # ink lives in the boxes
    with pytest.raises(ValueError):
        od.det_samples(1, size=100)


def test_save_npz_folder_round_trips(tmp_path: Path) -> None:
    samples = [np.full((1, 3, 4, 5), i, dtype=np.float32) for i in range(3)]
    paths = od.save_npz_folder(samples, tmp_path / "data", input_name="x", labels=["ab", "c", ""])
    assert [p.name for p in paths] == ["sample_00000.npz", "sample_00001.npz", "sample_00002.npz"]
    for i, path in enumerate(paths):
        with np.load(path, allow_pickle=False) as data:
            assert sorted(data.files) == ["label", "x"]
            assert np.array_equal(data["x"], samples[i])
    with np.load(paths[0], allow_pickle=False) as data:
        assert data["label"].item() == "ab"


# ---- metrics -----------------------------------------------------------------------------------
def _naive_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_edit_distance() -> None:
    assert od.edit_distance("", "") == 0
    assert od.edit_distance("abc", "") == 3 and od.edit_distance("", "ab") == 2
    assert od.edit_distance("kitten", "sitting") == 3
    assert od.edit_distance("flaw", "lawn") == 2
    assert od.edit_distance("abc", "abc") == 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("abc "), size=int(rng.integers(0, 9))))
        b = "".join(rng.choice(list("abc "), size=int(rng.integers(0, 9))))
        assert od.edit_distance(a, b) == _naive_distance(a, b) == od.edit_distance(b, a)


def test_char_accuracy() -> None:
    assert od.char_accuracy(["hello", "ab"], ["hello", "ab"]) == 1.0
    assert od.char_accuracy(["hallo", "ab"], ["hello", "ab"]) == pytest.approx(1 - 1 / 7)
    assert od.char_accuracy(["x" * 50], ["ab"]) == 0.0  # clipped
    assert od.char_accuracy([""], [""]) == 1.0 and od.char_accuracy(["a"], [""]) == 0.0
    with pytest.raises(ValueError):
        od.char_accuracy(["a"], ["a", "b"])


def test_rec_decode_greedy_ctc() -> None:
    charset = ["a", "b", "c"]  # classes: 0 blank, 1 a, 2 b, 3 c, 4 space
    path = [1, 1, 0, 1, 2, 2, 4, 3, 0]
    logits = np.eye(5, dtype=np.float32)[np.array([path, [0] * 9])]
    assert od.rec_decode(logits, charset) == ["aab c", ""]
    assert od.rec_decode(logits, ["-", *charset, " "]) == ["aab c", ""]  # full table
    with pytest.raises(ValueError):
        od.rec_decode(logits, ["a"])


def test_cls_top1() -> None:
    assert od.cls_top1(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [0, 1, 1]) == pytest.approx(2 / 3)


def test_det_mask_and_mask_iou() -> None:
    prob = np.zeros((2, 1, 4, 4), dtype=np.float32)
    prob[0, 0, 1, 1] = 0.9
    prob[0, 0, 2, 2] = od.DET_THRESH  # not above the threshold
    mask = od.det_mask(prob)
    assert mask.shape == (2, 4, 4) and mask.dtype == bool and mask.sum() == 1
    grown = od.det_mask(prob, dilate=True)
    assert grown[0, 1:3, 1:3].all() and grown.sum() == 4
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    assert od.mask_iou(a, b) == 1.0
    a[0, :2] = True
    assert od.mask_iou(a, b) == 0.0
    b[0, 1:3] = True
    assert od.mask_iou(a, b) == pytest.approx(1 / 3)
    assert od.mask_iou(a, a) == 1.0
    with pytest.raises(ValueError):
        od.mask_iou(a, np.zeros((3, 3), dtype=bool))
    assert od.box_coverage(a, np.array([[0, 0, 2, 1], [0, 1, 4, 4]])).tolist() == [1.0, 0.0]


# ---- fp32 sanity on the real models --------------------------------------------------------------
def test_fp32_recogniser_reads_rendered_lines(font: Path) -> None:
    path = zoo_model_or_skip("ppocr-rec")
    dictionary = od.rec_dictionary(path)
    session = _session(path)
    xs, truths = od.rec_samples(8, seed=11)
    preds = [od.rec_decode(session.run(None, {"x": x})[0], dictionary)[0] for x in xs]
    assert od.char_accuracy(preds, [t[0] for t in truths]) >= 0.9, list(zip(preds, truths))


def test_fp32_classifier_sees_rotation(font: Path) -> None:
    session = _session(zoo_model_or_skip("ppocr-cls"))
    xs, labels = od.cls_samples(8, seed=11)
    logits = np.concatenate([session.run(None, {"x": x})[0] for x in xs])
    assert od.cls_top1(logits, labels) >= 0.85


def test_fp32_detector_finds_the_lines(font: Path) -> None:
    session = _session(zoo_model_or_skip("ppocr-det"))
    xs, boxes = od.det_samples(1, seed=11, size=384)
    mask = od.det_mask(session.run(None, {"x": xs[0]})[0])[0]
    assert (od.box_coverage(mask, boxes[0]) >= 0.2).mean() >= 0.8
    assert np.count_nonzero(mask & od.boxes_mask(boxes[0], mask.shape)) >= 0.9 * np.count_nonzero(mask)


def test_default_charset_has_no_spaces_and_covers_ascii_alnum() -> None:
    assert " " not in od.DEFAULT_CHARSET
    assert set(string.ascii_letters + string.digits) <= set(od.DEFAULT_CHARSET)
