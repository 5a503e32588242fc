"""Which ONNX ops each target runs at all, and which it runs in int8: tables taken from each target's
documentation (the source is named above every table; the date of the snapshot matters, since every
runtime adds ops with each release).

"int8 op" means: with Q/DQ on its inputs (and output), the target runs the op on 8-bit data (a fused
int8 kernel, or a layout op that moves int8 bytes). Any other op between a DequantizeLinear and a
QuantizeLinear runs in float between two conversions.
"""

from __future__ import annotations

__all__ = [
    "ORT_INT8_OPS",
    "OPENVINO_INT8_OPS",
    "OPENVINO_FLOAT_ACTIVATIONS",
    "TENSORRT_INT8_OPS",
    "TENSORRT_UNSUPPORTED_OPS",
    "QNN_SUPPORTED_OPS",
    "QNN_INT8_OPS",
    "LAYOUT_OPS",
    "WEIGHTED_OPS",
]

#: Ops whose inputs are weights with a per-output-channel axis (what "weighted" means in TensorRT's
#: and OpenVINO's placement rules).
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})

#: Data-movement ops: they move int8 bytes unchanged when their input is quantized (onnxruntime drops
#: the Q/DQ around them, TensorRT and OpenVINO commute the dequantization through them).
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Pad", "Gather", "MaxPool", "Concat", "Resize"})

#: onnxruntime CPU: the op types of its QDQ node-unit selectors (onnxruntime
#: ``core/optimizer/qdq_transformer/selectors_actions/qdq_selector_action_transformer.cc``: drop-QDQ
#: for layout ops, unary QLinearAveragePool/LeakyRelu/Sigmoid/Softmax/GlobalAveragePool, binary
#: QLinearAdd/Mul, variadic QLinearConcat, QLinearConv, QLinearMatMul/MatMulIntegerToFloat, QGemm,
#: QLinearWhere, Resize) plus Relu/Clip, which it folds into the producer's requantization. It has
#: no int8 HardSigmoid, HardSwish or ReduceMean (onnxq's tuner keeps those float when slower).
ORT_INT8_OPS = frozenset(
    {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid", "Softmax", "Where", "ArgMax",
     "Relu", "Clip"}
) | LAYOUT_OPS

#: OpenVINO: ops its low precision transformations (LPT) handle, so that a dequantization moves past
#: them and they run on int8 (docs.openvino.ai, "OpenVINO Low Precision Transformations", step 3
#: "main transformations": Add, AvgPool, Clamp, Concat, Convolution, ConvolutionBackpropData,
#: GroupConvolution, Interpolate, MatMul, MaxPool, Multiply, MVN, NormalizeL2, PRelu, ReduceMean/Max/
#: Min/Sum, Relu, Reshape, Split, StridedSlice, Squeeze, Transpose, Unsqueeze, Gather, Pad), spelled as
#: the ONNX ops its frontend maps to them. Sigmoid, HardSigmoid, HardSwish and Softmax are not among
#: them: Q/DQ around them only adds conversions.
OPENVINO_INT8_OPS = frozenset(
    {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool", "ReduceMean", "Clip", "Relu", "LeakyRelu", "PRelu"}
) | LAYOUT_OPS

#: OpenVINO: activations its CPU plugin runs in float, fused into the convolution before them (a Q/DQ
#: pair between the two costs a Convert and an fp32 Subtract; see ``drop-qdq-before-float-ops``).
OPENVINO_FLOAT_ACTIVATIONS = ("HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Swish", "Mish", "Gelu", "Elu", "Softplus")

#: TensorRT: ops whose "Supported Types" include INT8 in onnx-tensorrt's ``docs/operators.md``
#: (TensorRT 8.5, opset <= 17), plus MatMul and Add, which the TensorRT developer guide's explicit
#: quantization section fuses (weighted MatMul with Q/DQ inputs; the residual Add into the
#: preceding convolution). Mul, Resize, Softmax, Split and Where list no INT8 type.
TENSORRT_INT8_OPS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "AveragePool", "GlobalAveragePool", "MaxPool", "Concat", "Clip", "Relu", "LeakyRelu", "Sigmoid",
     "HardSigmoid", "HardSwish", "Tanh", "Elu", "PRelu", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Pad", "Gather"}
)

#: TensorRT: the rows marked "N" in onnx-tensorrt's ``docs/operators.md`` (TensorRT 8.5).
TENSORRT_UNSUPPORTED_OPS = frozenset(
    {
        "Bernoulli", "BitShift", "BlackmanWindow", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
        "HammingWindow", "HannWindow", "Hardmax", "IsInf", "LayerNormalization", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix",
        "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul", "STFT",
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
        "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
    }
)

#: QNN (Qualcomm AI Engine Direct) through onnxruntime's QNN execution provider: its "Supported ONNX
#: operators" table (onnxruntime docs, execution-providers/QNN-ExecutionProvider.md). The same page:
#: the HTP backend runs only quantized models, and Loop/If are not supported.
QNN_SUPPORTED_OPS = frozenset(
    {
        "Abs", "Add", "And", "ArgMax", "ArgMin", "Asin", "Atan", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Conv",
        "ConvTranspose", "Cos", "DepthToSpace", "DequantizeLinear", "Div", "Elu", "Equal", "Exp", "Expand", "Flatten", "Floor", "Gather", "Gelu",
        "Gemm", "GlobalAveragePool", "Greater", "GreaterOrEqual", "GridSample", "HardSwish", "InstanceNormalization", "LRN", "LayerNormalization",
        "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "LpNormalization", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "Or",
        "PRelu", "Pad", "Pow", "QuantizeLinear", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "Relu", "Reshape", "Resize",
        "Round", "Sigmoid", "Sign", "Sin", "Slice", "Softmax", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "TopK",
        "Transpose", "Unsqueeze", "Where",
    }
)

#: QNN's HTP runs every supported op quantized (uint8/uint16): an op it supports is an int8 op.
QNN_INT8_OPS = QNN_SUPPORTED_OPS - {"QuantizeLinear", "DequantizeLinear", "Cast"}
