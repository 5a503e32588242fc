"""Error compensation: passes that edit float weights and biases so the quantized model errs less.

They quantize nothing themselves. Where each sits in a static pipeline (the built-in ``accurate``
recipe runs them all)::

    upgrade-opset → record-batchnorm-stats → cleanup → equalize-cross-layer → expand-hardswish
      → calibrate → annotate-quantization → tune-latency → adaround → correct-bias → insert-qdq

- ``record-batchnorm-stats`` (before ``cleanup`` folds BatchNormalization): each layer's output
  mean/std per channel, for the data-free variants.
- ``equalize-cross-layer``: float → float, exact; rebalances channel ranges between consecutive
  layers (and absorbs high biases) so per-tensor weight grids fit every channel.
- ``adaround``: after the plan is final, learns each quantized weight's rounding on calibration
  data and writes the chosen grid points as the float weight (``insert-qdq`` stores exactly them).
- ``correct-bias``: after the weights are final, subtracts each quantized layer's mean output
  error ``E[(W_q - W) x]`` from its bias.

They are a family of their own (not ``quantization``) because they compensate for whatever grid
the plan chose and share their own helpers: the layer view (:mod:`._layers`), the planned weight
grid (:mod:`._grid`) and streaming of the float model's tensors (:mod:`._stream`).
"""

from __future__ import annotations

from . import adaround, correct_bias, equalize_cross_layer, record_batchnorm  # noqa: F401  (imported to register the passes)

__all__: list[str] = []
