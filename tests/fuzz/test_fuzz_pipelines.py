"""Property-based fuzzing: every pipeline on random valid models (``tests/fuzz/_graphs.py``).

Each test draws a model with :func:`model_specs` and the pipeline's options, and checks the
property of :func:`tests.fuzz._checks.check_pipeline`: a checked, running model within the stated
bound of fp32 on the same feeds, or a typed one-line :class:`onnxq.OnnxqError`.

Bounds (per graph output, over the example's 4 feeds; :func:`~tests.fuzz._checks.rel_error` is
``‖ŷ − y‖ / ‖y‖``, absolute below an RMS of 1e-3). The lossy pipelines run on models drawn with
:data:`QUANT_OPS` (mostly layers with int8 kernels, none narrower than 4):

- cleanup: exact up to float reassociation: ``allclose(rtol=1e-4, atol=1e-5·max(1, max|y|))``.
- fp16 / bf16 (storage-only weights on x86, or half compute where a kernel exists): a weight
  rounded to 11 (fp16) / 8 (bf16) significant bits is off by ≤ 2⁻¹¹ / 2⁻⁹ relative; through
  ≤ 25 nodes with O(1) gains the outputs stay within ``1e-2`` (fp16) / ``5e-2`` (bf16); with half
  compute (``storage_only=False``) activations are rounded too: ``3e-2`` / ``1e-1``. When half
  tensors must hold an fp32 activation beyond 32752 (fp16 compute or fp16 inputs/outputs, models
  fed 100x inputs) only validity is checked: 65504 is fp16's largest value.
- static int8 QDQ / QOperator (calibrated on the feeds it is evaluated on; percentile, minmax and
  mse observers on 4 samples, entropy on 16, moving-average on 1, where it is minmax; per-tensor
  or per-channel; 8- or 16-bit activations; also from ranges collected by ``onnxq calibrate``'s
  steps): ``0.4`` (a cosine of
  about 0.92). Over 15,000 examples the largest error was 0.34: 100x inputs through a Concat of
  Sigmoid (0..1) and Relu (0..300) parts, quantized per tensor into one uint8 scale before a
  ConvTranspose — QDQ and QOperator agree to the last digit, so it is the grid, not a defect.
- dynamic int8 (activations quantized per run with their own range): ``0.25``.
- a feed on which an ``If(ReduceSum(x) > 0)`` takes the other branch is left out of the comparison
  (and counted) only where ``|Σx| < max_rel · √n · ‖x‖₂``: an error the bound allows moves the
  sum that far (Cauchy–Schwarz), and the branches compute unrelated values
  (:func:`~tests.fuzz._checks.flipped_branches`).
- with 100x / 0.01x inputs both int8 bounds become ``1.0``, gross errors only (see
  :func:`int8_bound`: a tensor in two regimes across samples defeats any one int8 grid).
- weight-only int4 / int8: relative to the textbook quantizer on the same weights
  (:func:`~tests.fuzz._checks.rtn_weights`: round-to-nearest, blocks along K): at most ``2x``
  (int4) / ``3x`` (int8: onnxruntime's accuracy level 4 also rounds the activations to int8) its
  error, or ``0.05`` / ``0.02``. A fixed bound cannot hold: a tanh of 100x-scaled inputs turns a
  few percent of weight error into 50% of output error for any int4 quantizer.
- prune-magnitude: exact. The pruned model computes what the fp32 graph computes with the pruned
  weights (``allclose`` as cleanup), and each pruned weight differs from its original only in its
  floor(sparsity·n) smallest |w| set to 0 (no statistical bound needed; none holds on 2x2 layers).
- prune-nm: exact in the same way; in every run of m weights along the layer's reduction axis the
  m − n smallest |w| are 0 and nothing else changed.
- prune-channels: validity only (checked, running, same output names, shapes and dtypes): removing
  a layer's lowest-norm channels drops their contribution, which no bound limits (one of 2).

Deterministic: ``derandomize=True`` and no example database, so CI runs the same examples every
time; ``max_examples`` per test add up to ≥ 1,000 examples (the summary line ``fuzz: N examples``
says how many ran). ``ONNXQ_FUZZ_SCALE=10`` multiplies every test's examples for a longer hunt.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnxq
from onnxq import ir
from tests.fuzz._checks import STATS, Bound, check_pipeline, graphs_of, rtn_weights, weights_of
from tests.fuzz._graphs import QUANT_OPS, FuzzModel, ModelSpec, activation_absmax, model_specs, reference_outputs

pytestmark = pytest.mark.fuzz

#: ``ONNXQ_FUZZ_SCALE=10`` runs ten times as many examples (a longer local hunt; CI uses 1).
SCALE = float(os.environ.get("ONNXQ_FUZZ_SCALE", "1"))


def _settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


Options = dict[str, Any]

# -- pipelines: (fuzz model, feeds, options) -> ModelProto -----------------------------------------


def cleanup(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    return ir.to_proto(onnxq.PassManager([onnxq.make_pass("cleanup")], check=True).run(onnxq.load(fm.proto)).model)


def static(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    return ir.to_proto(onnxq.quantize_static(fm.proto, feeds, tune=False, **opts).model)


def static_from_ranges(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    """``onnxq calibrate`` then ``onnxq convert --ranges``: the prepared model's range names must be
    the ones the conversion quantizes."""
    from onnxq.api import prepare_for_calibration
    from onnxq.calibration.collector import collect_ranges

    prepared, _ = prepare_for_calibration(fm.proto)
    ranges, _ = collect_ranges(prepared, feeds, method="percentile", options={"percentile": 99.999})
    try:
        return ir.to_proto(onnxq.quantize_static(fm.proto, ranges=ranges, tune=False, **opts).model)
    except onnxq.OnnxqError as e:
        onnxq.quantize_static(fm.proto, feeds, tune=False, smooth=0.0, **opts)  # a refusal must be the data's too
        raise AssertionError(f"ranges from calibrate's steps refused where the same data converts: {e}") from e


_TUNING = {"tune-latency": {"budget_s": 1.0, "max_accuracy_trials": 2}}


def static_tuned(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    """Tuned static conversion; then ``replay`` of its report must give the same bytes."""
    result = onnxq.quantize_static(fm.proto, feeds, pass_options=_TUNING, **opts)
    proto = ir.to_proto(result.model)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        report.write_text(json.dumps(result.report.to_dict()))
        again = ir.to_proto(onnxq.quantize_static(fm.proto, feeds, pass_options=_TUNING, replay=str(report), **opts).model)
    assert again.SerializeToString() == proto.SerializeToString(), f"replaying the tuning report changed the model\n{fm.spec!r}"
    return proto


def dynamic(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    small = {"quantize-dynamic": {"min_weight_elements": 0, "guard_latency": False}}
    return ir.to_proto(onnxq.quantize_dynamic(fm.proto, feeds, pass_options=small, **opts).model)


def weight_only(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    small = {"quantize-weights-blockwise": {"min_k": 1, "min_n": 1}}
    return ir.to_proto(onnxq.convert(fm.proto, mode="weight-only", pass_options=small, **opts).model)


def half(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    opts = dict(opts)
    storage = {"convert-float16": {"storage_only": opts.pop("storage_only")}}
    return ir.to_proto(onnxq.convert(fm.proto, pass_options=storage, **opts).model)


def prune(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    manager = onnxq.PassManager([onnxq.make_pass("prune-magnitude", opts)], check=True)
    return ir.to_proto(manager.run(onnxq.load(fm.proto)).model)


def prune_nm(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    manager = onnxq.PassManager([onnxq.make_pass("prune-nm", opts)], check=True)
    return ir.to_proto(manager.run(onnxq.load(fm.proto)).model)


def prune_channels(fm: FuzzModel, feeds: list, opts: Options) -> onnx.ModelProto:
    manager = onnxq.PassManager([onnxq.make_pass("prune-channels", opts)], check=True)
    return ir.to_proto(manager.run(onnxq.load(fm.proto)).model)


# -- options -----------------------------------------------------------------------------------------

#: Observers that measure a range from 4 samples. ``entropy`` needs a histogram of more samples
#: (``test_static_entropy`` gives it 16: with 4 its KL search clips a Relu's range 2.7 to 0.31);
#: ``moving-average`` averages per-sample ranges by design (onnxruntime's too), so over several
#: samples it clips by design and has no error bound: ``test_static_moving_average`` gives it one.
_OBSERVERS = st.sampled_from(["percentile", "minmax", "mse"])
STATIC_OPTIONS = st.fixed_dictionaries(
    {
        "method": _OBSERVERS,
        "per_channel": st.booleans(),
        "activation_dtype": st.sampled_from(["uint8", "int8", "uint16", "int16"]),
        "activation_symmetric": st.booleans(),
        "weight_dtype": st.sampled_from(["int8", "uint8"]),
        "quantize_activation_matmul": st.booleans(),
    }
)
QOPERATOR_OPTIONS = st.fixed_dictionaries(
    {
        "format": st.just("qoperator"),
        "method": _OBSERVERS,
        "per_channel": st.booleans(),
        "activation_dtype": st.sampled_from(["uint8", "int8"]),
        "activation_symmetric": st.booleans(),
        "quantize_activation_matmul": st.booleans(),
    }
)
#: ``reduce_range=False`` is not drawn: on CPUs without VNNI (this one) onnxruntime's u8·s8 kernel
#: saturates int16 pair sums (2·255·127 > 32767), which is why the default (None) measures it.
DYNAMIC_OPTIONS = st.fixed_dictionaries(
    {
        "per_channel": st.booleans(),
        "dynamic_format": st.sampled_from(["fused", "standard"]),
        "reduce_range": st.sampled_from([None, True]),
        "include_gather": st.booleans(),
    }
)


def weight_only_options(bits: int) -> st.SearchStrategy[Options]:
    return st.fixed_dictionaries(
        {
            "weight_bits": st.just(bits),
            "block_size": st.sampled_from([16, 32]),
            "symmetric": st.booleans(),
            "weight_format": st.sampled_from(["matmulnbits", "qdq"]),
            "scale_search": st.sampled_from(["mse", "none"]),
            "include_gather": st.booleans(),
        }
    )


HALF_OPTIONS = st.one_of(
    st.fixed_dictionaries({"mode": st.just("fp16"), "keep_io_types": st.booleans(), "storage_only": st.sampled_from(["auto", True, False])}),
    st.fixed_dictionaries({"mode": st.just("bf16"), "storage_only": st.sampled_from(["auto", True, False])}),
)
PRUNE_OPTIONS = st.fixed_dictionaries({"sparsity": st.sampled_from([0.3, 0.5]), "skip_first_last": st.booleans()})
PRUNE_NM_OPTIONS = st.sampled_from([(2, 4), (1, 2), (4, 8), (1, 4)]).map(lambda nm: {"n": nm[0], "m": nm[1]})
#: ``round_to=1``: the default rounds kept counts up to 8, which leaves the fuzz models' few channels whole.
PRUNE_CHANNELS_OPTIONS = st.fixed_dictionaries(
    {"ratio": st.sampled_from([0.25, 0.5]), "criterion": st.sampled_from(["l1", "l2"]), "round_to": st.just(1), "min_channels": st.sampled_from([1, 2])}
)


def int8_bound(spec: ModelSpec, max_rel: float) -> Bound:
    """``max_rel`` for inputs of unit scale; 1.0 (gross errors only) for 100x / 0.01x inputs.

    There, normalizing and saturating ops put one tensor into two regimes: an If choosing
    LayerNorm (O(1)) or ``x + x`` (O(200)) before a 100x Mul gives a tensor of ±100 in some samples
    and ±20,000 in others. One int8 grid (step 151) cannot hold both: 0.55 with a correct
    quantizer. A wrong sign, scale or axis still errs by 1 or more.
    """
    return Bound(max_rel=max_rel if spec.scale == 1.0 else 1.0)


def _run(test: str, spec: ModelSpec, pipeline: Any, opts: Options, bound: Bound, **kwargs: Any) -> onnx.ModelProto | None:
    return check_pipeline(test, spec, lambda fm, feeds: pipeline(fm, feeds, opts), bound, options=opts, **kwargs)


# -- properties ----------------------------------------------------------------------------------


@_settings(200)
@given(model_specs())
def test_generated_models_are_valid(spec: ModelSpec) -> None:
    """The generator itself: every model passes the full checker and runs (else ``GeneratorBug``)."""
    fm = spec.build()
    reference_outputs(fm, fm.feeds(seed=spec.seed, count=2))
    STATS["generated-valid"]["ok"] += 1


@_settings(250)
@given(model_specs())
def test_cleanup(spec: ModelSpec) -> None:
    _run("cleanup", spec, cleanup, {}, Bound(allclose=(1e-4, 1e-5)))


@_settings(180)
@given(model_specs(boost=QUANT_OPS), STATIC_OPTIONS)
def test_static_qdq(spec: ModelSpec, opts: Options) -> None:
    _run("static-qdq", spec, static, opts, int8_bound(spec, 0.4), quantizes=True)


@_settings(120)
@given(model_specs(boost=QUANT_OPS), QOPERATOR_OPTIONS)
def test_static_qoperator(spec: ModelSpec, opts: Options) -> None:
    _run("static-qoperator", spec, static, opts, int8_bound(spec, 0.4), quantizes=True)


@_settings(80)
@given(model_specs(boost=QUANT_OPS), st.fixed_dictionaries({"format": st.sampled_from(["qdq", "qoperator"]), "per_channel": st.booleans()}))
def test_static_from_ranges(spec: ModelSpec, opts: Options) -> None:
    _run("static-from-ranges", spec, static_from_ranges, opts, int8_bound(spec, 0.4), quantizes=True)


@_settings(20)
@given(model_specs(boost=QUANT_OPS), st.fixed_dictionaries({"method": st.just("entropy"), "format": st.sampled_from(["qdq", "qoperator"])}))
def test_static_entropy(spec: ModelSpec, opts: Options) -> None:
    _run("static-entropy", spec, static, opts, int8_bound(spec, 0.4), samples=16, quantizes=True)


@_settings(40)
@given(
    model_specs(boost=QUANT_OPS),
    st.fixed_dictionaries({"method": st.just("moving-average"), "format": st.sampled_from(["qdq", "qoperator"]), "per_channel": st.booleans()}),
)
def test_static_moving_average(spec: ModelSpec, opts: Options) -> None:
    """Calibrated on one sample: the first batch initialises the average (``m <- batch``), so the
    range is that sample's min/max, exactly minmax's, and minmax's bound applies."""
    _run("static-moving-average", spec, static, opts, int8_bound(spec, 0.4), samples=1, quantizes=True)


