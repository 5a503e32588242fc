"""Dynamic int8, weight-only int8/int4 (block-wise) and fp16/bf16: onnxruntime's tools vs onnxq, in one run.

For every model the same fp32 file, the same calibration feeds and the same held-out feeds go to
every converter. Variants (``--variants`` filters them):

* ``fp32``: the original file.
* ``ort-dyn`` / ``ort-dyn-pc``: ``onnxruntime.quantization.quantize_dynamic`` with QInt8 weights,
  ``per_channel`` False / True, everything else at onnxruntime's defaults (no pre-processing).
* ``ort-int4-b32`` / ``ort-int4-b128``: ``MatMulNBitsQuantizer`` with ``DefaultWeightOnlyQuantConfig``
  (onnxruntime 1.32's round-to-nearest min/max quantizer: 4 bits, asymmetric, QOperator format =
  MatMulNBits; ``RTNWeightOnlyQuantConfig`` needs neural-compressor) at block 32 / 128, with
  ``accuracy_level`` = ``--ort-accuracy-level`` (default 4, the level onnxq writes, so both int4
  kernels compute alike and the comparison is about the weights).
* ``ort-fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``;
  ``occ-fp16``: the same function of ``onnxconverter_common`` when that package is installed.
* ``onnxq-dyn``: ``convert(mode="dynamic")`` without data (no smoothing, no latency guard);
  ``onnxq-dyn+smooth``: with the calibration feeds (smoothing alpha 0.5 + the latency guard).
* ``onnxq-int4-b{32,128}-{rtn,mse}``: ``mode="weight-only", bits=4`` with ``scale_search`` none / mse;
  ``onnxq-int4-b32+gather``: mse, ``include_gather=True`` (models with an embedding Gather only);
  ``onnxq-int8-wo``: ``bits=8`` (default block 32, mse); ``onnxq-fp16`` / ``onnxq-bf16``.

How each number is measured:

* conversion: each variant in its own subprocess (``_bench_util.run_isolated``): wall time and peak
  RSS of that child; a crash, timeout or exception is recorded as ``failed: <reason>``; a file
  onnxruntime cannot load or run is recorded as ``ort cannot load/run: <reason>``.
* latency: all loaded variants of one model get a CPU session (graph optimisations on, 1 thread, no
  spinning) and are timed round-robin on the same input (``onnxq.runtime.bench.bench_sessions``);
  runs are chosen so one round of all variants fits ``--budget`` seconds (clamped to
  ``--min-runs``..``--max-runs``; default 90 s, 30..1000 runs). Speedup = fp32 median / variant median from the same run. Other
  ``--threads`` counts are timed separately and marked noisy (2 shared cores).
* size: bytes of the written .onnx file; ratio to the fp32 file.
* accuracy on held-out feeds (never the calibration feeds): cosine between the variant's and fp32's
  main output per row (row = one sentence embedding for MiniLM, one sample for the transformers,
  one batch item for LSTM/MLP), mean and min over all rows. MiniLM also: nearest-neighbour agreement
  (for each held-out sentence, is its nearest other sentence by embedding cosine the same as fp32's?)
  and pair@1 (is it the sentence's paraphrase partner? ``SENTENCES`` come in pairs).
* MiniLM data: held-out = ``models.minilm.SENTENCES`` (64 sentences, 32 paraphrase pairs) in batches
  of 8 x 64 tokens, the timed input is the first batch; calibration = ``CALIB_SENTENCES`` below
  (written for this benchmark, disjoint from SENTENCES). Builders: seeded synthetic inputs, separate
  seeds for calibration and held-out.

    python benchmarks/bench_dynamic.py [--models transformer,minilm,lstm,matmul,mlp] [--quick]
                                       [--threads 1,2] [--json out.json] [--keep DIR]

Do not run the full benchmark on a shared machine: it times ~17 variants per model with both cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _bench_util import fmt, json_default, latency_median, one_line, print_table, ratio, run_isolated  # noqa: E402

CALIB_SEED = 1001  # calibration and held-out data never share a seed
EVAL_SEED = 2002
MINILM_BATCH = 8
MINILM_SEQ = 64
FP32 = "fp32"
#: "Equal speed" band for latency comparisons: interleaved medians of identical graphs differ by ~1-2%.
SPEED_TOL = 0.03

#: MiniLM calibration sentences (for smoothing): written for this benchmark, none is in SENTENCES.
CALIB_SENTENCES: tuple[str, ...] = (
    "The orchestra rehearsed the symphony late into the evening.",
    "Farmers are harvesting wheat before the storm arrives.",
    "The airline cancelled dozens of flights because of fog.",
    "A new study links sleep quality to memory performance.",
    "The city council approved a budget for new bike lanes.",
    "She planted tomatoes and basil in her small garden.",
    "The printer keeps jamming whenever I use thick paper.",
    "Astronomers detected water vapour on a distant exoplanet.",
    "The hiking trail was muddy after a week of rain.",
    "Our internet connection drops every evening around nine.",
    "The detective found a hidden letter inside the old desk.",
    "Prices at the grocery store rose again this month.",
    "He practised the piano for three hours every day.",
    "The glacier has retreated several kilometres in a century.",
    "Students protested against the increase in tuition fees.",
    "The startup raised fifty million dollars in new funding.",
    "A lighthouse guided the fishing boats back to the harbour.",
    "The vaccine trial enrolled thousands of volunteers.",
    "Traffic was backed up for miles after the accident.",
    "The novel was translated into more than forty languages.",
    "My grandmother knits scarves for the whole family.",
    "The referee showed a red card in the final minute.",
    "Engineers tested the rocket engine in the desert.",
    "The coffee shop on the corner closes at six.",
)


class Skip(Exception):
    """A model cannot be benchmarked here (file or package absent); the message says why."""


# ---- models ------------------------------------------------------------------------------------
@dataclass
class Data:
    calib: list[dict[str, np.ndarray]]
    held_out: list[dict[str, np.ndarray]]
    timed: dict[str, np.ndarray]
    shapes: str


@dataclass
class ModelSpec:
    """``make(workdir, quick)`` writes/returns the fp32 file; ``data(path, quick, n_eval)`` the feeds."""

    name: str
    make: Callable[[Path, bool], Path]
    data: Callable[[Path, bool, int | None], Data]
    description: Callable[[bool], str]
    output: str | None = None  # the output compared (None: the first)
    matmul_dominated: bool = False  # the int4 size goal applies
    has_gather: bool = False  # the +gather variant applies
    minilm: bool = False


def _save_builder(workdir: Path, name: str, kwargs: dict[str, Any]) -> Path:
    import onnx

    from models import build

    path = workdir / "fp32.onnx"
    onnx.save(build(name, **kwargs), str(path))
    return path


def _text_feeds(n: int, seed: int, seq: int, vocab: int) -> list[dict[str, np.ndarray]]:
    """BERT-style feeds: random ids, a padded tail (length seq/2..seq), batch 1."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        length = int(rng.integers(seq // 2, seq + 1))
        feeds.append({"input_ids": rng.integers(1, vocab, (1, seq)).astype(np.int64),
                      "attention_mask": (np.arange(seq) < length).astype(np.int64)[None]})
    return feeds


