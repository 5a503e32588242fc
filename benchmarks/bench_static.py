"""Static quantization: fp32 vs onnxruntime's ``quantize_static`` vs onnxq, in one run.

For every model (builders from ``models/`` at benchmark sizes, the PP-OCR zoo models, and later
the MiniLM export) the same calibration set (seeded synthetic for builders, rendered text for OCR
via ``benchmarks/ocr_data.py``) feeds every quantizer, and a separate held-out set measures:

* latency median at 1 thread: all variants' sessions timed round-robin on the same input
  (``onnxq.runtime.bench.bench_sessions``), runs chosen so the fastest model still gets
  ``--budget`` seconds; other ``--threads`` counts are reported separately and marked noisy;
* output SQNR and cosine vs fp32 on the held-out set (worst output), and the task metric:
  rec character accuracy vs ground truth (greedy CTC), cls top-1 vs labels, det mean and worst
  page mask IoU vs fp32's mask, builders top-1 agreement with fp32 (class scores) or cosine;
* file size, conversion wall time (measured inside the child around the whole conversion: for
  onnxruntime opset upgrade + quant_pre_process + quantize_static; for onnxq quantize_static +
  save) and peak RSS: each conversion runs in its own subprocess through
  ``benchmarks/_bench_util.run_isolated`` (peak = the child's VmHWM; ``--mem-cap-gb`` is an
  RLIMIT_AS cap, a conversion hitting it is reported as out of memory; ``--timeout`` kills it).

Variants: ``fp32`` (the original file); ``ort-minmax`` / ``ort-percentile``: onnxruntime
``quantize_static`` (QDQ, per_channel=True, QUInt8 activations, QInt8 weights) after what a user
needs to make it load — ``onnx.version_converter`` to opset 13 when older, then
``quant_pre_process`` (its failure is caught and noted; quantization goes on without it).
Both with onnxruntime's default calibration options (Percentile is 99.999 like onnxq's default;
``CalibMaxIntermediateOutputs`` is not used: onnxruntime drops each full chunk's ranges). ``onnxq``:
``onnxq.quantize.quantize_static`` with defaults (percentile, latency tuning at 1 thread). Every
quantizer reads the same calibration set through the same streaming ``get_next()`` reader over a
folder of .npz files (``--onnxq-data folder`` gives onnxq the folder path instead, as
``onnxq convert --data DIR`` does).

A conversion that crashes, or an output that onnxruntime cannot load or run, is a result: it is
printed as ``failed: <reason>`` and the benchmark goes on.

    python benchmarks/bench_static.py [--models cnn,ppocr-rec] [--quick] [--threads 1,2]
                                      [--json out.json] [--keep DIR]

Do not run the full benchmark on a shared machine: it takes minutes per model and uses both cores.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _bench_util import fmt, json_default, latency_median, one_line, print_table, run_isolated  # noqa: E402

CALIB_SEED = 1001  # calibration and held-out data never share a seed
EVAL_SEED = 2002
OCR_BATCH = 6  # rapidocr runs rec / cls in batches of 6 crops
GB = 1e9

FP32 = "fp32"
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile"}
ONNXQ = "onnxq"


class Skip(Exception):
    """A model cannot be benchmarked here (file or package absent); the message says why."""


def _describe_exception(e: BaseException, limit: int = 100) -> str:
    """``Type: message``; for an empty message (a bare assert) the function that raised it."""
    text = str(e).strip()
    if not text:
        frames = traceback.extract_tb(e.__traceback__)
        text = f"in {Path(frames[-1].filename).stem}.{frames[-1].name}" if frames else ""
    return one_line(f"{type(e).__name__}: {text}", limit)


# ---- models ------------------------------------------------------------------------------------
@dataclass
class Dataset:
    feeds: list[dict[str, np.ndarray]]
    labels: list[Any] | None = None  # per feed: rec truths (list of str), cls labels (list of int)


@dataclass
class ModelSpec:
    """How to get one model, its data and its task metric.

    ``make(workdir)`` returns the fp32 file (raises :class:`Skip` when it cannot); ``data(path, n,
    seed)`` returns ``n`` feeds (+ labels). ``metric`` is rec | cls | det | top1 | cosine.
    """

    name: str
    make: Callable[[Path], Path]
    data: Callable[[Path, int, int], Dataset]
    metric: str
    description: str = ""


def _builder_spec(name: str, kwargs: dict[str, Any], shapes: dict[str, tuple[int, ...]], metric: str, what: str) -> ModelSpec:
    def make(workdir: Path) -> Path:
        import onnx

        from models import build

        path = workdir / "fp32.onnx"
        onnx.save(build(name, **kwargs), str(path))
        return path

    def data(path: Path, n: int, seed: int) -> Dataset:
        rng = np.random.default_rng(seed)
        return Dataset([{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(n)])

    return ModelSpec(name, make, data, metric, what)


def _text_feeds(path: Path, n: int, seed: int, seq: int = 128, vocab: int = 1000) -> Dataset:
    """BERT-style int64 feeds built from the model's declared inputs (ids, attention mask, token types)."""
    import onnxruntime as ort

    inputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        length = int(rng.integers(seq // 2, seq + 1))
        feed = {}
        for i in inputs:
            if "mask" in i.name:
                value = (np.arange(seq) < length).astype(np.int64)[None]
            elif "type" in i.name:
                value = np.zeros((1, seq), np.int64)
            elif "position" in i.name:
                value = np.arange(seq, dtype=np.int64)[None]
            else:
                value = rng.integers(1, vocab, (1, seq)).astype(np.int64)
            feed[i.name] = value
        feeds.append(feed)
    return Dataset(feeds)


def _transformer_spec() -> ModelSpec:
    spec = _builder_spec("transformer", {"vocab": 30522, "hidden": 384, "heads": 12, "layers": 6, "max_seq": 512}, {}, "cosine",
                         "builder transformer hidden 384, 6 layers, 12 heads, seq 128 (padded tail), batch 1")
    spec.data = lambda path, n, seed: _text_feeds(path, n, seed, vocab=30522)
    return spec


def _zoo_make(name: str) -> Callable[[Path], Path]:
    def make(workdir: Path) -> Path:
        from models.zoo import ZooUnavailable, fetch

        try:
            return fetch(name)
        except ZooUnavailable as e:
            raise Skip(str(e)) from e

    return make


def _rec_data(path: Path, n: int, seed: int) -> Dataset:
    import ocr_data

    xs, truths = ocr_data.rec_samples(n, seed, batch=OCR_BATCH)
    return Dataset([{"x": x} for x in xs], truths)


def _cls_data(path: Path, n: int, seed: int) -> Dataset:
    import ocr_data

    xs, labels = ocr_data.cls_samples(n * OCR_BATCH, seed)
    feeds = [{"x": np.concatenate(xs[i:i + OCR_BATCH])} for i in range(0, len(xs), OCR_BATCH)]
    return Dataset(feeds, [labels[i:i + OCR_BATCH] for i in range(0, len(labels), OCR_BATCH)])


def _det_data(path: Path, n: int, seed: int) -> Dataset:
    import ocr_data

    xs, _boxes = ocr_data.det_samples(n, seed, size=ocr_data.DET_LIMIT_SIDE_LEN)
    return Dataset([{"x": x} for x in xs])


def _minilm_module():
    if not (ROOT / "models" / "minilm.py").is_file():
        raise Skip("models/minilm.py does not exist yet")
    return importlib.import_module("models.minilm")


def _minilm_make(workdir: Path) -> Path:
    """The all-MiniLM-L6-v2 export from ``models/minilm.py`` (exported once into the zoo cache)."""
    module = _minilm_module()
    path = module.minilm_path()
    if path.is_file():
        return path
    reason = module.available()
    if reason:
        raise Skip(f"MiniLM export unavailable: {reason}")
    try:
        return module.export_minilm()
    except Exception as e:
        raise Skip(f"MiniLM export failed: {one_line(e)}") from e


MINILM_SPLIT = 0.625  # models.minilm.SENTENCES: the first 62.5% (40 of 64) calibrate, the rest are held out


def _minilm_data(path: Path, n: int, seed: int) -> Dataset:
    """Real sentences (one, or two run together, seeded), tokenized to seq 64, batch 1.

    Calibration and held-out samples come from disjoint sentence pools (paraphrase pairs are
    adjacent and the split falls between pairs), so ``n`` can exceed the 64 sentences.
    """
    module = _minilm_module()
    sentences = list(module.SENTENCES)
    cut = 2 * round(len(sentences) * MINILM_SPLIT / 2)
    pool = sentences[:cut] if seed == CALIB_SEED else sentences[cut:]
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        picked = rng.choice(len(pool), size=int(rng.integers(1, 3)), replace=False)
        feeds.append(module.tokenize([" ".join(pool[i] for i in picked)], 64))
    return Dataset(feeds)


#: Model name -> spec. Sizes: one fp32 run of each builder is ~5-50 ms at 1 thread.
SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    _builder_spec("cnn", {"width": 64, "blocks": 3, "input_size": 112, "num_classes": 1000}, {"input": (1, 3, 112, 112)},
                  "top1", "builder cnn width 64, 3 blocks, 112x112, 1000 classes, batch 1"),
    _builder_spec("mlp", {"in_features": 784, "hidden": (1024, 1024, 1024)}, {"input": (256, 784)},
                  "top1", "builder mlp 784-1024x3-10, batch 256"),
    _transformer_spec(),
    _builder_spec("lstm", {"input_size": 128, "hidden": 512, "bidirectional": True}, {"input": (100, 4, 128)},
                  "top1", "builder lstm bidirectional hidden 512, seq 100, batch 4"),
    _builder_spec("mobilenet", {"input_size": 224, "width": 32}, {"input": (4, 3, 224, 224)},
                  "top1", "builder mobilenet-v3-like width 32, 224x224, batch 4"),
    _builder_spec("detector", {"input_size": 640, "width": 32, "num_classes": 80}, {"input": (1, 3, 640, 640)},
                  "cosine", "builder detector 640x640, width 32, 80 classes (boxes+scores Concat)"),
    _builder_spec("layernorm-classifier", {"in_features": 256, "hidden": 768, "layers": 6, "seq": 128}, {"input": (4, 128, 256)},
                  "top1", "builder layernorm-classifier hidden 768, 6 layers, seq 128, batch 4"),
    _builder_spec("cnn-lstm", {"width": 64, "hidden": 256, "num_classes": 6625}, {"input": (OCR_BATCH, 1, 32, 320)},
                  "top1", "builder cnn-lstm (CRNN) width 64, hidden 256, 6625 classes, batch 6 x 32x320"),
    _builder_spec("if-model", {"in_features": 512, "hidden": 1024}, {"input": (256, 512)},
                  "top1", "builder if-model 512-1024, batch 256"),
    ModelSpec("ppocr-rec", _zoo_make("ppocr-rec"), _rec_data, "rec", "PP-OCRv4 recogniser, batch 6 x [3,48,320], rendered text"),
    ModelSpec("ppocr-cls", _zoo_make("ppocr-cls"), _cls_data, "cls", "PP-OCR direction classifier, batch 6 x [3,48,192], half rotated"),
    ModelSpec("ppocr-det", _zoo_make("ppocr-det"), _det_data, "det", "PP-OCRv4 detector, [1,3,736,736] rendered pages"),
    ModelSpec("minilm", _minilm_make, _minilm_data, "cosine",
              "all-MiniLM-L6-v2 export (models/minilm.py), 1-2 real sentences x seq 64, batch 1"),
)}

