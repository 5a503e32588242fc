"""Image files as calibration data: decode, resize, normalize and lay out like the model's input.

Calibration ranges are only as good as the preprocessing: a wrong mean/std, channel order or layout
feeds the model a distribution it never saw and silently degrades the quantized model. So every step
is explicit data (:class:`ImagePreprocess`), defaults come from the model's input shape, and
``describe()`` states what was applied. The pipeline, per image::

    decode (EXIF-rotated) -> RGB or L -> resize (stretch | shorter-side + center crop | keep aspect)
    -> [center crop] -> [RGB->BGR] -> x * scale -> (x - mean) / std -> [pad right] -> NCHW/NHWC -> dtype

mean/std are per channel in the order the model receives them (after a BGR swap). Pillow is imported
only when images are actually read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from onnxq.errors import CalibrationDataError, ConfigError

from ._base import Record, RecordSource
from ._files import data_files, require_single_input
from ._validation import IMAGE_SUFFIXES, InputSpec, PathArg

__all__ = ["ImageFolderSource", "ImagePreprocess"]

_LOG = logging.getLogger(__name__)

Resize = Literal["stretch", "shorter-side"]
ChannelOrder = Literal["RGB", "BGR"]
Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True)
class ImagePreprocess:
    """How to turn an image file into the model's input tensor.

    Attributes:
        size: (H, W) to resize to; None takes the model input's static height and width.
        resize: ``stretch`` ignores the aspect ratio; ``shorter-side`` scales until the image covers
            ``size`` and center-crops the excess.
        crop: (H, W) center crop after resizing (ImageNet: size=256x256, crop=224x224); needs ``size``.
        channel_order: ``RGB`` or ``BGR`` (OpenCV/Caffe-trained models).
        layout: ``NCHW`` or ``NHWC``; None infers it from where the model has 1 or 3 channels.
        scale: multiplies raw 0..255 pixels first.
        mean, std: per-channel (or one shared) values, subtracted then divided by after scaling.
        grayscale: decode as one channel; None means "when the model expects one channel".
        keep_aspect_pad: resize to the target height keeping the aspect ratio and pad on the right up to
            the target width with ``pad_value`` (in normalized units) — what OCR recognizers expect.
        pad_value: see ``keep_aspect_pad``.
    """

    size: tuple[int, int] | None = None
    resize: Resize = "stretch"
    crop: tuple[int, int] | None = None
    channel_order: ChannelOrder = "RGB"
    layout: Layout | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    grayscale: bool | None = None
    keep_aspect_pad: bool = False
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        for name in ("size", "crop"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(int(v) for v in value)
                if len(value) != 2 or min(value) < 1:
                    raise ConfigError(f"image {name} must be two positive ints (H, W), got {value}")
                object.__setattr__(self, name, value)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        _check_choice("resize", self.resize, ("stretch", "shorter-side"))
        _check_choice("order", self.channel_order, ("RGB", "BGR"))
        _check_choice("layout", self.layout, ("NCHW", "NHWC", None))
        if any(v == 0 for v in self.std):
            raise ConfigError(f"image std must not contain 0, got {self.std}")
        if self.crop is not None and self.size is None:
            raise ConfigError("image crop needs size (the image is resized to size, then cropped)")
        if self.crop is not None and self.size is not None and (self.crop[0] > self.size[0] or self.crop[1] > self.size[1]):
            raise ConfigError(f"image crop {_hw(self.crop)} is larger than size {_hw(self.size)}")
        if self.keep_aspect_pad and (self.crop is not None or self.resize != "stretch"):
            raise ConfigError("keep_aspect_pad replaces resize/crop; do not combine them")

    @classmethod
    def parse(cls, spec: str) -> ImagePreprocess:
        """Parse the CLI form, e.g. ``size=224x224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,order=RGB``.

        Raises:
            ConfigError: unknown key (the valid ones are listed) or malformed value.
        """
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, text = item.partition("=")
            key = key.strip().lower()
            if not sep or key not in _PARSERS:
                raise ConfigError(
                    f"image preprocessing '{item}': unknown option; valid: {', '.join(_PARSERS)} (as key=value)"
                )
            field, parse = _PARSERS[key]
            try:
                values[field] = parse(text.strip())
            except ValueError as e:
                raise ConfigError(f"image preprocessing '{item}': {e}") from e
        return cls(**values)

    def describe(self) -> str:
        """The non-default settings, e.g. ``size=224x224, mean=(0.485, ...)``."""
        default = ImagePreprocess()
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        changed = [f"{name}={value}" for name, value in values.items() if value != getattr(default, name)]
        return ", ".join(changed) or "defaults"


def _check_choice(name: str, value: object, valid: Sequence[object]) -> None:
    if value not in valid:
        raise ConfigError(f"image {name} '{value}' is not one of {', '.join(str(v) for v in valid if v)}")


def _hw(size: tuple[int, int] | None) -> str:
    return "?" if size is None else f"{size[0]}x{size[1]}"


def _parse_hw(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError("expected HxW or N, e.g. 224x224")
    values = [int(p) for p in parts]
    return (values[0], values[-1])


def _parse_float(text: str) -> float:
    numerator, slash, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError) as e:
        raise ValueError(f"expected a number or a fraction like 1/255, got '{text}'") from e


def _parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split("/"))
    except ValueError as e:
        raise ValueError(f"expected numbers separated by '/', e.g. 0.485/0.456/0.406, got '{text}'") from e


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"expected true or false, got '{text}'")
    return lowered in ("1", "true", "yes")


# CLI key -> (ImagePreprocess field, value parser): a registry, so adding an option is one line.
_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "size": ("size", _parse_hw),
    "resize": ("resize", str.lower),
    "crop": ("crop", _parse_hw),
    "order": ("channel_order", str.upper),
    "channel_order": ("channel_order", str.upper),
    "layout": ("layout", str.upper),
    "scale": ("scale", _parse_float),
    "mean": ("mean", _parse_floats),
    "std": ("std", _parse_floats),
    "grayscale": ("grayscale", _parse_bool),
    "keep_aspect_pad": ("keep_aspect_pad", _parse_bool),
    "pad_value": ("pad_value", _parse_float),
}


@dataclass(frozen=True)
class _Geometry:
    """What the model input wants, resolved once per source."""

    layout: Layout
    batched: bool
    channels: int
    grayscale: bool
    height: int
    width: int | None  # None: any width (keep_aspect_pad on a model with a dynamic width)
    resize_to: tuple[int, int] | None  # (H, W) before the crop; None with keep_aspect_pad


def _resolve_geometry(spec: InputSpec, pre: ImagePreprocess) -> _Geometry:
    if spec.shape is None or len(spec.shape) not in (3, 4):
        raise CalibrationDataError(
            f"input '{spec.name}' has shape {spec.shape_text()}; image data needs an NCHW/NHWC (or CHW/HWC) input"
        )
    batched = len(spec.shape) == 4
    dims = spec.shape[1:] if batched else spec.shape
    layout = pre.layout or ("NHWC" if dims[0] not in (1, 3) and dims[2] in (1, 3) else "NCHW")
    c, h, w = dims if layout == "NCHW" else (dims[2], dims[0], dims[1])
    if isinstance(c, int) and c not in (1, 3):
        raise CalibrationDataError(
            f"input '{spec.name}' {spec.shape_text()} has {c} channels in {layout} layout, expected 1 or 3"
            + ("" if pre.layout else " (pass layout=NCHW or layout=NHWC)")
        )
    grayscale = pre.grayscale if pre.grayscale is not None else c == 1
    channels = c if isinstance(c, int) else (1 if grayscale else 3)
    if channels == 1 and not grayscale:
        raise CalibrationDataError(f"input '{spec.name}' {spec.shape_text()} expects 1 channel but grayscale=false")
    for name, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) not in (0, 1, channels):
            raise CalibrationDataError(
                f"image {name} has {len(values)} values, expected 1 or {channels} for input '{spec.name}'"
            )
    if spec.dtype.kind in "iu" and (pre.scale != 1 or pre.mean or pre.std):
        raise CalibrationDataError(
            f"input '{spec.name}' takes {spec.dtype} pixels: pass scale=1 and no mean/std"
        )
    if spec.dtype.kind not in "iuf":
        raise CalibrationDataError(f"input '{spec.name}' has dtype {spec.dtype}; images need a float or int input")
    final = pre.crop or pre.size
    model_hw = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    if final is None and model_hw is None and not (pre.keep_aspect_pad and isinstance(h, int)):
        raise CalibrationDataError(
            f"input '{spec.name}' {spec.shape_text()} has a dynamic height or width; pass size=HxW"
        )
    fixed_hw = final or model_hw
    if fixed_hw is not None:
        height, width = fixed_hw
        resize_to = None if pre.keep_aspect_pad else (pre.size or fixed_hw)
    else:  # keep_aspect_pad on a model with a fixed height and any width (checked above)
        assert isinstance(h, int)
        height, width, resize_to = h, None, None
    return _Geometry(layout, batched, channels, grayscale, height, width, resize_to)


def _pil() -> ModuleType:
    try:
        from PIL import Image
    except ImportError as e:
        raise CalibrationDataError("reading images needs Pillow: pip install 'onnxq[images]'") from e
    return Image


def _decode(path: Path, grayscale: bool) -> Any:
    """The image upright (EXIF orientation applied, as viewers show it) in L or RGB mode."""
    image_module = _pil()
    from PIL import ImageOps

    try:
        with image_module.open(path) as image:
            return ImageOps.exif_transpose(image).convert("L" if grayscale else "RGB")
    except (OSError, ValueError, image_module.DecompressionBombError) as e:
        raise CalibrationDataError(f"{path}: cannot read as an image ({e})") from e


def _resized(image: Any, pre: ImagePreprocess, geo: _Geometry) -> Any:
    """Resize (and crop) the decoded image to the target size; PIL sizes are (W, H)."""
    bilinear = _pil().Resampling.BILINEAR
    w, h = image.size
    if geo.resize_to is None:  # keep_aspect_pad: fit the height, cap the width, pad later
        new_w = max(1, round(w * geo.height / h))
        return image.resize((min(new_w, geo.width or new_w), geo.height), bilinear)
    target_h, target_w = geo.resize_to
    if pre.resize == "shorter-side":
        factor = max(target_h / h, target_w / w)
        image = image.resize((max(target_w, round(w * factor)), max(target_h, round(h * factor))), bilinear)
        image = _center_crop(image, (target_h, target_w))
    else:
        image = image.resize((target_w, target_h), bilinear)
    return image if pre.crop is None else _center_crop(image, pre.crop)


def _center_crop(image: Any, size: tuple[int, int]) -> Any:
    w, h = image.size
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return image.crop((left, top, left + size[1], top + size[0]))


def _image_to_tensor(image: Any, pre: ImagePreprocess, geo: _Geometry, dtype: np.dtype) -> np.ndarray:
    """Resized PIL image -> normalized, padded, laid-out tensor of the model's dtype."""
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if pixels.shape[2] != geo.channels:  # grayscale decode for a 3-channel model
        pixels = np.repeat(pixels, geo.channels, axis=2)
    if pre.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    pixels = pixels * np.float32(pre.scale)
    if pre.mean:
        pixels = pixels - np.asarray(pre.mean, dtype=np.float32)
    if pre.std:
        pixels = pixels / np.asarray(pre.std, dtype=np.float32)
    if geo.width is not None and pixels.shape[1] < geo.width:
        padded = np.full((pixels.shape[0], geo.width, pixels.shape[2]), pre.pad_value, dtype=np.float32)
        padded[:, : pixels.shape[1]] = pixels
        pixels = padded
    if geo.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        pixels = np.clip(np.rint(pixels), info.min, info.max)
    tensor = np.ascontiguousarray(pixels.astype(dtype))
    return tensor[None] if geo.batched else tensor


