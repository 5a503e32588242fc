"""Calibration and evaluation data: files, images, synthetic tensors and reader objects as validated samples.

A *sample* is ``dict[str, np.ndarray]`` keyed by model input name, ready for
``onnxruntime.InferenceSession.run``. :func:`open_source` turns what the user gave (a folder or file
of .npz/.npy/images, ``synthetic[:N]``, an object with ``get_next()``) into a :class:`DataSource`
that checks every sample against the model's :func:`input_specs` before yielding it.

Modules, one concern each (the sources depend only on the base; only the opener knows them all):

* ``_validation``: model input signatures (:class:`InputSpec`) and per-sample checks.
* ``_files``: reading .npy/.npz without pickle, label files, folder listings.
* ``_base``: the :class:`DataSource` contract, :class:`RecordSource` (validation + labels for every
  concrete source) and :class:`LimitedSource`.
* ``_sources``: .npz folder/file, .npy, synthetic and reader sources.
* ``images``: image folders and their preprocessing (:class:`ImagePreprocess`).
* ``_open``: :func:`open_source` (dispatch by kind) and :func:`parse_dims`.
"""

from __future__ import annotations

from ._base import DataSource, LimitedSource, Record, RecordSource
from ._files import load_labels
from ._open import open_source, parse_dims
from ._sources import NpyFolderSource, NpzFileSource, NpzFolderSource, ReaderSource, SyntheticSource
from ._validation import InputSpec, input_specs, validate_sample
from .images import ImageFolderSource, ImagePreprocess

__all__ = [
    "open_source",
    "parse_dims",
    "DataSource",
    "LimitedSource",
    "Record",
    "RecordSource",
    "NpzFolderSource",
    "NpzFileSource",
    "NpyFolderSource",
    "SyntheticSource",
    "ReaderSource",
    "ImageFolderSource",
    "ImagePreprocess",
    "InputSpec",
    "input_specs",
    "validate_sample",
    "load_labels",
]