def _transformer_spec(name: str, full: dict[str, Any], quick: dict[str, Any], seq: tuple[int, int], what: str,
                      **flags: Any) -> ModelSpec:
    def kw(q: bool) -> dict[str, Any]:
        return quick if q else full

    def data(path: Path, q: bool, n_eval: int | None) -> Data:
        s = seq[1] if q else seq[0]
        calib = _text_feeds(4 if q else 16, CALIB_SEED, s, kw(q)["vocab"])
        held = _text_feeds(n_eval or (4 if q else 32), EVAL_SEED, s, kw(q)["vocab"])
        return Data(calib, held, held[0], f"input_ids/attention_mask [1, {s}]")

    def describe(q: bool) -> str:
        k = kw(q)
        return (f"{what}: builder transformer vocab {k['vocab']}, hidden {k['hidden']}, heads {k['heads']}, "
                f"{k['layers']} layers, max_seq {k['max_seq']}; seq {seq[1] if q else seq[0]} (padded tail), batch 1")

    return ModelSpec(name, lambda w, q: _save_builder(w, "transformer", kw(q)), data, describe, has_gather=True, **flags)


def _float_spec(name: str, builder: str, full: tuple[dict[str, Any], tuple[int, ...]], quick: tuple[dict[str, Any], tuple[int, ...]],
                what: str, n_eval: tuple[int, int], **flags: Any) -> ModelSpec:
    def data(path: Path, q: bool, n: int | None) -> Data:
        shape = (quick if q else full)[1]
        calib = [{"input": np.random.default_rng(CALIB_SEED + i).standard_normal(shape).astype(np.float32)} for i in range(4)]
        held = [{"input": np.random.default_rng(EVAL_SEED + i).standard_normal(shape).astype(np.float32)}
                for i in range(n or (n_eval[1] if q else n_eval[0]))]
        return Data(calib, held, held[0], f"input {list(shape)}")

    def describe(q: bool) -> str:
        k, shape = quick if q else full
        return f"{what}: builder {builder} {', '.join(f'{a}={b}' for a, b in k.items())}; input {list(shape)}"

    return ModelSpec(name, lambda w, q: _save_builder(w, builder, (quick if q else full)[0]), data, describe, **flags)


def _minilm_make(workdir: Path, quick: bool) -> Path:
    from models.minilm import available, export_minilm, minilm_path

    path = minilm_path()
    if path.is_file():
        return path
    reason = available()
    if reason:
        raise Skip(f"MiniLM export unavailable: {reason}")
    try:
        return export_minilm()
    except Exception as e:
        raise Skip(f"MiniLM export failed: {one_line(e)}") from e


def _minilm_batches(sentences: Sequence[str]) -> list[dict[str, np.ndarray]]:
    from models.minilm import tokenize

    return [tokenize(sentences[i:i + MINILM_BATCH], MINILM_SEQ) for i in range(0, len(sentences), MINILM_BATCH)]


