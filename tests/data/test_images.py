"""Tests for onnxq.data.images: the image pipeline, its options and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxq.data import ImageFolderSource, ImagePreprocess, InputSpec, open_source
from onnxq.errors import CalibrationDataError, ConfigError

NCHW = [InputSpec("x", np.float32, ("N", 3, 4, 6))]
RED = (255, 0, 0)


def _png(folder: Path, name: str, rgb: tuple[int, int, int] | np.ndarray, size: tuple[int, int] = (4, 6)) -> Path:
    """A PNG of one colour (or of the given HxWx3 uint8 pixels); size is (H, W)."""
    folder.mkdir(exist_ok=True)
    pixels = rgb if isinstance(rgb, np.ndarray) else np.full((*size, 3), rgb, dtype=np.uint8)
    path = folder / name
    Image.fromarray(pixels).save(path)
    return path


def _only(source: ImageFolderSource) -> np.ndarray:
    (sample,) = list(source)
    return sample[source.spec.name]


def test_nchw_scale_mean_std(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", (255, 51, 0))
    pre = ImagePreprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    x = _only(ImageFolderSource(tmp_path / "imgs", NCHW, pre))
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, (0.2 - 0.5) / 0.25, -0.5], rtol=1e-6)


def test_bgr_swaps_channels(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", RED)
    rgb = _only(ImageFolderSource(tmp_path / "imgs", NCHW))
    bgr = _only(ImageFolderSource(tmp_path / "imgs", NCHW, ImagePreprocess(channel_order="BGR")))
    assert rgb[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert bgr[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_nhwc_layout_is_inferred_from_the_model(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", RED)
    x = _only(ImageFolderSource(tmp_path / "imgs", [InputSpec("x", np.float32, ("N", 4, 6, 3))]))
    assert x.shape == (1, 4, 6, 3)
    assert x[0, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_stretch_resizes_to_model_size_and_float16(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", RED, size=(20, 10))
    x = _only(ImageFolderSource(tmp_path / "imgs", [InputSpec("x", np.float16, (1, 3, 4, 6))]))
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float16


def test_grayscale_is_automatic_for_one_channel_models(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", (255, 255, 255))
    x = _only(ImageFolderSource(tmp_path / "imgs", [InputSpec("x", np.float32, (1, 1, 4, 6))]))
    assert x.shape == (1, 1, 4, 6) and np.allclose(x, 1.0)


def test_grayscale_for_a_three_channel_model_repeats_the_channel(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", RED)
    x = _only(ImageFolderSource(tmp_path / "imgs", NCHW, ImagePreprocess(grayscale=True)))
    assert x.shape == (1, 3, 4, 6)
    assert x[0, 0, 0, 0] == x[0, 1, 0, 0] == x[0, 2, 0, 0]


def test_keep_aspect_pad_pads_right_with_pad_value(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", (255, 255, 255), size=(4, 8))  # aspect 2:1
    spec = [InputSpec("x", np.float32, ("N", 3, 8, 32))]
    pre = ImagePreprocess(keep_aspect_pad=True, mean=(0.5,), std=(0.5,), pad_value=-7.0)
    x = _only(ImageFolderSource(tmp_path / "imgs", spec, pre))
    assert x.shape == (1, 3, 8, 32)
    np.testing.assert_allclose(x[0, :, :, :16], 1.0)  # 4x8 -> 8x16, white normalized to 1
    np.testing.assert_allclose(x[0, :, :, 16:], -7.0)


def test_keep_aspect_pad_with_dynamic_width_keeps_the_width(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", RED, size=(4, 8))
    spec = [InputSpec("x", np.float32, ("N", 3, 8, "W"))]
    x = _only(ImageFolderSource(tmp_path / "imgs", spec, ImagePreprocess(keep_aspect_pad=True)))
    assert x.shape == (1, 3, 8, 16)


def test_shorter_side_center_crops(tmp_path: Path) -> None:
    pixels = np.zeros((4, 12, 3), dtype=np.uint8)
    pixels[:, 4:8] = 255  # white middle third
    _png(tmp_path / "imgs", "a.png", pixels)
    spec = [InputSpec("x", np.float32, (1, 3, 4, 4))]
    x = _only(ImageFolderSource(tmp_path / "imgs", spec, ImagePreprocess(resize="shorter-side")))
    assert x.shape == (1, 3, 4, 4)
    assert x.min() > 0.9  # only the white middle survives the crop


def test_size_then_crop(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[2:6, 2:6] = 255
    _png(tmp_path / "imgs", "a.png", pixels)
    spec = [InputSpec("x", np.float32, (1, 3, 4, 4))]
    pre = ImagePreprocess(size=(8, 8), crop=(4, 4))
    np.testing.assert_allclose(_only(ImageFolderSource(tmp_path / "imgs", spec, pre)), 1.0)


def test_uint8_models_take_raw_pixels_and_need_scale_1(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", (200, 10, 0))
    spec = [InputSpec("x", np.uint8, (1, 4, 6, 3))]
    with pytest.raises(CalibrationDataError, match="input 'x' takes uint8 pixels: pass scale=1 and no mean/std"):
        ImageFolderSource(tmp_path / "imgs", spec)
    x = _only(ImageFolderSource(tmp_path / "imgs", spec, "scale=1"))
    assert x.dtype == np.uint8 and x[0, 0, 0].tolist() == [200, 10, 0]


def test_files_in_natural_order_case_insensitive_with_labels(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    for index in (10, 2):
        _png(folder, f"{index}.PNG", (index, 0, 0))
    Image.fromarray(np.full((4, 6, 3), 30, np.uint8)).save(folder / "3.jpg")
    (folder / "labels.txt").write_text("cat\ndog\nbird\n")
    source = open_source(folder, NCHW, labels_file=folder / "labels.txt")
    assert isinstance(source, ImageFolderSource) and len(source) == 3
    assert [p.name for p in source.files] == ["2.PNG", "3.jpg", "10.PNG"]
    assert [label for _, label in source.iter_with_labels()] == ["cat", "dog", "bird"]


def test_open_source_parses_preprocess_strings_and_single_files(tmp_path: Path) -> None:
    path = _png(tmp_path / "imgs", "a.png", RED, size=(10, 10))
    source = open_source(path, [InputSpec("x", np.float32, ("N", 3, "H", "W"))], image_preprocess="size=4x6,order=BGR")
    assert isinstance(source, ImageFolderSource)
    assert _only(source)[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert source.describe() == f"1 images in {path} -> 4x6 NCHW BGR (size=(4, 6), channel_order=BGR)"


def test_parse_full_spec() -> None:
    pre = ImagePreprocess.parse(
        "size=256x256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=nchw,order=bgr,"
        "scale=1/255,resize=shorter-side,grayscale=false"
    )
    assert pre == ImagePreprocess(
        size=(256, 256),
        crop=(224, 224),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        layout="NCHW",
        channel_order="BGR",
        resize="shorter-side",
        grayscale=False,
    )
    assert ImagePreprocess.parse("keep_aspect_pad=1,pad_value=-1,size=48x320") == ImagePreprocess(
        size=(48, 320), keep_aspect_pad=True, pad_value=-1.0
    )
    assert ImagePreprocess.parse("") == ImagePreprocess()


def test_parse_errors_list_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        ImagePreprocess.parse("size=224,colour=red")
    assert str(info.value).startswith("image preprocessing 'colour=red': unknown option; valid: size, resize, crop")
    with pytest.raises(ConfigError, match="'size=big': expected HxW or N"):
        ImagePreprocess.parse("size=big")
    with pytest.raises(ConfigError, match="'mean=a/b': expected numbers separated by '/'"):
        ImagePreprocess.parse("mean=a/b")
    with pytest.raises(ConfigError, match="image layout 'NCWH' is not one of NCHW, NHWC"):
        ImagePreprocess.parse("layout=ncwh")
    with pytest.raises(ConfigError, match="crop needs size"):
        ImagePreprocess(crop=(2, 2))
    with pytest.raises(ConfigError, match="keep_aspect_pad replaces resize/crop"):
        ImagePreprocess(keep_aspect_pad=True, resize="shorter-side")


def test_model_mismatches_are_reported(tmp_path: Path) -> None:
    _png(tmp_path / "imgs", "a.png", RED)
    folder = tmp_path / "imgs"
    two_inputs = [InputSpec("a", np.float32, (1, 3, 4, 6)), InputSpec("b", np.float32, (1,))]
    with pytest.raises(CalibrationDataError, match="image data only works for single-input models; .* 'a', 'b'"):
        ImageFolderSource(folder, two_inputs)
    dynamic = r"input 'x' \[N, 3, H, W\] has a dynamic height or width; pass size=HxW"
    with pytest.raises(CalibrationDataError, match=dynamic):
        ImageFolderSource(folder, [InputSpec("x", np.float32, ("N", 3, "H", "W"))])
    with pytest.raises(CalibrationDataError, match=r"image mean has 2 values, expected 1 or 3 for input 'x'"):
        ImageFolderSource(folder, NCHW, ImagePreprocess(mean=(0.1, 0.2)))
    with pytest.raises(CalibrationDataError, match=r"has 5 channels in NCHW layout, expected 1 or 3"):
        ImageFolderSource(folder, [InputSpec("x", np.float32, (1, 5, 4, 6))])


def test_size_mismatch_with_a_static_model_names_the_file(tmp_path: Path) -> None:
    path = _png(tmp_path / "imgs", "a.png", RED)
    source = ImageFolderSource(tmp_path / "imgs", NCHW, ImagePreprocess(size=(5, 6)))
    with pytest.raises(CalibrationDataError) as info:
        list(source)
    assert str(info.value) == (
        f"{path}: input 'x' axis 2 is 5, expected 4 (shape (1, 3, 5, 6), expected [N, 3, 4, 6])"
    )


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CalibrationDataError, match=f"^{folder / 'broken.jpg'}: cannot read as an image") as info:
        list(ImageFolderSource(folder, NCHW))
    assert info.value.__cause__ is not None


def test_empty_image_folder(tmp_path: Path) -> None:
    with pytest.raises(CalibrationDataError, match=r"folder '.*' contains no image files \(.bmp .jpeg .jpg .png\)"):
        ImageFolderSource(tmp_path, NCHW)


def test_missing_pillow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _png(tmp_path / "imgs", "a.png", RED)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(CalibrationDataError) as info:
        ImageFolderSource(tmp_path / "imgs", NCHW)
    assert str(info.value) == "reading images needs Pillow: pip install 'onnxq[images]'"