@_settings(10)
@given(model_specs(max_ops=5, boost=QUANT_OPS), st.fixed_dictionaries({"format": st.sampled_from(["qdq", "qoperator"])}))
def test_static_tuned(spec: ModelSpec, opts: Options) -> None:
    _run("static-tuned", spec, static_tuned, opts, int8_bound(spec, 0.4), quantizes=True)


@_settings(150)
@given(model_specs(boost=QUANT_OPS), DYNAMIC_OPTIONS)
def test_dynamic(spec: ModelSpec, opts: Options) -> None:
    _run("dynamic", spec, dynamic, opts, int8_bound(spec, 0.25), quantizes=True)


def _rtn_baseline(opts: Options):
    return lambda fm: rtn_weights(fm.proto, opts["weight_bits"], opts["block_size"], opts["symmetric"], opts["include_gather"])


@_settings(120)
@given(model_specs(boost=QUANT_OPS), weight_only_options(4))
def test_weight_only_int4(spec: ModelSpec, opts: Options) -> None:
    _run("weight-only-int4", spec, weight_only, opts, Bound(max_rel=0.05, baseline_factor=2.0), baseline=_rtn_baseline(opts), quantizes=True)


@_settings(90)
@given(model_specs(boost=QUANT_OPS), weight_only_options(8))
def test_weight_only_int8(spec: ModelSpec, opts: Options) -> None:
    _run("weight-only-int8", spec, weight_only, opts, Bound(max_rel=0.02, baseline_factor=3.0), baseline=_rtn_baseline(opts), quantizes=True)


