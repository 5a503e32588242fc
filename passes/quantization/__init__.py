"""Quantization passes: calibration, annotation, QDQ insertion, QLinear conversion, dynamic and
weight-only (block-wise int4/int8) quantization, and float16/bfloat16 conversion.

Each module registers its passes when imported below.
"""

from __future__ import annotations

from . import (  # noqa: F401  (imported to register the passes)
    annotate,
    calibrate,
    choose_activation_forms,
    choose_weight_range,
    close_float_islands,
    convert_float16,
    convert_qlinear,
    drop_qdq_before_float_ops,
    expand_hardswish,
    insert_qdq,
    measure_fixed_point,
    mixed_precision,
    quantize_dynamic,
    quantize_weights_blockwise,
    smooth_activations,
    tune_latency,
)
