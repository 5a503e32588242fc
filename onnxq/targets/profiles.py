"""The six target profiles. Each setting says why, with its source.

| target     | format  | activations | weights (8-bit unless measured to saturate)          | bias  | tuner (latency) | validated by                       |
|------------|---------|-------------|------------------------------------------------------|-------|-----------------|------------------------------------|
| generic    | QDQ     | uint8 asym  | int8 sym per-channel, full range                     | int32 | reference (off) | lint + reference numerics          |
| ort-cpu    | QDQ/QOp | uint8 asym  | int8 sym per-channel, 7-bit if onnxruntime saturates | int32 | onnxruntime     | onnxruntime runs; guard vs fp32    |
| ort-mobile | QDQ/QOp | uint8 asym  | as ort-cpu                                           | int32 | onnxruntime     | .ort loads, matches .onnx; guard   |
| openvino   | QDQ     | uint8 asym  | int8 sym per-channel, 7-bit if OpenVINO saturates    | int32 | OpenVINO        | int8 ran; guard vs OpenVINO fp32   |
| tensorrt   | QDQ     | int8 sym    | int8 sym per-channel, full range                     | float | reference (off) | lint + reference numerics          |
| qnn        | QDQ     | uint8 asym  | uint8 asym per-tensor, full range                    | int32 | reference (off) | lint + reference numerics          |

"reference" is exact QDQ numerics (onnxruntime with fusions off, :mod:`onnxq.runtime.backends`);
"guard" the conversion's accuracy guard against fp32.

Full-range weights where the target's runtime does not run here: onnxq's automatic 7-bit weights
answer a measurement of *this* CPU's onnxruntime kernel (u8·s8 saturates without VNNI); a TensorRT
GPU or a Hexagon NPU accumulates in int32 and would only lose a bit of precision. ``ort-cpu`` and
``ort-mobile`` keep the probe (the ``.ort`` runs here with the same kernels; convert with
``--no-reduce-range`` for an ARM or VNNI device), ``openvino`` asks OpenVINO's own kernels.
"""

from __future__ import annotations

import dataclasses

from ._ops import OPENVINO_FLOAT_ACTIVATIONS, OPENVINO_INT8_OPS, ORT_INT8_OPS, QNN_INT8_OPS, QNN_SUPPORTED_OPS, TENSORRT_INT8_OPS, TENSORRT_UNSUPPORTED_OPS
from ._profile import TargetProfile, TargetRules, register_target

__all__ = ["GENERIC", "ORT_CPU", "ORT_MOBILE", "OPENVINO", "TENSORRT", "QNN"]

_ORT_DOCS = "onnxruntime docs, performance/model-optimizations/quantization.md (QDQ format, data types, reduce_range)"
_ORT_QLINEARCONV = "onnxruntime core/providers/cpu/quantization/qlinearconv.cc (per-channel filter zero points must be equal)"

_ONNX_QDQ_SETTINGS = {
    "format": "qdq",
    "activation_dtype": "uint8",
    "activation_symmetric": False,
    "weight_dtype": "int8",
    "weight_symmetric": True,
    "per_channel": True,
    "int32_bias": True,
}

GENERIC = register_target(
    TargetProfile(
        name="generic",
        summary="portable QDQ (ONNX QuantizeLinear/DequantizeLinear only) for any runtime that reads it",
        settings={**_ONNX_QDQ_SETTINGS, "reduce_range": False},
        allowed={"format": ("qdq",)},
        rules=TargetRules(int8_ops=ORT_INT8_OPS, support="onnx", sources=("ONNX operators: QuantizeLinear/DequantizeLinear (opset 13: per-axis)", _ORT_DOCS)),
        tune_runtime="onnxruntime-reference",
        tune_latency=False,
        notes=("target generic: no single runtime to time; latency tuning off, accuracy guard on exact QDQ numerics (onnxruntime, fusions off)",),
    )
)

_ORT_RULES = TargetRules(
    int8_ops=ORT_INT8_OPS,
    support="onnxruntime",
    per_channel_uniform_zero_point=True,
    sources=(_ORT_DOCS, _ORT_QLINEARCONV, "onnxruntime qdq_selector_action_transformer.cc (QDQ node units it fuses)"),
)

ORT_CPU = register_target(
    TargetProfile(
        name="ort-cpu",
        summary="onnxruntime's CPU execution provider (int8 kernels: QLinearConv, QGemm, MatMulIntegerToFloat, ...)",
        settings={**_ONNX_QDQ_SETTINGS, "reduce_range": None},
        rules=_ORT_RULES,
        runtime="onnxruntime",
        saturation_probe="onnxruntime",
    )
)

#: ort-cpu with the .ort format on top: the same settings, rules and kernels (the .ort runs here on the
#: same onnxruntime), plus onnxruntime's converter and the reduced build's operator config as validation.
ORT_MOBILE = register_target(
    dataclasses.replace(
        ORT_CPU,
        name="ort-mobile",
        summary="onnxruntime mobile: the .ort format from onnxruntime's own converter, plus a reduced build's operator config",
        runtime="onnxruntime-mobile",
        artifacts=(".ort", ".required_operators.config"),
        notes=(
            "target ort-mobile: tuned and validated with onnxruntime on this CPU; the .ort is optimized for ARM (--target_platform arm) "
            "and 7-bit weights follow this CPU's kernel (convert with --no-reduce-range for an ARM device)",
        ),
    )
)

