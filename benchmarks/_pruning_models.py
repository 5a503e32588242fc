"""bench_pruning's subjects (a model, its inputs, how agreement is measured) and the measurement of
a set of in-process variants of one subject.

:func:`measure` builds each variant with onnxq passes (a failure is a row with ``error``), records
its static figures (file and deflate size, parameters, FLOPs, weight sparsity), then hands the
models to the harness (``_harness.comparison.side_by_side``): evaluation against the unpruned fp32
model on the same inputs and, for latency tables, interleaved timing at 1 thread (run plan "share").
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from _harness import metrics
from _harness import onnxq_api as oq
from _harness.comparison import Settings, side_by_side
from _harness.timing import RunPlan, TimingSpec

REFERENCE = "fp32 (unpruned)"

Build = Callable[[], tuple[Any, dict[str, Any]]]  # -> (model, pass stats)


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"


# ---- subjects: a model, its inputs and how agreement is measured ------------------------------
@dataclass
class Subject:
    name: str
    raw: Any  # as loaded (for the one-pipeline quantization, which runs its own cleanup)
    base: Any  # after cleanup: the unpruned fp32 reference
    shapes: dict[str, list[int]]
    bench_feeds: dict[str, np.ndarray]
    eval_samples: list[dict[str, np.ndarray]]
    calib_samples: list[dict[str, np.ndarray]]
    kind: str  # "cnn" | "det" | "tfm"

    def metric(self) -> metrics.Metric:
        """Cosine and SQNR of the first output; CNN top-1 agreement; detector mask IoU (mean, min)."""
        parts: list[metrics.Metric] = [lambda: metrics.OutputAgreement(worst=False, top1_key="top1" if self.kind == "cnn" else None)]
        if self.kind == "det":
            parts.append(lambda: metrics.Renamed(metrics.MaskIoU(), {"value": "mask_iou", "worst": "mask_iou_min"}))
        return metrics.combine(*parts)


def make_cnn(cfg: argparse.Namespace) -> Subject:
    from models import build

    s = cfg.cnn_size
    raw = oq.load(build("cnn", width=cfg.cnn_width, input_size=s, blocks=cfg.cnn_blocks, num_classes=1000))
    rng = np.random.default_rng(0)

    def image() -> dict[str, np.ndarray]:  # smooth random images (normalised like ImageNet inputs), not white noise
        low = rng.standard_normal((1, 3, s // 8, s // 8)).astype(np.float32)
        img = np.repeat(np.repeat(low, 8, axis=2), 8, axis=3) + 0.3 * rng.standard_normal((1, 3, s, s)).astype(np.float32)
        return {"input": img.astype(np.float32)}

    evals = [image() for _ in range(cfg.eval_n)]
    calib = [image() for _ in range(cfg.calib_n)]
    return Subject(f"cnn w{cfg.cnn_width} {s}x{s} b{cfg.cnn_blocks}", raw, oq.cleanup(raw), {"input": [1, 3, s, s]}, evals[0], evals, calib, "cnn")


def make_det(cfg: argparse.Namespace) -> Subject:
    from ocr_data import det_samples

    from models import zoo

    s = cfg.det_size
    raw = oq.load(zoo.fetch("ppocr-det"))
    evals, _ = det_samples(cfg.det_eval_n, seed=0, size=s)
    calib, _ = det_samples(cfg.det_calib_n, seed=1, size=s)
    ev = [{"x": x} for x in evals]
    return Subject(f"ppocr-det {s}x{s}", raw, oq.cleanup(raw), {"x": [1, 3, s, s]}, ev[0], ev, [{"x": x} for x in calib], "det")


def make_tfm(cfg: argparse.Namespace) -> Subject:
    from models import build

    h, layers, vocab, seq = cfg.tfm_hidden, cfg.tfm_layers, cfg.tfm_vocab, cfg.tfm_seq
    raw = oq.load(build("transformer", hidden=h, heads=cfg.tfm_heads, layers=layers, vocab=vocab, max_seq=max(seq, 128)))
    rng = np.random.default_rng(0)

    def sample() -> dict[str, np.ndarray]:
        mask = np.ones((1, seq), dtype=np.int64)
        mask[0, int(seq * 0.9):] = 0  # some padding, as in a real batch
        return {"input_ids": rng.integers(0, vocab, (1, seq), dtype=np.int64), "attention_mask": mask}

    evals = [sample() for _ in range(cfg.tfm_eval_n)]
    shapes = {"input_ids": [1, seq], "attention_mask": [1, seq]}
    return Subject(f"transformer h{h} L{layers} seq{seq}", raw, oq.cleanup(raw), shapes, evals[0], evals, evals, "tfm")


# ---- measuring a set of variants of one subject -----------------------------------------------
def _facts(model: Any, sub: Subject) -> dict[str, Any]:
    data = oq.proto_bytes(model)
    return {"file_bytes": len(data), "deflate_bytes": len(zlib.compress(data, 6)), "params": oq.parameter_count(model),
            "flops": oq.flops(model, sub.shapes, sub.bench_feeds), "sparsity": oq.weight_sparsity(model)}


def _built(
    sub: Subject, variants: Sequence[tuple[str, Build]], describe: Callable[[Any, dict[str, Any]], dict[str, Any]] | None
) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Each variant built in turn (a failure is a row with ``error``), with its static figures."""
    for label, build in [(REFERENCE, lambda: (sub.base, {})), *variants]:
        row: dict[str, Any] = {"model": sub.name, "variant": label}
        t0 = time.perf_counter()
        try:
            model, stats = build()
        except Exception as e:  # noqa: BLE001 - a pass failing or refusing is a result
            row["error"] = f"pass failed: {error_text(e)}"
            print(f"  [{sub.name}] {label}: {row['error']}", flush=True)
            yield label, row, None
            continue
        row["build_s"] = round(time.perf_counter() - t0, 2)
        row.update(_facts(model, sub))
        row.update(describe(model, stats) if describe is not None else {})
        print(f"  [{sub.name}] {label}: built in {row['build_s']} s", flush=True)
        yield label, row, model


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k not in ("ok", "accuracy", "latency")}
    row.update(record.get("accuracy") or {})
    lat = (record.get("latency") or {}).get("1")
    if lat:
        row.update(latency_ms=lat["median_ms"], latency_p90_ms=lat["p90_ms"], runs=lat["runs"])
    return row