def _minilm_sentences(quick: bool, n_eval: int | None) -> list[str]:
    from models.minilm import SENTENCES

    n = n_eval or (16 if quick else len(SENTENCES))
    n = max(2, min(n, len(SENTENCES)) // 2 * 2)  # whole paraphrase pairs
    return list(SENTENCES[:n])


def _minilm_data(path: Path, quick: bool, n_eval: int | None) -> Data:
    from models.minilm import SENTENCES

    overlap = set(CALIB_SENTENCES) & set(SENTENCES)
    assert not overlap, f"calibration sentences overlap the held-out ones: {overlap}"
    held = _minilm_batches(_minilm_sentences(quick, n_eval))
    return Data(_minilm_batches(CALIB_SENTENCES), held, held[0], f"{MINILM_BATCH} sentences x {MINILM_SEQ} tokens per batch")


def _minilm_describe(quick: bool) -> str:
    n = len(_minilm_sentences(quick, None))
    return (f"all-MiniLM-L6-v2 export (models/minilm.py), batches of {MINILM_BATCH} x {MINILM_SEQ} tokens; "
            f"{n} held-out sentences (SENTENCES), {len(CALIB_SENTENCES)} calibration sentences (disjoint)")


SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    _transformer_spec("transformer", {"vocab": 30522, "hidden": 384, "heads": 12, "layers": 6, "max_seq": 512},
                      {"vocab": 30522, "hidden": 128, "heads": 4, "layers": 2, "max_seq": 128}, (128, 64), "MiniLM-sized"),
    ModelSpec("minilm", _minilm_make, _minilm_data, _minilm_describe, output="sentence_embedding", has_gather=True, minilm=True),
    _float_spec("lstm", "lstm", ({"input_size": 128, "hidden": 512}, (50, 4, 128)), ({"input_size": 64, "hidden": 128}, (20, 4, 64)),
                "LSTM classifier", (16, 4)),
    _transformer_spec("matmul", {"vocab": 1000, "hidden": 384, "heads": 12, "layers": 6, "max_seq": 128},
                      {"vocab": 1000, "hidden": 256, "heads": 4, "layers": 2, "max_seq": 64}, (128, 64),
                      "MatMul-dominated (small vocab)", matmul_dominated=True),
    _float_spec("mlp", "mlp", ({"in_features": 784, "hidden": (1024, 1024, 1024)}, (256, 784)),
                ({"in_features": 784, "hidden": (512, 512)}, (32, 784)), "MLP", (4, 4), matmul_dominated=True),
)}


# ---- variants ----------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    tool: str  # fp32 | ort | occ | onnxq
    family: str  # fp32 | int8-dyn | int8-wo | int4 | fp16 | bf16
    kind: str  # conversion function
    options: dict[str, Any] = field(default_factory=dict)
    data: bool = False  # gets the calibration feeds
    gather_only: bool = False  # only for models with an embedding Gather


VARIANTS: list[Variant] = [
    Variant(FP32, "fp32", "fp32", "none"),
    Variant("ort-dyn", "ort", "int8-dyn", "ort-dynamic", {"per_channel": False}),
    Variant("ort-dyn-pc", "ort", "int8-dyn", "ort-dynamic", {"per_channel": True}),
    Variant("onnxq-dyn", "onnxq", "int8-dyn", "onnxq", {"mode": "dynamic"}),
    Variant("onnxq-dyn+smooth", "onnxq", "int8-dyn", "onnxq", {"mode": "dynamic", "smooth": 0.5}, data=True),
    Variant("onnxq-dyn+gather", "onnxq", "int8-dyn", "onnxq", {"mode": "dynamic", "smooth": 0.5, "include_gather": True}, data=True, gather_only=True),
    Variant("onnxq-int8-wo", "onnxq", "int8-wo", "onnxq", {"mode": "weight-only", "bits": 8}),
    Variant("ort-int4-b32", "ort", "int4", "ort-nbits", {"block_size": 32}),
    Variant("onnxq-int4-b32-rtn", "onnxq", "int4", "onnxq", {"mode": "weight-only", "bits": 4, "block_size": 32, "scale_search": "none"}),
    Variant("onnxq-int4-b32-mse", "onnxq", "int4", "onnxq", {"mode": "weight-only", "bits": 4, "block_size": 32, "scale_search": "mse"}),
    Variant("onnxq-int4-b32+gather", "onnxq", "int4", "onnxq",
            {"mode": "weight-only", "bits": 4, "block_size": 32, "scale_search": "mse", "include_gather": True}, gather_only=True),
    Variant("ort-int4-b128", "ort", "int4", "ort-nbits", {"block_size": 128}),
    Variant("onnxq-int4-b128-rtn", "onnxq", "int4", "onnxq", {"mode": "weight-only", "bits": 4, "block_size": 128, "scale_search": "none"}),
    Variant("onnxq-int4-b128-mse", "onnxq", "int4", "onnxq", {"mode": "weight-only", "bits": 4, "block_size": 128, "scale_search": "mse"}),
    Variant("ort-fp16", "ort", "fp16", "ort-fp16"),
    Variant("occ-fp16", "occ", "fp16", "occ-fp16"),
    Variant("onnxq-fp16", "onnxq", "fp16", "onnxq", {"mode": "fp16"}),
    Variant("onnxq-bf16", "onnxq", "bf16", "onnxq", {"mode": "bf16"}),
]
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}