def half_bound(opts: Options) -> Bound:
    compute = opts["storage_only"] is False
    if opts["mode"] == "bf16":
        return Bound(max_rel=1e-1 if compute else 5e-2)
    return Bound(max_rel=3e-2 if compute else 1e-2)


#: Above this |activation| fp16 has no bound to keep: 65504 is its largest finite value.
FP16_MAX = 65504.0


@_settings(160)
@given(model_specs(), HALF_OPTIONS)
def test_half(spec: ModelSpec, opts: Options) -> None:
    bound = half_bound(opts)
    if opts["mode"] == "fp16" and (opts["storage_only"] is False or not opts["keep_io_types"]):
        fm = spec.build()
        if activation_absmax(fm, fm.feeds(seed=spec.seed, count=4)) > FP16_MAX / 2:
            STATS["fp16/bf16"]["beyond fp16 range (validity only)"] += 1
            bound = Bound(max_rel=np.inf, finite=False)  # half activations / outputs overflow: any fp16 conversion would
    _run("fp16/bf16", spec, half, opts, bound, io_dtypes_may_change=not opts.get("keep_io_types", True))


@_settings(150)
@given(model_specs(boost=QUANT_OPS), PRUNE_OPTIONS)
def test_prune_magnitude(spec: ModelSpec, opts: Options) -> None:
    result = _run("prune-magnitude", spec, prune, opts, Bound(allclose=(1e-4, 1e-5)), reference=with_weights_of)
    if result is not None:
        check_only_smallest_zeroed(spec, result, opts["sparsity"])