METRIC_LABEL = {"rec": "char acc", "cls": "top-1 (labels)", "det": "mask IoU mean", "top1": "top-1 agree", "cosine": "cosine"}


# ---- conversion in a subprocess ---------------------------------------------------------------
def _save_calibration(feeds: Sequence[dict[str, np.ndarray]], folder: Path) -> None:
    """One .npz per sample, one array per input: what ``onnxq convert --data DIR`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds):
        np.savez(folder / f"sample_{i:05d}.npz", **feed)


class _NpzReader:
    """onnxruntime ``CalibrationDataReader`` over the .npz folder, loading one sample at a time.

    Also iterable (each ``iter()`` starts over, without touching ``get_next``'s position): onnxq's
    latency tuner takes its sample input with ``iter(data)`` and silently skips tuning for a reader
    that only has ``get_next()``.
    """

    def __init__(self, folder: str) -> None:
        self.files = sorted(Path(folder).glob("*.npz"))
        self.index = 0

    @staticmethod
    def _load(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.files):
            return None
        self.index += 1
        return self._load(self.files[self.index - 1])

    def __iter__(self):
        return (self._load(f) for f in self.files)

    def rewind(self) -> None:
        self.index = 0


def _convert_ort(job: dict[str, Any]) -> dict[str, Any]:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes: list[str] = []
    tmp = Path(job["output"]).parent / f".{Path(job['output']).stem}.work"
    tmp.mkdir(exist_ok=True)
    # quant_pre_process / symbolic shape inference write scratch files (uuid-named .data,
    # sym_shape_infer_temp.onnx) into the working directory: keep them out of the repository.
    os.chdir(tmp)
    start = time.perf_counter()
    source = str(Path(job["source"]).resolve())
    model = onnx.load(source)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        try:
            upgraded = version_converter.convert_version(model, 13)
            path = tmp / "opset13.onnx"
            onnx.save(upgraded, str(path))
            source = str(path)
            notes.append(f"opset {opset}->13")
        except Exception as e:  # noqa: BLE001
            notes.append(f"opset upgrade failed: {_describe_exception(e)}")
    del model
    try:
        path = tmp / "pre.onnx"
        quant_pre_process(source, str(path))
        source = str(path)
        notes.append("pre_process ok")
    except Exception as e:  # noqa: BLE001 - fails on many real models; quantize without it
        notes.append(f"quant_pre_process failed: {_describe_exception(e)}")
    method = job["method"]
    # No CalibMaxIntermediateOutputs: in onnxruntime 1.2x-1.32 MinMaxCalibrater.collect_data clears the
    # collected chunk without computing its ranges, so only the last partial chunk would count.
    extra = {"CalibPercentile": 99.999} if method == "Percentile" else {}
    quantize_static(
        source, job["output"], _NpzReader(job["data"]),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method), extra_options=extra,
    )
    seconds = time.perf_counter() - start
    shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "notes": notes}


def _convert_onnxq(job: dict[str, Any]) -> dict[str, Any]:
    from onnxq import ir
    from onnxq.quantize import quantize_static

    # "reader": the very _NpzReader onnxruntime gets (streamed, rewound between passes); "folder": the
    # .npz folder path, as ``onnxq convert --data DIR`` reads it.
    data = _NpzReader(job["data"]) if job.get("onnxq_data", "reader") == "reader" else job["data"]
    start = time.perf_counter()
    result = quantize_static(job["source"], data=data)
    ir.save(result.model, job["output"])
    seconds = time.perf_counter() - start
    report = result.report
    reasons: dict[str, int] = {}
    for f in report.get("float_nodes", []):
        key = one_line(re.sub(r"'[^']*'", "'…'", str(f.get("reason", "?"))).split(" (")[0], 70)
        reasons[key] = reasons.get(key, 0) + 1
    latency = report.get("latency") or {}
    return {
        "seconds": seconds,
        "notes": list(report.get("notes", [])),
        "quantized_nodes": report.get("quantized_nodes"),
        "float_nodes": len(report.get("float_nodes", [])),
        "float_reasons": reasons,
        "tuner_steps": len(latency.get("steps", [])) if isinstance(latency, dict) else None,
        "pass_seconds": {p["pass"]: p["seconds"] for p in report.get("passes", [])},
    }


def convert_job(**job: Any) -> dict[str, Any]:
    """Subprocess entry point (``_bench_util.run_isolated("bench_static:convert_job", job)``)."""
    return _convert_onnxq(job) if job["kind"] == ONNXQ else _convert_ort(job)


def run_conversion(kind: str, method: str | None, source: Path, data: Path, output: Path, *, cap_mb: float, timeout_s: float,
                   onnxq_data: str = "reader") -> dict[str, Any]:
    """Convert in a fresh interpreter; peak RSS is the child's own. Never raises for a failed conversion.

    Uses ``benchmarks/_bench_util.run_isolated`` (RLIMIT_AS cap, the child's VmHWM as its peak).
    """
    job = {"kind": kind, "method": method, "source": str(Path(source).resolve()), "data": str(Path(data).resolve()), "output": str(Path(output).resolve()), "onnxq_data": onnxq_data}
    r = run_isolated("bench_static:convert_job", job, mem_cap_gb=cap_mb / 1024, timeout_s=timeout_s)
    result = dict(r.value) if r.ok and isinstance(r.value, dict) else {}
    result.update(ok=r.ok, peak_rss_mb=r.peak_rss_mb, wall_s=r.wall_s)
    if not r.ok:
        result["error"] = one_line(r.describe().removeprefix("failed: "))
    return result


# ---- evaluation --------------------------------------------------------------------------------
class _Task:
    """Task metric of one variant, fed sample by sample with its output and fp32's."""

    def __init__(self, metric: str, dictionary: list[str] | None) -> None:
        self.metric = metric
        self.dictionary = dictionary
        self.pred: list[str] = []
        self.truth: list[str] = []
        self.correct = self.total = self.agree = 0
        self.ious: list[float] = []

    def update(self, out: np.ndarray, ref: np.ndarray, label: Any) -> None:
        import ocr_data

        if self.metric == "rec":
            self.pred.extend(ocr_data.rec_decode(out, self.dictionary))
            self.truth.extend(label)
        elif self.metric == "cls":
            arg, ref_arg = out.reshape(len(label), -1).argmax(1), ref.reshape(len(label), -1).argmax(1)
            self.correct += int((arg == np.asarray(label)).sum())
            self.agree += int((arg == ref_arg).sum())
            self.total += len(label)
        elif self.metric == "det":
            for a, b in zip(ocr_data.det_mask(out), ocr_data.det_mask(ref)):
                self.ious.append(ocr_data.mask_iou(a, b))
        elif self.metric == "top1":
            arg, ref_arg = out.reshape(-1, out.shape[-1]).argmax(1), ref.reshape(-1, ref.shape[-1]).argmax(1)
            self.agree += int((arg == ref_arg).sum())
            self.total += arg.size

    def result(self, cosine: float) -> dict[str, Any]:
        import ocr_data

        if self.metric == "rec":
            exact = float(np.mean([p == t for p, t in zip(self.pred, self.truth)])) if self.truth else float("nan")
            return {"value": ocr_data.char_accuracy(self.pred, self.truth), "exact_lines": exact, "lines": len(self.truth)}
        if self.metric == "cls":
            return {"value": self.correct / max(self.total, 1), "agree_fp32": self.agree / max(self.total, 1), "lines": self.total}
        if self.metric == "det":
            return {"value": float(np.mean(self.ious)), "worst": float(np.min(self.ious)), "pages": len(self.ious)}
        if self.metric == "top1":
            return {"value": self.agree / max(self.total, 1), "rows": self.total}
        return {"value": cosine}


def evaluate(paths: dict[str, Path], spec: ModelSpec, data: Dataset, threads: int, dictionary: list[str] | None) -> dict[str, dict[str, Any]]:
    """Accuracy of every variant vs fp32 on the held-out set; a variant that fails gets an ``error``."""
    from onnxq.runtime.evaluate import MetricAccumulator
    from onnxq.runtime.session import make_session, run_session

    ref = make_session(str(paths[FP32]), threads=threads)
    names = [o.name for o in ref.get_outputs()]
    sessions, results = {}, {}
    for variant, path in paths.items():
        try:
            sessions[variant] = ref if variant == FP32 else make_session(str(path), threads=threads)
        except Exception as e:  # noqa: BLE001 - a file onnxruntime refuses is a result
            results[variant] = {"error": f"does not load: {one_line(e, 140)}"}
    accs = {v: [MetricAccumulator(n) for n in names] for v in sessions}
    tasks = {v: _Task(spec.metric, dictionary) for v in sessions}
    for i, feed in enumerate(data.feeds):
        ref_out = run_session(ref, feed)
        label = data.labels[i] if data.labels is not None else None
        for variant in list(sessions):
            try:
                out = ref_out if variant == FP32 else run_session(sessions[variant], feed)
                for acc, r, c in zip(accs[variant], ref_out, out):
                    acc.update(r, c)
                tasks[variant].update(out[0], ref_out[0], label)
            except Exception as e:  # noqa: BLE001
                results[variant] = {"error": f"fails to run sample {i}: {one_line(e, 120)}"}
                del sessions[variant]
    for variant in sessions:
        metrics = [a.result() for a in accs[variant]]
        cosine = min(m.cosine for m in metrics)
        results[variant] = {"sqnr_db": min(m.sqnr_db for m in metrics), "cosine": cosine, "task": tasks[variant].result(cosine)}
    return results


def measure_latency(paths: dict[str, Path], feed: dict[str, np.ndarray], threads: int, budget_s: float, min_runs: int, max_runs: int) -> dict[str, dict[str, Any]]:
    """Interleaved medians of all variants on one input; runs sized so the fastest gets ``budget_s``."""
    from onnxq.runtime.bench import bench_sessions
    from onnxq.runtime.session import make_session

    sessions = {v: make_session(str(p), threads=threads) for v, p in paths.items()}
    single = []
    for sess in sessions.values():
        names = {i.name for i in sess.get_inputs()}
        f = {k: v for k, v in feed.items() if k in names}
        sess.run(None, f)
        t = []
        for _ in range(3):
            start = time.perf_counter()
            sess.run(None, f)
            t.append(time.perf_counter() - start)
        single.append(float(np.median(t)))
    runs = int(np.clip(math.ceil(budget_s / max(min(single), 1e-6)), min_runs, max_runs))
    timings = bench_sessions(list(sessions.values()), [feed], runs=runs, warmup=2)
    return {v: t.as_dict() for v, t in zip(sessions, timings)}


# ---- one model ---------------------------------------------------------------------------------
def bench_model(spec: ModelSpec, args: argparse.Namespace, workroot: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"model": spec.name, "description": spec.description, "metric": spec.metric}
    workdir = workroot / spec.name
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        source = spec.make(workdir)
    except Skip as e:
        out["skipped"] = str(e)
        return out
    fp32_path = workdir / "fp32.onnx"
    if source.resolve() != fp32_path.resolve():
        shutil.copyfile(source, fp32_path)
    t0 = time.perf_counter()
    calib = spec.data(fp32_path, args.calib, CALIB_SEED)
    held = spec.data(fp32_path, args.eval, EVAL_SEED)
    out["data"] = {"calibration": len(calib.feeds), "held_out": len(held.feeds), "seconds": round(time.perf_counter() - t0, 1),
                   "shapes": {k: list(v.shape) for k, v in held.feeds[0].items()}}
    dictionary = None
    if spec.metric == "rec":
        import ocr_data

        dictionary = ocr_data.rec_dictionary(fp32_path)

    variants: dict[str, dict[str, Any]] = {FP32: {"ok": True, "seconds": None, "peak_rss_mb": None}}
    with tempfile.TemporaryDirectory(prefix=f"bench_static_{spec.name}_") as tmp:
        calib_dir = Path(tmp) / "calib"
        _save_calibration(calib.feeds, calib_dir)
        del calib
        jobs = [(f"ort-{m}", "ort", ORT_METHODS[m]) for m in args.incumbent] + [(ONNXQ, ONNXQ, None)]
        for variant, kind, method in jobs:
            print(f"  converting {spec.name} with {variant} ...", flush=True)
            variants[variant] = run_conversion(kind, method, fp32_path, calib_dir, workdir / f"{variant}.onnx",
                                               cap_mb=args.mem_cap_gb * 1024, timeout_s=args.timeout, onnxq_data=args.onnxq_data)
    for leftover in workdir.glob(".*.work"):  # onnxruntime's intermediates of a killed conversion
        shutil.rmtree(leftover, ignore_errors=True)
    for variant, v in variants.items():
        path = workdir / f"{variant}.onnx"
        v["path"] = path
        v["bytes"] = path.stat().st_size if v["ok"] and path.is_file() else None
    loaded = {name: v["path"] for name, v in variants.items() if v["ok"]}
    print(f"  evaluating {len(held.feeds)} held-out samples ...", flush=True)
    accuracy = evaluate(loaded, spec, held, max(args.threads), dictionary)
    for name, acc in accuracy.items():
        if "error" in acc:
            variants[name].update(ok=False, error=acc["error"])
        else:
            variants[name]["accuracy"] = acc
    runnable = {name: v["path"] for name, v in variants.items() if v["ok"]}
    for threads in args.threads:
        print(f"  timing {len(runnable)} models interleaved at {threads} thread(s) ...", flush=True)
        lat = measure_latency(runnable, held.feeds[0], threads, args.budget, args.min_runs, args.max_runs)
        for name, t in lat.items():
            variants[name].setdefault("latency", {})[str(threads)] = t
    for v in variants.values():
        v["path"] = str(v["path"])
    out["variants"] = variants
    return out


# ---- reporting ---------------------------------------------------------------------------------
def _acc(v: dict[str, Any]) -> float | None:
    return ((v.get("accuracy") or {}).get("task") or {}).get("value")


def print_model(res: dict[str, Any], threads: Sequence[int]) -> None:
    print(f"\n=== {res['model']}: {res['description']}")
    if "skipped" in res:
        print(f"  skipped: {res['skipped']}")
        return
    d = res["data"]
    print(f"  data: {d['calibration']} calibration + {d['held_out']} held-out samples, input {d['shapes']}")
    variants = res["variants"]
    base = {t: latency_median(variants[FP32], t) for t in threads}
    metric = res["metric"]
    headers = ["variant"]
    for t in threads:
        headers += ["1t ms", "x fp32"] if t == 1 else [f"{t}t ms*", f"x fp32 {t}t*"]
    headers += ["SQNR dB", "cosine"] + ([] if metric == "cosine" else [METRIC_LABEL[metric]])
    if metric == "rec":
        headers.append("exact lines")
    if metric == "cls":
        headers.append("agree fp32")
    if metric == "det":
        headers.append("IoU worst")
    headers += ["MB", "conv s", "peak MB", "notes"]
    rows = []
    for name, v in variants.items():
        if not v["ok"]:
            rows.append([name, "FAILED"] + [""] * (len(headers) - 6)
                        + ["", fmt(v.get("seconds"), ".1f"), fmt(v.get("peak_rss_mb"), ".0f"), f"failed: {v['error']}"])
            continue
        row = [name]
        for t in threads:
            m = latency_median(v, t)
            row += [fmt(m, ".2f"), fmt(base[t] / m if m and base[t] else None, ".2f")]
        acc = v.get("accuracy", {})
        task = acc.get("task", {})
        row += [fmt(acc.get("sqnr_db"), ".1f"), fmt(acc.get("cosine"), ".5f")]
        if metric != "cosine":
            row.append(fmt(task.get("value"), ".4f"))
        if metric == "rec":
            row.append(fmt(task.get("exact_lines"), ".3f"))
        if metric == "cls":
            row.append(fmt(task.get("agree_fp32"), ".4f"))
        if metric == "det":
            row.append(fmt(task.get("worst"), ".4f"))
        notes = list(v.get("notes", []))
        if name == ONNXQ and v.get("quantized_nodes") is not None:
            slow = [f"{p} {t:.1f}s" for p, t in (v.get("pass_seconds") or {}).items() if t >= 0.5]
            notes.insert(0, f"{v['quantized_nodes']} quantized, {v['float_nodes']} float" + (f" ({', '.join(slow)})" if slow else ""))
        row += [fmt(v["bytes"] / 1e6 if v.get("bytes") else None, ".2f"), fmt(v.get("seconds"), ".1f"),
                fmt(v.get("peak_rss_mb"), ".0f"), "; ".join(notes)]
        rows.append(row)
    print_table(headers, rows)
    if any(t != 1 for t in threads):
        print("  * medians at more than 1 thread are noisy (the machine has 2 cores, shared); 1 thread is the reference")
    onnxq = variants.get(ONNXQ, {})
    if onnxq.get("ok") and onnxq.get("float_reasons"):
        print("  onnxq float nodes by reason: " + "; ".join(f"{n}x {r}" for r, n in onnxq["float_reasons"].items()))


def print_summary(results: Sequence[dict[str, Any]]) -> None:
    print("\n=== summary (1 thread; accuracy = each model's task metric)")
    rows = []
    for res in results:
        if "skipped" in res:
            rows.append([res["model"]] + ["-"] * 7 + [f"skipped: {res['skipped']}"])
            continue
        v = res["variants"]
        fp = v[FP32]
        incs = {n: x for n, x in v.items() if n.startswith("ort-")}

        def cell(x: dict[str, Any], fp: dict[str, Any] = fp) -> tuple[str, str, str]:
            if not x.get("ok"):
                return "failed", "-", "-"
            m = latency_median(x, 1)
            sp = fmt(latency_median(fp, 1) / m if m else None, ".2f")
            return f"{fmt(m, '.2f')} ({sp}x)", fmt(_acc(x), ".4f"), f"{fmt(x.get('seconds'), '.1f')}s/{fmt(x.get('peak_rss_mb'), '.0f')}MB"
        inc_cells = [cell(x) for x in incs.values()]
        oq = cell(v.get(ONNXQ, {"ok": False}))
        rows.append([res["model"], METRIC_LABEL[res["metric"]], fmt(latency_median(fp, 1), ".2f"), fmt(_acc(fp), ".4f"),
                     " | ".join(f"{n}: {c[0]}" for n, c in zip(incs, inc_cells)),
                     " | ".join(c[1] for c in inc_cells), oq[0], oq[1],
                     " | ".join(c[2] for c in inc_cells) + f" || onnxq {oq[2]}"])
    print_table(["model", "metric", "fp32 ms", "fp32 acc", "incumbent ms (speedup)", "inc acc", "onnxq ms (speedup)",
                  "onnxq acc", "conversion time/peak"], rows)


def goals(results: Sequence[dict[str, Any]], tolerance: float = 0.0) -> list[tuple[str, bool | None, str]]:
    """PASS/FAIL lines for the issue's goals, from the measurements (None: not measured).

    ``tolerance``: onnxq's 1-thread median may exceed an incumbent's by this fraction and still count
    as "<=" (two medians of the same graph differ by about 1% run to run); the line says so.
    """
    by = {r["model"]: r for r in results if "skipped" not in r}
    out: list[tuple[str, bool | None, str]] = []

    def oq(name: str) -> dict[str, Any] | None:
        r = by.get(name)
        v = r and r["variants"].get(ONNXQ)
        return v if v and v.get("ok") else None

    def speedup(name: str) -> float | None:
        v = oq(name)
        fp = latency_median(by[name]["variants"][FP32], 1) if name in by else None
        m = v and latency_median(v, 1)
        return fp / m if fp and m else None

    def check(goal: str, name: str, value: float | None, ok: Callable[[float], bool], shown: str) -> None:
        if name not in by:
            out.append((goal, None, f"{name} not run"))
        elif value is None:
            out.append((goal, False, "onnxq failed: " + str(by[name]["variants"].get(ONNXQ, {}).get("error"))))
        else:
            out.append((goal, ok(value), shown.format(value)))

    rec_acc = _acc(oq("ppocr-rec") or {})
    rec_fp = _acc(by["ppocr-rec"]["variants"][FP32]) if "ppocr-rec" in by else None
    check("ppocr-rec onnxq >= 1.5x fp32 at 1 thread", "ppocr-rec", speedup("ppocr-rec"), lambda s: s >= 1.5, "{:.2f}x")
    check("ppocr-rec char accuracy >= 0.99", "ppocr-rec", rec_acc, lambda a: a >= 0.99, "{:.4f} (fp32 " + fmt(rec_fp, ".4f") + ")")
    check("ppocr-rec char accuracy within 0.005 of fp32", "ppocr-rec", None if rec_acc is None or rec_fp is None else rec_fp - rec_acc,
          lambda g: g <= 0.005, "fp32 - onnxq = {:+.4f}")
    peak = (oq("ppocr-rec") or {}).get("peak_rss_mb")
    check("ppocr-rec conversion peak RSS < 1.5 GB", "ppocr-rec", peak, lambda p: p * 2**20 < 1.5 * GB, "{:.0f} MB")
    check("ppocr-cls onnxq >= 1.0x fp32", "ppocr-cls", speedup("ppocr-cls"), lambda s: s >= 1.0, "{:.2f}x")
    check("ppocr-cls onnxq >= 1.3x fp32 (aim)", "ppocr-cls", speedup("ppocr-cls"), lambda s: s >= 1.3, "{:.2f}x")
    cls_v = oq("ppocr-cls") or {}
    cls_fp = _acc(by["ppocr-cls"]["variants"][FP32]) if "ppocr-cls" in by else None
    check("ppocr-cls top-1 vs labels >= 0.99", "ppocr-cls", _acc(cls_v) if cls_v else None, lambda a: a >= 0.99,
          "{:.4f} (fp32 " + fmt(cls_fp, ".4f") + ")")
    check("ppocr-cls top-1 agreement with fp32 >= 0.99", "ppocr-cls",
          cls_v.get("accuracy", {}).get("task", {}).get("agree_fp32") if cls_v else None, lambda a: a >= 0.99, "{:.4f}")
    check("ppocr-det onnxq >= 1.6x fp32 at 1 thread", "ppocr-det", speedup("ppocr-det"), lambda s: s >= 1.6, "{:.2f}x")
    det_v = oq("ppocr-det") or {}
    check("ppocr-det mean mask IoU vs fp32 >= 0.95", "ppocr-det", _acc(det_v) if det_v else None, lambda a: a >= 0.95,
          "{:.4f} (worst page " + fmt(det_v.get("accuracy", {}).get("task", {}).get("worst"), ".4f") + ")")
    check("cnn onnxq >= 2x fp32 at 1 thread", "cnn", speedup("cnn"), lambda s: s >= 2.0, "{:.2f}x")

    for name, r in by.items():
        v = r["variants"]
        mine = v.get(ONNXQ, {})
        for inc_name, inc in ((n, x) for n, x in v.items() if n.startswith("ort-")):
            if not mine.get("ok"):
                out.append((f"{name}: onnxq vs {inc_name}", False, f"onnxq failed: {mine.get('error')}"))
                continue
            if not inc.get("ok"):
                out.append((f"{name}: onnxq vs {inc_name}", True, f"incumbent failed: {inc.get('error')}"))
                continue
            a, b = latency_median(mine, 1), latency_median(inc, 1)
            tie = " (a tie within --latency-tolerance)" if b < a <= b * (1 + tolerance) else ""
            out.append((f"{name}: onnxq latency <= {inc_name}", a <= b * (1 + tolerance),
                        f"{a:.2f} vs {b:.2f} ms ({(a / b - 1) * 100:+.1f}%){tie}"))
            a, b = _acc(mine), _acc(inc)
            out.append((f"{name}: onnxq {METRIC_LABEL[r['metric']]} >= {inc_name}", a >= b, f"{a:.4f} vs {b:.4f} ({a - b:+.4f})"))
            a, b = mine["seconds"], inc["seconds"]
            out.append((f"{name}: onnxq conversion faster than {inc_name}", a < b, f"{a:.1f} vs {b:.1f} s ({a / b:.2f}x)"))
    return out


def print_goals(lines: Sequence[tuple[str, bool | None, str]]) -> None:
    print("\n=== goals")
    for goal, ok, detail in lines:
        print(f"{'SKIP' if ok is None else 'PASS' if ok else 'FAIL'}  {goal}: {detail}")
    losses = [(g, d) for g, ok, d in lines if ok is False and ": onnxq" in g]
    if losses:
        print("\n=== where onnxq loses to the incumbent (measured gap)")
        for goal, detail in losses:
            print(f"  {goal}: {detail}")


# ---- main --------------------------------------------------------------------------------------
def _finite(o: Any) -> Any:
    """inf / nan as strings (strict JSON has neither; SQNR of fp32 against itself is inf)."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(SPECS), help=f"comma list (default all): {','.join(SPECS)}")
    ap.add_argument("--quick", action="store_true", help="few samples and runs: a smoke test, not a measurement")
    ap.add_argument("--threads", default="1,2", help="thread counts to time (1 is always included: the goals use it; others are noisy)")
    ap.add_argument("--incumbent", default="minmax,percentile", help="onnxruntime calibration methods: minmax,percentile")
    ap.add_argument("--calib", type=int, help="calibration samples (default 64, quick 8)")
    ap.add_argument("--eval", type=int, help="held-out samples (default 64, quick 8)")
    ap.add_argument("--budget", type=float, help="timed seconds for the fastest model per thread count (default 2, quick 0.3)")
    ap.add_argument("--min-runs", type=int, help="at least this many timed runs (default 10, quick 3)")
    ap.add_argument("--max-runs", type=int, default=3000)
    ap.add_argument("--mem-cap-gb", type=float, default=10.0, help="kill a conversion whose RSS passes this (GiB)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="kill a conversion after this many seconds")
    ap.add_argument("--onnxq-data", choices=("reader", "folder"), default="reader",
                    help="how onnxq gets the calibration set: the same get_next() reader onnxruntime gets (default) "
                         "or the .npz folder path, as `onnxq convert --data DIR` reads it")
    ap.add_argument("--latency-tolerance", type=float, default=0.02,
                    help="onnxq latency within this fraction above the incumbent's counts as a tie (default 0.02)")
    ap.add_argument("--json", dest="json_out", help="write every measurement here")
    ap.add_argument("--keep", help="keep the fp32 and converted files in this folder")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SPECS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(SPECS)}")
    args.threads = sorted({1, *(int(t) for t in args.threads.split(",") if t.strip())})  # 1 thread is the reference
    args.incumbent = [m.strip() for m in args.incumbent.split(",") if m.strip()]
    bad = [m for m in args.incumbent if m not in ORT_METHODS]
    if bad:
        ap.error(f"--incumbent takes {', '.join(ORT_METHODS)}, got {', '.join(bad)}")
    quick = args.quick
    args.calib = args.calib or (8 if quick else 64)
    args.eval = args.eval or (8 if quick else 64)
    args.budget = args.budget or (0.3 if quick else 2.0)
    args.min_runs = args.min_runs or (3 if quick else 10)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime

    print(f"bench_static: onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cpus, models {','.join(args.models)}, "
          f"{args.calib} calibration / {args.eval} held-out samples, threads {args.threads}"
          + ("  [QUICK: smoke test, not a measurement]" if args.quick else ""), flush=True)
    keep = Path(args.keep) if args.keep else None
    workroot = keep or Path(tempfile.mkdtemp(prefix="bench_static_"))
    workroot.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name in args.models:
            print(f"\n--- {name}", flush=True)
            start = time.perf_counter()
            try:
                res = bench_model(SPECS[name], args, workroot)
            except Exception as e:  # noqa: BLE001 - one broken model must not lose the others
                traceback.print_exc()
                res = {"model": name, "description": SPECS[name].description, "metric": SPECS[name].metric,
                       "skipped": f"benchmark error: {one_line(e)}"}
            res["seconds"] = round(time.perf_counter() - start, 1)
            results.append(res)
            print_model(res, args.threads)
    finally:
        if keep is None:
            shutil.rmtree(workroot, ignore_errors=True)
    print_summary(results)
    lines = goals(results, args.latency_tolerance)
    print_goals(lines)
    if args.json_out:
        payload = {"quick": args.quick, "threads": args.threads, "calibration": args.calib, "held_out": args.eval,
                   "results": results, "goals": [{"goal": g, "pass": ok, "detail": d} for g, ok, d in lines]}
        Path(args.json_out).write_text(json.dumps(_finite(payload), indent=1, default=json_default, allow_nan=False))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