# ---- conversion (runs in a subprocess) ---------------------------------------------------------
def _load_calib(folder: str) -> list[dict[str, np.ndarray]]:
    feeds = []
    for f in sorted(Path(folder).glob("*.npz")):
        with np.load(f) as z:
            feeds.append({k: z[k] for k in z.files})
    return feeds


def _onnxq_notes(report: dict[str, Any]) -> list[str]:
    """The few facts of an onnxq report worth a table cell."""
    notes = [one_line(n, 120) for n in report.get("notes", [])]
    for p in report.get("passes", []):
        s = p.get("stats") or {}
        if p["pass"] == "smooth-activations":
            notes.append(f"smoothed {s.get('smoothed', 0)} MatMuls")
        elif p["pass"] == "quantize-dynamic":
            notes.append(f"{s.get('quantized', 0)} quantized, {len(s.get('skipped') or {})} float")
            lat = s.get("latency") or {}
            if "float_ms" in lat:
                notes.append(f"guard {lat['float_ms']:.2f}->{lat['quantized_ms']:.2f} ms" + (" KEPT FLOAT" if lat.get("slower") else ""))
        elif p["pass"] == "quantize-weights-blockwise":
            by_op = s.get("quantized_by_op") or {}
            notes.append(f"{s.get('quantized', 0)} quantized ({', '.join(f'{k} {v}' for k, v in by_op.items()) or '-'}), "
                         f"{len(s.get('skipped') or {})} skipped")
        elif p["pass"] == "convert-float16":
            notes.append(f"{s.get('half_nodes', 0)} half nodes, {s.get('float_nodes', 0)} float, "
                         f"{s.get('constants_storage_only', 0)} storage-only weights")
    return notes


def convert_job(kind: str, source: str, output: str, options: dict[str, Any], calib: str | None = None,
                ort_accuracy_level: int | None = None) -> dict[str, Any]:
    """Subprocess entry point (``run_isolated("bench_dynamic:convert_job", ...)``)."""
    import onnx

    start = time.perf_counter()
    notes: list[str] = []
    if kind == "ort-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(source, output, per_channel=options["per_channel"], weight_type=QuantType.QInt8)
    elif kind == "ort-nbits":
        from onnxruntime.quantization import QuantFormat

        if importlib.util.find_spec("onnx_ir") is None:  # matmul_nbits_quantizer imports it at module level
            raise ImportError("onnxruntime's MatMulNBitsQuantizer needs onnx_ir: pip install onnx-ir")
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        config = DefaultWeightOnlyQuantConfig(block_size=options["block_size"], is_symmetric=False, bits=4,
                                              accuracy_level=ort_accuracy_level, quant_format=QuantFormat.QOperator)
        quant = MatMulNBitsQuantizer(onnx.load(source), algo_config=config)
        quant.process()
        quant.model.save_model_to_file(output, False)
        notes.append(f"accuracy_level {ort_accuracy_level}")
    elif kind in ("ort-fp16", "occ-fp16"):
        if kind == "ort-fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16
        else:
            from onnxconverter_common.float16 import convert_float_to_float16
        onnx.save(convert_float_to_float16(onnx.load(source), keep_io_types=True), output)
    elif kind == "onnxq":
        from onnxq import ir
        from onnxq.quantize import convert

        opts = dict(options)
        mode = opts.pop("mode")
        data = _load_calib(calib) if calib else None
        if mode == "dynamic" and data is None:
            opts.pop("smooth", None)
        result = convert(source, data, mode=mode, **opts)
        ir.save(result.model, output)
        notes += _onnxq_notes(result.report)
    else:
        raise ValueError(f"unknown conversion kind {kind}")
    return {"seconds": time.perf_counter() - start, "notes": notes}


def _convert(variant: Variant, source: Path, output: Path, calib: Path, args: argparse.Namespace) -> dict[str, Any]:

    job = {"kind": variant.kind, "source": str(source), "output": str(output), "options": variant.options,
           "calib": str(calib) if variant.data else None, "ort_accuracy_level": args.ort_accuracy_level}
    r = run_isolated("bench_dynamic:convert_job", job, mem_cap_gb=args.mem_cap_gb, timeout_s=args.timeout)
    out = dict(r.value) if r.ok and isinstance(r.value, dict) else {"notes": []}
    out.update(ok=r.ok, peak_rss_mb=r.peak_rss_mb, wall_s=r.wall_s)
    if not r.ok:
        text = r.describe()
        out["error"] = one_line(text.removeprefix("failed: "))
    elif not output.is_file():
        out.update(ok=False, error="converter wrote no file")
    return out


# ---- evaluation --------------------------------------------------------------------------------
def _rows(outputs: list[np.ndarray]) -> np.ndarray:
    """One row per sentence / sample / batch item, float64."""
    return np.concatenate([np.asarray(o, np.float64).reshape(o.shape[0], -1) for o in outputs])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), np.where((a == b).all(1), 1.0, 0.0))