OPENVINO = register_target(
    TargetProfile(
        name="openvino",
        summary="OpenVINO's CPU plugin (QDQ read as FakeQuantize, int8 kernels through its low precision transformations)",
        settings={**_ONNX_QDQ_SETTINGS, "reduce_range": None, "op_types": tuple(sorted(OPENVINO_INT8_OPS))},
        allowed={"format": ("qdq",), "activation_dtype": ("uint8", "int8")},
        rules=TargetRules(
            int8_ops=OPENVINO_INT8_OPS,
            support="openvino",
            activation_dtypes=frozenset({"uint8", "int8"}),
            sources=(
                "docs.openvino.ai: Low Precision Transformations (supported operations, FakeQuantize decomposition)",
                "docs.openvino.ai: Quantized models compute and restrictions",
                "docs.openvino.ai: Saturation (overflow) issue workaround (7-bit weights on CPUs without VNNI)",
            ),
        ),
        runtime="openvino",
        tune_runtime="openvino",
        saturation_probe="openvino",
        expand_hardswish=False,
        # measured (PP-OCRv4 det, PERF_COUNT): a Conv -> Q/DQ -> HardSwish pair costs a Convert and an
        # fp32 Subtract per tensor, 11.6 of 43.6 ms; fp32 fuses the activation into the Conv
        float_activations=OPENVINO_FLOAT_ACTIVATIONS,
    )
)

TENSORRT = register_target(
    TargetProfile(
        name="tensorrt",
        summary="TensorRT explicit quantization (Q/DQ layers): symmetric int8, per-channel weights, float bias",
        settings={
            "format": "qdq",
            "activation_dtype": "int8",
            "activation_symmetric": True,
            "weight_dtype": "int8",
            "weight_symmetric": True,
            "per_channel": True,
            "reduce_range": False,
            "int32_bias": False,
            "op_types": tuple(sorted(TENSORRT_INT8_OPS)),
        },
        allowed={
            "format": ("qdq",),
            "activation_dtype": ("int8",),
            "activation_symmetric": (True,),
            "weight_dtype": ("int8",),
            "weight_symmetric": (True,),
            "int32_bias": (False,),
        },
        rules=TargetRules(
            int8_ops=TENSORRT_INT8_OPS,
            fused_activations=frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu"}),
            support="denylist",
            unsupported_ops=TENSORRT_UNSUPPORTED_OPS,
            activation_dtypes=frozenset({"int8"}),
            weight_dtypes=frozenset({"int8"}),
            activation_zero_point_zero=True,
            weight_zero_point_zero=True,
            max_opset=17,
            max_ir=8,
            int32_bias=False,
            output_q_fused=False,
            sources=(
                "onnx-tensorrt docs/operators.md (TensorRT 8.5: opset <= 17; QuantizeLinear/DequantizeLinear INT8 only, zero point must be 0; "
                "unsupported ops)",
                "TensorRT developer guide, 'Explicit quantization' and 'Q/DQ layer-placement recommendations' (quantize all inputs of weighted ops "
                "and the residual input of Add; no Q/DQ between a weighted op and its ReLU/BN; no Q/DQ on weighted-op outputs by default)",
            ),
        ),
        tune_runtime="onnxruntime-reference",
        tune_latency=False,
        expand_hardswish=False,
        notes=("target tensorrt: no TensorRT runtime on this machine; latency tuning off, accuracy guard on exact QDQ numerics (onnxruntime, fusions off)",),
    )
)

QNN = register_target(
    TargetProfile(
        name="qnn",
        summary="Qualcomm QNN HTP (through onnxruntime's QNN execution provider): uint8/uint16 activations, uint8 weights",
        settings={
            "format": "qdq",
            "activation_dtype": "uint8",
            "activation_symmetric": False,
            "weight_dtype": "uint8",
            "weight_symmetric": False,
            "per_channel": False,
            "reduce_range": False,
            "int32_bias": True,
        },
        allowed={"format": ("qdq",), "activation_dtype": ("uint8", "uint16")},
        rules=TargetRules(
            int8_ops=QNN_INT8_OPS,
            support="allowlist",
            supported_ops=QNN_SUPPORTED_OPS,
            activation_dtypes=frozenset({"uint8", "uint16"}),
            weight_dtypes=frozenset({"uint8", "int8"}),
            per_channel_ops=frozenset({"Conv", "ConvTranspose"}),
            op_weight_dtypes={"MatMul": frozenset({"uint8", "uint16"})},
            sources=(
                "onnxruntime docs, execution-providers/QNN-ExecutionProvider.md (supported operators; HTP runs quantized models only; "
                "MatMul input types (uint8, uint8), (uint8, uint16), (uint16, uint8); no Loop/If)",
                "onnxruntime quantization/execution_providers/qnn/quant_config.py (defaults uint8 activations and weights; per-channel only for "
                "Conv axis 0 and ConvTranspose axis 1; 'QNN does not support per-channel MatMul')",
            ),
        ),
        tune_runtime="onnxruntime-reference",
        tune_latency=False,
        expand_hardswish=False,
        notes=("target qnn: no QNN runtime on this machine; latency tuning off, accuracy guard on exact QDQ numerics (onnxruntime, fusions off)",),
    )
)