class ImageFolderSource(RecordSource):
    """A folder of ``.png/.jpg/.jpeg/.bmp`` images (or one image file) for a single-input image model."""

    def __init__(
        self,
        folder: PathArg,
        specs: Sequence[InputSpec],
        preprocess: ImagePreprocess | str | None = None,
        *,
        labels_file: PathArg | None = None,
    ) -> None:
        super().__init__(specs, labels_file)
        self.spec = require_single_input(tuple(specs), "image data")
        if isinstance(preprocess, str):
            preprocess = ImagePreprocess.parse(preprocess)
        self.preprocess = preprocess or ImagePreprocess()
        _pil()  # fail now, not at the first sample, when Pillow is missing
        self.geometry = _resolve_geometry(self.spec, self.preprocess)
        self.path = Path(folder)
        self.files = data_files(self.path, IMAGE_SUFFIXES, "image")
        _LOG.debug("image geometry for '%s': %s", self.spec.name, self.geometry)

    @property
    def num_samples(self) -> int:
        """One sample per image."""
        return len(self.files)

    def records(self) -> Iterator[Record]:
        """Decode and preprocess one image at a time."""
        for path in self.files:
            image = _resized(_decode(path, self.geometry.grayscale), self.preprocess, self.geometry)
            tensor = _image_to_tensor(image, self.preprocess, self.geometry, self.spec.dtype)
            yield Record(str(path), {self.spec.name: tensor})

    def describe(self) -> str:
        """E.g. ``24 images in imgs/ -> 224x224 NCHW RGB (mean=..., std=...)``."""
        geo = self.geometry
        return (
            f"{len(self.files)} images in {self.path} -> {geo.height}x{geo.width or '?'} {geo.layout} "
            f"{'gray' if geo.grayscale else self.preprocess.channel_order} ({self.preprocess.describe()})"
        )