@_settings(100)
@given(model_specs(boost=QUANT_OPS), PRUNE_NM_OPTIONS)
def test_prune_nm(spec: ModelSpec, opts: Options) -> None:
    result = _run("prune-nm", spec, prune_nm, opts, Bound(allclose=(1e-4, 1e-5)), reference=with_weights_of)
    if result is not None and check_nm_pattern(spec, result, opts["n"], opts["m"]):
        STATS["prune-nm"]["with weights pruned"] += 1


#: Layers back to back (through activations, norms and residual forks) so that channel groups
#: exist that no graph output or reshape pins: 10 of the 80 examples lose channels (3 with
#: :data:`QUANT_OPS`; the summary counts them). The outputs must stay finite.
CHANNEL_OPS = (("conv", 10), ("matmul", 8), ("gemm", 4), ("relu", 4), ("batch_norm", 2), ("binary_const", 2), ("pool", 2), ("fork", 2))


@_settings(80)
@given(model_specs(boost=CHANNEL_OPS), PRUNE_CHANNELS_OPTIONS)
def test_prune_channels(spec: ModelSpec, opts: Options) -> None:
    """Validity only: the pruned model drops the removed channels' contributions, whose size no
    bound limits (the lowest-norm channel of a 2-channel layer is half of it)."""
    result = _run("prune-channels", spec, prune_channels, opts, Bound(max_rel=np.inf))
    if result is not None:
        before = {name: tuple(t.dims) for name, t in weights_of(spec.build().proto).items()}
        if any(tuple(t.dims) != before.get(name) for name, t in weights_of(result).items()):
            STATS["prune-channels"]["with channels removed"] += 1