def measure(
    sub: Subject,
    variants: Sequence[tuple[str, Build]],
    cfg: argparse.Namespace,
    *,
    latency: bool,
    describe: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Build, evaluate against fp32 and (``latency``) time every variant; row 0 is the unpruned reference."""
    plan = RunPlan(cfg.bench_budget_s, cfg.min_runs, 200, rule="share", fixed=cfg.runs)
    timing = TimingSpec([1], plan, warmup=cfg.warmup, reuse_sessions=True) if latency else None
    res = side_by_side(
        _built(sub, variants, describe),
        reference=REFERENCE,
        feeds=sub.eval_samples,
        metric=sub.metric(),
        settings=Settings(None, None, eval_threads=1, timing=timing),
        where=f"[{sub.name}] ",
    )
    rows = [_flat(r) for r in res["variants"].values()]
    base = rows[0]
    for r in rows[1:]:
        if not r.get("error"):
            if base.get("flops") and r.get("flops"):
                r["flops_ratio"] = base["flops"] / r["flops"]
            r["file_ratio"] = base["file_bytes"] / r["file_bytes"]
            r["deflate_ratio"] = base["deflate_bytes"] / r["deflate_bytes"]
    if not base.get("error"):
        base.update(flops_ratio=1.0, file_ratio=1.0, deflate_ratio=1.0)
    for r in rows:
        if "latency_ms" in r and "latency_ms" in base:
            r["speedup"] = base["latency_ms"] / r["latency_ms"]
    return rows