def _nearest(emb: np.ndarray) -> np.ndarray:
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def _run_outputs(sess: Any, feeds: Sequence[dict[str, np.ndarray]], output: str) -> list[np.ndarray]:
    names = {i.name for i in sess.get_inputs()}
    return [sess.run([output], {k: v for k, v in f.items() if k in names})[0] for f in feeds]


def _time_round(sessions: Sequence[Any], feed: dict[str, np.ndarray]) -> float:
    total = 0.0
    for sess in sessions:
        names = {i.name for i in sess.get_inputs()}
        f = {k: v for k, v in feed.items() if k in names}
        sess.run(None, f)
        start = time.perf_counter()
        sess.run(None, f)
        total += time.perf_counter() - start
    return total


def bench_model(spec: ModelSpec, args: argparse.Namespace, workroot: Path) -> dict[str, Any]:
    from onnxq.runtime.bench import bench_sessions
    from onnxq.runtime.session import make_session

    workdir = workroot / spec.name
    workdir.mkdir(parents=True, exist_ok=True)
    source = spec.make(workdir, args.quick)
    data = spec.data(source, args.quick, args.eval)
    calib_dir = workdir / "calib"
    calib_dir.mkdir(exist_ok=True)
    for i, feed in enumerate(data.calib):
        np.savez(calib_dir / f"sample_{i:04d}.npz", **feed)
    res: dict[str, Any] = {"model": spec.name, "description": spec.description(args.quick), "minilm": spec.minilm,
                           "data": {"calibration": len(data.calib), "held_out": len(data.held_out), "shapes": data.shapes}}
    variants: dict[str, dict[str, Any]] = {}
    occ = importlib.util.find_spec("onnxconverter_common") is not None
    for v in VARIANTS:
        if v.name not in args.variants or (v.gather_only and not spec.has_gather):
            continue
        entry: dict[str, Any] = {"tool": v.tool, "family": v.family, "options": v.options}
        if v.kind == "none":
            entry.update(ok=True, path=source, notes=[])
        elif v.kind == "occ-fp16" and not occ:
            entry.update(ok=False, skipped=True, error="onnxconverter_common not installed (skipped)")
        else:
            out = workdir / f"{v.name}.onnx"
            print(f"  converting {v.name} ...", flush=True)
            entry.update(_convert(v, source, out, calib_dir, args), path=out)
        if entry.get("path") and Path(entry["path"]).is_file():
            entry["bytes"] = Path(entry["path"]).stat().st_size
        variants[v.name] = entry

    # load + accuracy (1 thread); a file onnxruntime refuses is a result
    sessions: dict[str, Any] = {}
    output = spec.output
    for name, v in variants.items():
        if not v["ok"]:
            continue
        try:
            sess = make_session(v["path"], threads=1)
        except Exception as e:  # noqa: BLE001
            v.update(ok=False, error=f"onnxruntime cannot load: {one_line(e, 140)}")
            continue
        output = output or sess.get_outputs()[0].name
        try:
            v["_outputs"] = _rows(_run_outputs(sess, data.held_out, output))
        except Exception as e:  # noqa: BLE001
            v.update(ok=False, error=f"onnxruntime cannot run: {one_line(e, 140)}")
            continue
        sessions[name] = sess
    ref = variants[FP32].get("_outputs")
    if ref is None:
        raise RuntimeError(f"fp32 model does not run: {variants[FP32].get('error')}")
    res["output"] = output
    nn_ref = _nearest(ref) if spec.minilm else None
    pairs = np.arange(len(ref)) ^ 1
    for name, v in variants.items():
        out = v.pop("_outputs", None)
        if out is None:
            continue
        if out.shape != ref.shape:
            v["accuracy"] = {"error": f"output shape {out.shape} != fp32 {ref.shape}"}
            continue
        cos = _cosines(ref, out)
        acc = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "rows": len(cos),
               "finite": bool(np.isfinite(out).all())}
        if spec.minilm:
            nn = _nearest(out)
            acc["nn_agree"] = float((nn == nn_ref).mean())
            acc["pair_at_1"] = float((nn == pairs).mean())
        v["accuracy"] = acc

    # latency: all loaded variants interleaved on the same input, one thread count at a time
    names = list(sessions)
    for threads in args.threads:
        sess_list: list[Any] = []
        try:
            sess_list = list(sessions.values()) if threads == 1 else [make_session(variants[n]["path"], threads=threads) for n in names]
            round_s = _time_round(sess_list, data.timed)
            runs = int(np.clip(args.budget / max(round_s, 1e-6), args.min_runs, args.max_runs))
            print(f"  timing {len(names)} variants at {threads} thread(s): {runs} interleaved runs "
                  f"(one round {round_s * 1000:.0f} ms)", flush=True)
            timings = bench_sessions(sess_list, [data.timed], runs=runs, warmup=args.warmup)
        except Exception as e:  # noqa: BLE001
            res.setdefault("timing_errors", {})[str(threads)] = one_line(e)
            continue
        for n, t in zip(names, timings):
            entry = t.as_dict()
            half = len(t.samples_ms) // 2
            if half >= 2:  # stability: medians of the first and second half of the runs, relative gap
                a, b = np.median(t.samples_ms[:half]), np.median(t.samples_ms[half:])
                entry["drift_pct"] = round(float(abs(a - b) / t.median_ms * 100), 2)
            variants[n].setdefault("latency", {})[str(threads)] = entry
        del sess_list
        if threads == 1:
            sessions = {}  # free the 1-thread sessions before the next thread count creates its own
    for v in variants.values():
        if "path" in v:
            v["path"] = str(v["path"])
    res["variants"] = variants
    return res