_DETERMINISTIC: dict[str, tuple[Any, Options]] = {
    "cleanup": (cleanup, {}),
    "static-qdq": (static, {}),
    "static-qoperator": (static, {"format": "qoperator"}),
    "dynamic": (dynamic, {}),
    "weight-only": (weight_only, {"weight_bits": 4}),
    "fp16": (half, {"mode": "fp16", "storage_only": "auto"}),
    "prune": (prune, {"sparsity": 0.5}),
    "prune-nm": (prune_nm, {"n": 2, "m": 4}),
    "prune-channels": (prune_channels, {"ratio": 0.5, "round_to": 1}),
}


@_settings(60)
@given(model_specs(boost=QUANT_OPS), st.sampled_from(sorted(_DETERMINISTIC)))
def test_conversions_are_deterministic(spec: ModelSpec, name: str) -> None:
    """The same model and data give a byte-identical model (``--replay`` and reviews rely on it)."""
    pipeline, opts = _DETERMINISTIC[name]
    fm = spec.build()
    feeds = fm.feeds(seed=spec.seed, count=4)
    try:
        first = pipeline(fm, feeds, opts).SerializeToString()
    except onnxq.OnnxqError:
        STATS["deterministic"]["refused"] += 1
        return
    assert pipeline(spec.build(), [dict(f) for f in feeds], opts).SerializeToString() == first, f"{name}: two runs differ\n{spec!r}"
    STATS["deterministic"]["ok"] += 1


