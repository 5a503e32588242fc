"""Opening data from what the user gave: a path, ``synthetic[:N]``, a reader object or a source.

:func:`open_source` is the one entry point the CLI and the Python API use. It dispatches on the
argument's kind through a registry of file kinds (suffix -> factory), so adding a kind of data is
one entry, and it is the only module that knows every source (the sources know only their base).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import onnx

from onnxq.errors import CalibrationDataError, ConfigError

from ._base import DataSource, LimitedSource
from ._files import _existing, _natural_key
from ._sources import MAX_SYNTHETIC_SAMPLES, NpyFolderSource, NpzFileSource, NpzFolderSource, ReaderSource, SyntheticSource
from ._validation import IMAGE_SUFFIXES, InputSpec, PathArg, input_specs
from .images import ImageFolderSource

_LOG = logging.getLogger(__name__)

__all__ = ["open_source", "parse_dims"]


def parse_dims(items: Iterable[str]) -> dict[str, int]:
    """Parse ``--dim`` options (``seq=128``, ``x:2=224``) into the ``dims`` of :class:`SyntheticSource`.

    Raises:
        ConfigError: an item is not ``NAME=N`` with N >= 1.
    """
    dims = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"--dim '{item}': expected NAME=N with N >= 1 (e.g. seq=128)")
        dims[name.strip()] = int(value)
    return dims


@dataclass(frozen=True)
class _OpenOptions:
    dims: Mapping[str, int]
    seed: int
    image_preprocess: Any
    labels_file: PathArg | None


def _images(path: Path, specs: Sequence[InputSpec], options: _OpenOptions) -> DataSource:
    return ImageFolderSource(path, specs, options.image_preprocess, labels_file=options.labels_file)


_Factory = Callable[[Path, Sequence[InputSpec], _OpenOptions], DataSource]

_SUFFIX_KINDS: dict[str, str] = {".npz": "npz", ".npy": "npy", **{suffix: "image" for suffix in IMAGE_SUFFIXES}}
_FOLDER_FACTORIES: dict[str, _Factory] = {
    "npz": lambda path, specs, o: NpzFolderSource(path, specs, labels_file=o.labels_file),
    "npy": lambda path, specs, o: NpyFolderSource(path, specs, labels_file=o.labels_file),
    "image": _images,
}
_FILE_FACTORIES: dict[str, _Factory] = {
    "npz": lambda path, specs, o: NpzFileSource(path, specs, labels_file=o.labels_file),
    "npy": lambda path, specs, o: NpyFolderSource(path, specs, labels_file=o.labels_file),
    "image": _images,
}
_ACCEPTED = ".npz, .npy or image (" + " ".join(sorted(IMAGE_SUFFIXES)) + ") files"
_SYNTHETIC = re.compile(r"synthetic(?::(.*))?")


def open_source(
    spec: Any,
    model_or_specs: onnx.ModelProto | Sequence[InputSpec],
    *,
    dims: Mapping[str, int] | None = None,
    samples: int | None = None,
    seed: int = 0,
    image_preprocess: Any = None,
    labels_file: PathArg | None = None,
) -> DataSource:
    """Open calibration/evaluation data from what the user gave.

    Args:
        spec: ``"synthetic"`` / ``"synthetic:N"``; an object with ``get_next()``; a folder of .npz, .npy
            or image files (one kind per folder); an .npz, .npy or image file; or a DataSource.
        model_or_specs: the model, or its :func:`input_specs`.
        dims: symbolic dims for synthetic data.
        samples: yield at most this many samples (also the synthetic count when none is given).
        seed: seed of synthetic data.
        image_preprocess: an ``ImagePreprocess`` or its compact string, for image folders.
        labels_file: labels for evaluation, one per sample.

    Raises:
        CalibrationDataError: the data is missing, empty, of an unknown or mixed kind.
        ConfigError: ``samples`` < 1, a malformed or absurd ``synthetic:N``, or ``image_preprocess``
            for data that is not images.
    """
    specs = input_specs(model_or_specs) if isinstance(model_or_specs, onnx.ModelProto) else list(model_or_specs)
    options = _OpenOptions(dict(dims or {}), seed, image_preprocess, labels_file)
    source = _dispatch(spec, specs, options, samples)
    if image_preprocess is not None and not isinstance(source, ImageFolderSource) and not isinstance(spec, DataSource):
        raise ConfigError(f"--image-preprocess applies to image data, not to {source.describe()}")
    if samples is not None:
        source = LimitedSource(source, samples)
    _LOG.info("data: %s", source.describe())
    return source


def _dispatch(spec: Any, specs: Sequence[InputSpec], options: _OpenOptions, samples: int | None) -> DataSource:
    if isinstance(spec, DataSource):
        return spec
    if callable(getattr(spec, "get_next", None)):
        return ReaderSource(spec, specs, labels_file=options.labels_file)
    if isinstance(spec, str) and (match := _SYNTHETIC.fullmatch(spec.strip())):
        count = _synthetic_count(match.group(1), samples)
        return SyntheticSource(specs, count, options.dims, options.seed, labels_file=options.labels_file)
    if not isinstance(spec, (str, PathLike)):
        raise CalibrationDataError(
            f"cannot use a {type(spec).__name__} as data: expected a path, 'synthetic[:N]' or an object with get_next()"
        )
    path = _existing(spec)
    if path.is_dir():
        return _FOLDER_FACTORIES[_folder_kind(path)](path, specs, options)
    kind = _SUFFIX_KINDS.get(path.suffix.lower())
    if kind is None:
        raise CalibrationDataError(
            f"calibration data '{path}' is not a supported kind: expected a folder or {_ACCEPTED}, or 'synthetic[:N]'"
        )
    return _FILE_FACTORIES[kind](path, specs, options)


def _synthetic_count(text: str | None, samples: int | None) -> int:
    if text is None:
        count = samples or 8
    elif not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"'synthetic:{text}': expected synthetic:N with N >= 1")
    else:
        count = int(text)
    if count > MAX_SYNTHETIC_SAMPLES:
        raise ConfigError(f"'synthetic:{count}': at most {MAX_SYNTHETIC_SAMPLES:,} synthetic samples (random data gains nothing from more)")
    return count


def _folder_kind(folder: Path) -> str:
    """The one kind of data file in a folder; other files (a labels.txt, a README) are ignored."""
    found: dict[str, str] = {}
    for path in sorted(folder.iterdir(), key=_natural_key):
        kind = _SUFFIX_KINDS.get(path.suffix.lower())
        if kind and path.is_file() and not path.name.startswith("."):
            found.setdefault(kind, path.name)
    if not found:
        raise CalibrationDataError(f"folder '{folder}' contains no calibration data: expected {_ACCEPTED}")
    if len(found) > 1:
        examples = ", ".join(f"{kind} ({name})" for kind, name in found.items())
        raise CalibrationDataError(f"folder '{folder}' mixes kinds of data files: {examples}; keep one kind per folder")
    return next(iter(found))