# ---- reporting ---------------------------------------------------------------------------------
def _acc(v: dict[str, Any] | None, key: str) -> float | None:
    return ((v or {}).get("accuracy") or {}).get(key)


def print_model(res: dict[str, Any], threads: Sequence[int]) -> None:

    print(f"\n=== {res['model']}: {res['description']}")
    if "skipped" in res:
        print(f"  skipped: {res['skipped']}")
        return
    d = res["data"]
    print(f"  data: {d['calibration']} calibration + {d['held_out']} held-out feeds ({d['shapes']}); compared output: {res['output']}")
    variants = res["variants"]
    fp = variants[FP32]
    headers = ["variant", "family", "1t ms", "x fp32", "drift%", "MB", "x size", "cos mean", "cos min"]
    if res["minilm"]:
        headers += ["NN agree", "pair@1"]
    headers += ["conv s", "peak MB", "notes"]
    rows = []
    for name, v in variants.items():
        row = [name, v["family"]]
        if not v["ok"]:
            rows.append(row + ["-"] * (len(headers) - 3) + [("" if v.get("skipped") else "FAILED: ") + v["error"]])
            continue
        m = latency_median(v, 1)
        row += [fmt(m, ".2f"), fmt(ratio(latency_median(fp, 1), m), ".2f"), fmt(((v.get("latency") or {}).get("1") or {}).get("drift_pct"), ".1f"),
                fmt(v["bytes"] / 1e6, ".2f"), fmt(ratio(v["bytes"], fp["bytes"]), ".3f"),
                fmt(_acc(v, "cos_mean"), ".5f"), fmt(_acc(v, "cos_min"), ".5f")]
        if res["minilm"]:
            row += [fmt(_acc(v, "nn_agree"), ".3f"), fmt(_acc(v, "pair_at_1"), ".3f")]
        notes = list(v.get("notes", []))
        if (v.get("accuracy") or {}).get("error"):
            notes.insert(0, v["accuracy"]["error"])
        if v.get("accuracy") and not v["accuracy"].get("finite", True):
            notes.insert(0, "NON-FINITE outputs")
        row += [fmt(v.get("seconds"), ".1f"), fmt(v.get("peak_rss_mb"), ".0f"), "; ".join(notes)]
        rows.append(row)
    print_table(headers, rows)
    for t in threads:
        if t == 1:
            continue
        print(f"\n  {t} threads (NOISY: shared 2-core machine; 1 thread is the reference)")
        rows = [[n, fmt(latency_median(v, t), ".2f"), fmt(ratio(latency_median(fp, t), latency_median(v, t)), ".2f"),
                 fmt(((v.get("latency") or {}).get(str(t)) or {}).get("drift_pct"), ".1f")]
                for n, v in variants.items() if v["ok"]]
        print_table(["variant", f"{t}t ms*", f"x fp32 {t}t*", "drift%"], rows)
    for t, err in (res.get("timing_errors") or {}).items():
        print(f"  timing at {t} thread(s) failed: {err}")
    runs = {((v.get("latency") or {}).get("1") or {}).get("runs") for v in variants.values() if v["ok"]}
    print(f"  1-thread runs per variant: {', '.join(str(r) for r in runs if r)}; drift% = gap between the medians of the "
          "first and second half of the runs, relative to the median (large = unstable, rerun on a quiet machine)")


FAMILY_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2, "int8-dyn": 3, "int8-wo": 4, "int4": 5}
FAMILY_LABEL = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8-dyn": "int8 dynamic", "int8-wo": "int8 weight-only",
                "int4": "int4 weight-only"}


def print_size_markdown(res: dict[str, Any]) -> None:
    """Size table of one model in Markdown (the README carries the transformer builder's)."""
    if "skipped" in res:
        return
    variants = res["variants"]
    fp = variants[FP32]
    print(f"\n=== size table ({res['model']}: {res['description']}), Markdown\n")
    print("| precision | variant | file MB | x fp32 | cosine mean (min) vs fp32 | 1-thread speedup |")
    print("|---|---|---:|---:|---:|---:|")
    order = sorted(variants.items(), key=lambda kv: FAMILY_ORDER.get(kv[1]["family"], 9))
    for name, v in order:
        if not v["ok"]:
            why = "skipped" if v.get("skipped") else "failed"
            print(f"| {FAMILY_LABEL[v['family']]} | {name} | {why} | | | |")
            continue
        cos = f"{fmt(_acc(v, 'cos_mean'), '.5f')} ({fmt(_acc(v, 'cos_min'), '.5f')})"
        print(f"| {FAMILY_LABEL[v['family']]} | {name} | {v['bytes'] / 1e6:.2f} | {fmt(ratio(v['bytes'], fp['bytes']), '.3f')} "
              f"| {cos} | {fmt(ratio(latency_median(fp, 1), latency_median(v, 1)), '.2f')}x |")