def with_weights_of(fm: FuzzModel, result: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 model with the pruned model's weight values (pruning changes values only), wherever
    the fp32 model holds them: initializers of any graph, or Constant nodes."""
    pruned = weights_of(result)
    ref = onnx.ModelProto()
    ref.CopyFrom(fm.proto)
    for g in graphs_of(ref.graph):
        for t in g.initializer:
            if t.name in pruned:
                t.CopyFrom(pruned[t.name])
        for node in g.node:
            if node.op_type == "Constant" and node.output[0] in pruned:
                value = next(a for a in node.attribute if a.name == "value")
                value.t.CopyFrom(pruned[node.output[0]])
                value.t.name = node.output[0]
    return ref


def check_only_smallest_zeroed(spec: ModelSpec, result: onnx.ModelProto, sparsity: float) -> None:
    """Magnitude pruning's rule, per weight: exactly floor(sparsity·n) entries (none of them zero
    before: Gaussian weights) became 0, nothing else changed, and none of them is larger in |w|
    than a kept entry."""
    before = {name: onnx.numpy_helper.to_array(t) for name, t in weights_of(spec.build().proto).items()}
    after = {name: onnx.numpy_helper.to_array(t) for name, t in weights_of(result).items()}
    assert set(before) <= set(after), f"initializers disappeared: {sorted(set(before) - set(after))}\n{spec!r}"
    for name, w in before.items():
        v = after[name]
        assert v.shape == w.shape and v.dtype == w.dtype, f"{name}: {v.dtype}{v.shape} != {w.dtype}{w.shape}\n{spec!r}"
        changed = v != w
        if not changed.any():
            continue
        assert np.all(v[changed] == 0), f"{name}: pruning changed nonzero values\n{spec!r}"
        assert int(changed.sum()) == int(sparsity * w.size), f"{name}: {int(changed.sum())} zeroed of {w.size}\n{spec!r}"
        kept = np.abs(w[~changed])
        assert np.abs(w[changed]).max() <= kept.min(), f"{name}: a zeroed weight is larger than a kept one\n{spec!r}"


def _reduction_axis(node: onnx.NodeProto, ndim: int) -> int:
    """The weight axis a layer sums over: N:M groups run along it (Conv's input channels, ...)."""
    if node.op_type == "Conv":
        return 1
    if node.op_type == "ConvTranspose":
        return 0
    if node.op_type == "Gemm":
        return 1 if any(a.name == "transB" and a.i for a in node.attribute) else 0
    return ndim - 2


def check_nm_pattern(spec: ModelSpec, result: onnx.ModelProto, n: int, m: int) -> bool:
    """N:M pruning's rule, per weight: only entries set to 0 changed, and in every run of ``m``
    along the layer's reduction axis exactly the ``m - n`` smallest |w| were (Gaussian weights: no
    zeros or ties before). Returns whether any weight was pruned."""
    pruned = False
    before = {name: onnx.numpy_helper.to_array(t) for name, t in weights_of(spec.build().proto).items()}
    after = {name: onnx.numpy_helper.to_array(t) for name, t in weights_of(result).items()}
    readers = {i: node for g in graphs_of(result.graph) for node in g.node for i in node.input[1:2]}
    for name, w in before.items():
        v = after[name]
        changed = v != w
        if not changed.any():
            continue
        assert np.all(v[changed] == 0), f"{name}: pruning changed nonzero values\n{spec!r}"
        axis = _reduction_axis(readers[name], w.ndim)
        groups = np.moveaxis(np.abs(w), axis, -1).reshape(-1, m)
        zeroed = np.moveaxis(changed, axis, -1).reshape(-1, m)
        assert np.all(zeroed.sum(axis=1) == m - n), f"{name}: not {m - n} of every {m} along axis {axis} zeroed\n{spec!r}"
        largest_zeroed = np.where(zeroed, groups, -np.inf).max(axis=1)
        smallest_kept = np.where(zeroed, np.inf, groups).min(axis=1)
        assert np.all(largest_zeroed <= smallest_kept), f"{name}: a zeroed weight is larger than a kept one in its group\n{spec!r}"
        pruned = True
    return pruned