def goals(results: Sequence[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """PASS/FAIL lines for the issue's goals, computed from the measurements (None: not measured)."""
    by = {r["model"]: r for r in results if "skipped" not in r}
    out: list[tuple[str, bool | None, str]] = []

    def var(model: str, name: str) -> dict[str, Any] | None:
        return by[model]["variants"].get(name) if model in by else None

    def missing(model: str, name: str) -> str | None:
        v = var(model, name)
        if model not in by:
            return f"{model} not run"
        if v is None:
            return f"{name} not run"
        if not v["ok"]:
            return f"{name} failed: {v['error']}"
        if latency_median(v) is None or _acc(v, "cos_mean") is None:
            return f"{name} not measured"
        return None

    # 1. MiniLM dynamic int8
    for name in ("onnxq-dyn+smooth", "onnxq-dyn"):
        goal = f"minilm {name}: >= 2.5x fp32 at 1 thread, cosine mean >= 0.995, min >= 0.99"
        why = missing("minilm", name)
        if why:
            out.append((goal, None if "not run" in why else False, why))
            continue
        v, fp = var("minilm", name), var("minilm", FP32)
        sp, cm, cn = latency_median(fp) / latency_median(v), _acc(v, "cos_mean"), _acc(v, "cos_min")
        out.append((goal, sp >= 2.5 and cm >= 0.995 and cn >= 0.99, (f"{sp:.2f}x, mean {cm:.5f}, min {cn:.5f}, "
                    f"NN agree {fmt(_acc(v, 'nn_agree'))}")))
        inc = var("minilm", "ort-dyn-pc")
        goal = f"minilm {name} beats ort-dyn-pc: cosine mean and min >= it, latency <= it (+{SPEED_TOL:.0%} noise band)"
        if inc is None or not inc["ok"] or latency_median(inc) is None:
            out.append((goal, None if inc is None else True, "incumbent not measured" if inc is None else f"incumbent failed: {inc.get('error')}"))
        else:
            a, b = latency_median(v), latency_median(inc)
            ok = cm >= _acc(inc, "cos_mean") and cn >= _acc(inc, "cos_min") and a <= b * (1 + SPEED_TOL)
            out.append((goal, ok, (f"mean {cm:.5f} vs {_acc(inc, 'cos_mean'):.5f}, min {cn:.5f} vs {_acc(inc, 'cos_min'):.5f}, "
                        f"{a:.2f} vs {b:.2f} ms ({(a / b - 1) * 100:+.1f}%)")))

    # 2. onnxq dynamic never slower than fp32
    for model in by:
        for name in ("onnxq-dyn", "onnxq-dyn+smooth"):
            goal = f"{model} {name} not slower than fp32 at 1 thread (<= +{SPEED_TOL:.0%} noise band)"
            why = missing(model, name)
            if why:
                if "not run" not in why:
                    out.append((goal, False, why))
                continue
            a, b = latency_median(var(model, name)), latency_median(var(model, FP32))
            out.append((goal, a <= b * (1 + SPEED_TOL), f"{a:.2f} vs {b:.2f} ms ({b / a:.2f}x)"))

    # 3. int4 size and accuracy on MatMul-dominated models
    for model in by:
        if not SPECS[model].matmul_dominated:
            continue
        for block in (32, 128):
            name, base = f"onnxq-int4-b{block}-mse", f"ort-int4-b{block}"
            goal = f"{model} {name}: file <= 0.2x fp32 and cosine mean >= {base} (RTN)"
            why = missing(model, name)
            if why:
                if "not run" not in why:
                    out.append((goal, False, why))
                continue
            v, fp, inc = var(model, name), var(model, FP32), var(model, base)
            ratio = v["bytes"] / fp["bytes"]
            if inc is None or not inc["ok"] or _acc(inc, "cos_mean") is None:
                # the size half is measured, the accuracy half is not: neither PASS nor FAIL
                out.append((goal, None if ratio <= 0.2 else False,
                            f"size {ratio:.3f}x; RTN baseline {'not run' if inc is None else inc.get('error')}"))
                continue
            cm, cb = _acc(v, "cos_mean"), _acc(inc, "cos_mean")
            out.append((goal, ratio <= 0.2 and cm >= cb, (f"size {ratio:.3f}x (ort {inc['bytes'] / fp['bytes']:.3f}x), "
                        f"cosine {cm:.5f} vs {cb:.5f} (min {_acc(v, 'cos_min'):.5f} vs {_acc(inc, 'cos_min'):.5f})")))

    # 4. fp16
    for model in by:
        goal = f"{model} onnxq-fp16: file <= 0.51x fp32, cosine mean >= 0.999"
        why = missing(model, "onnxq-fp16")
        if why:
            if "not run" not in why:
                out.append((goal, False, why))
            continue
        v, fp = var(model, "onnxq-fp16"), var(model, FP32)
        ratio, cm = v["bytes"] / fp["bytes"], _acc(v, "cos_mean")
        out.append((goal, ratio <= 0.51 and cm >= 0.999, (f"size {ratio:.3f}x, cosine {cm:.6f} (min {_acc(v, 'cos_min'):.6f}), "
                    f"{latency_median(fp) / latency_median(v):.2f}x fp32 speed")))
    return out


def print_goals(lines: Sequence[tuple[str, bool | None, str]], quick: bool) -> None:
    print("\n=== goals" + ("  [QUICK smoke run: small models, few runs; NOT a measurement]" if quick else ""))
    for goal, ok, detail in lines:
        print(f"{'SKIP' if ok is None else 'PASS' if ok else 'FAIL'}  {goal}: {detail}")


def print_failures(results: Sequence[dict[str, Any]]) -> None:
    rows = [(r["model"], n, v["error"]) for r in results if "variants" in r for n, v in r["variants"].items()
            if not v["ok"] and not v.get("skipped")]
    if rows:
        print("\n=== conversions that failed or gave a model onnxruntime cannot load/run")
        for model, name, err in rows:
            print(f"  {model} {name}: {err}")


# ---- main --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(SPECS), help=f"comma list (default all): {','.join(SPECS)}")
    ap.add_argument("--variants", default=",".join(VARIANT_BY_NAME), help="comma list of variants (fp32 is always included)")
    ap.add_argument("--quick", action="store_true", help="small builder sizes, few held-out feeds and runs: a smoke test, not a measurement")
    ap.add_argument("--threads", default="1,2", help="thread counts to time; 1 is the reference, others are noisy")
    ap.add_argument("--eval", type=int, help="held-out feeds (builders; default 32/16/4) or sentences (MiniLM; default 64, quick 16)")
    ap.add_argument("--budget", type=float, help="timed seconds per model and thread count (default 90, quick 1)")
    ap.add_argument("--min-runs", type=int, help="at least this many interleaved runs (default 30, quick 3)")
    ap.add_argument("--max-runs", type=int, help="at most this many (default 1000, quick 10)")
    ap.add_argument("--warmup", type=int, help="untimed rounds before timing (default 5, quick 1)")
    ap.add_argument("--ort-accuracy-level", type=int, default=4,
                    help="accuracy_level of onnxruntime's MatMulNBits (default 4 = what onnxq writes; onnxruntime's own default is unset/0)")
    ap.add_argument("--mem-cap-gb", type=float, default=8.0, help="address-space cap of each conversion subprocess")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds before a conversion is killed")
    ap.add_argument("--json", dest="json_out", help="write every measurement here")
    ap.add_argument("--keep", help="keep the fp32 and converted files in this folder")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SPECS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(SPECS)}")
    args.variants = {v.strip() for v in args.variants.split(",") if v.strip()} | {FP32}
    bad = sorted(args.variants - set(VARIANT_BY_NAME))
    if bad:
        ap.error(f"unknown variant(s) {', '.join(bad)}; known: {', '.join(VARIANT_BY_NAME)}")
    args.threads = sorted({int(t) for t in args.threads.split(",")})
    q = args.quick
    args.budget = args.budget if args.budget is not None else (1.0 if q else 90.0)
    args.min_runs = args.min_runs or (3 if q else 30)
    args.max_runs = args.max_runs or (10 if q else 1000)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 5)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime

    print(f"bench_dynamic: onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cpus, models {','.join(args.models)}, "
          f"threads {args.threads}" + ("  [QUICK: smoke test, not a measurement]" if args.quick else ""), flush=True)
    keep = Path(args.keep) if args.keep else None
    workroot = keep or Path(tempfile.mkdtemp(prefix="bench_dynamic_"))
    workroot.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name in args.models:
            spec = SPECS[name]
            print(f"\n--- {name}", flush=True)
            start = time.perf_counter()
            try:
                res = bench_model(spec, args, workroot)
            except Skip as e:
                res = {"model": name, "description": spec.description(args.quick), "skipped": str(e)}
            except Exception as e:  # noqa: BLE001 - one broken model must not lose the others
                traceback.print_exc()
                res = {"model": name, "description": spec.description(args.quick), "skipped": f"benchmark error: {one_line(e)}"}
            res["seconds"] = round(time.perf_counter() - start, 1)
            results.append(res)
            print_model(res, args.threads)
    finally:
        if keep is None:
            shutil.rmtree(workroot, ignore_errors=True)
    for res in results:
        if res["model"] == "transformer":
            print_size_markdown(res)
    print_failures(results)
    lines = goals(results)
    print_goals(lines, args.quick)
    if args.json_out:
        payload = {"quick": args.quick, "threads": args.threads, "onnxruntime": onnxruntime.__version__,
                   "ort_accuracy_level": args.ort_accuracy_level, "results": results,
                   "goals": [{"goal": g, "pass": ok, "detail": d} for g, ok, d in lines]}
        Path(args.json_out).write_text(json.dumps(payload, indent=1, default=json_default))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
