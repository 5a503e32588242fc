"""What bench_calibration measures, in its isolated children, and how their ranges are compared.

Children (``run_isolated("_calibration_runs:child_...")``; imports happen inside them):
``child_prepare`` writes a model's file and samples, ``child_onnxq`` runs onnxq's ``collect_ranges``
and ``child_incumbent`` onnxruntime's calibrator on the same lazily read :class:`Samples`, each timed
from model load to ranges in hand (imports excluded). :func:`agreement` compares the two range sets
on the tensors both calibrated (see bench_calibration's docstring).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REC_BATCH, REC_WIDTH, DET_SIZE, SEQ = 6, 320, 736, 128
TRANSFORMER = {"hidden": 384, "heads": 12, "layers": 6, "vocab": 30522}
TRANSFORMER_SMALL = {"hidden": 64, "heads": 4, "layers": 1, "vocab": 1000}
SEED = 20240
WITHIN = 0.05  # histogram methods: a tensor "agrees" when its quantized range width is within 5%


# ---- children ----------------------------------------------------------------------------------
class Samples:
    """Re-iterable, lazy sample source: each iteration yields fresh feeds, nothing is kept.

    ``spec`` is ``{"kind": "npy", "files": [...], "input": "x"}`` or ``{"kind": "transformer", "n", "seq", "vocab", "seed"}``.
    Re-iterable (not a generator) so that onnxq re-reads rather than caches when it splits tensors
    into several groups, and both tools see bit-identical arrays.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)

    def __len__(self) -> int:
        return len(self.spec["files"]) if self.spec["kind"] == "npy" else int(self.spec["n"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import numpy as np

        if self.spec["kind"] == "npy":
            name = self.spec.get("input", "x")
            for path in self.spec["files"]:
                yield {name: np.load(path)}
            return
        seq, vocab, seed = int(self.spec["seq"]), int(self.spec["vocab"]), int(self.spec["seed"])
        low = min(1000, vocab // 2)
        for i in range(len(self)):
            rng = np.random.default_rng([seed, i])
            length = int(rng.integers(max(2, seq // 4), seq + 1))
            ids = np.zeros((1, seq), dtype=np.int64)
            ids[0, 1 : length - 1] = rng.integers(low, vocab, size=length - 2)
            ids[0, 0], ids[0, length - 1] = min(101, vocab - 1), min(102, vocab - 1)
            mask = np.zeros((1, seq), dtype=np.int64)
            mask[0, :length] = 1
            yield {"input_ids": ids, "attention_mask": mask}


def child_prepare(model: str, n: int, outdir: str, seed: int = SEED, small: bool = False) -> dict[str, Any]:
    """Write the model file and/or the sample files a model's runs need; returns their paths."""
    import numpy as np

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if model == "transformer":
        import onnx

        from models import build

        cfg = TRANSFORMER_SMALL if small else TRANSFORMER
        path = out / ("transformer-small.onnx" if small else "transformer.onnx")
        onnx.save(build("transformer", **cfg), str(path))
        return {"model_path": str(path), "samples": {"kind": "transformer", "n": n, "seq": SEQ, "vocab": cfg["vocab"], "seed": seed}}
    import ocr_data

    from models.zoo import ZOO, fetch

    files = []
    for i in range(n):  # one at a time, so at most one sample is ever held
        if model == "rec":
            x = ocr_data.rec_samples(1, seed=seed + i, width=REC_WIDTH, batch=REC_BATCH)[0][0]
        else:
            x = ocr_data.det_samples(1, seed=seed + i, size=DET_SIZE)[0][0]
        path = out / f"{model}-{i:05d}.npy"
        np.save(path, np.ascontiguousarray(x, dtype=np.float32))
        files.append(str(path))
    shape = list(np.load(files[0], mmap_mode="r").shape) if files else []
    entry = ZOO[f"ppocr-{model}"]
    return {"model_path": str(fetch(entry.name)), "samples": {"kind": "npy", "files": files, "input": entry.input_name}, "shape": shape}


def child_onnxq(model_path: str, samples: dict[str, Any], method: str, options: dict[str, Any], keep_ranges: bool = True) -> dict[str, Any]:
    """onnxq: ``collect_ranges`` on the model as loaded."""
    from _harness import onnxq_api

    load, collect_ranges = onnxq_api.calibration_api()  # imports before the clock starts
    start = time.perf_counter()
    model = load(model_path)
    loaded = time.perf_counter()
    ranges, stats = collect_ranges(model, Samples(samples), method, options)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "load_s": loaded - start, **onnxq_api.calibration_summary(ranges, stats, keep_ranges)}


def child_incumbent(model_path: str, samples: dict[str, Any], method: str, options: dict[str, Any], workdir: str) -> dict[str, Any]:
    """onnxruntime: ``create_calibrator`` + ``collect_data`` + ``compute_data``."""
    from _harness import incumbent

    return incumbent.calibrate(model_path, Samples(samples), method, options, workdir)


# ---- range agreement ---------------------------------------------------------------------------
def _minmax_agreement(common: Sequence[str], ours: Mapping[str, Sequence[float]], theirs: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    diffs, nonfinite, identical = [], 0, 0
    worst: list[tuple[float, str]] = []
    for name in common:
        (a0, a1), (b0, b1) = ours[name], theirs[name]
        identical += a0 == b0 and a1 == b1
        if all(math.isfinite(v) for v in (a0, a1, b0, b1)):
            d = max(abs(a0 - b0), abs(a1 - b1))
            diffs.append(d)
            worst.append((d, name))
        elif not (a0 == b0 and a1 == b1):
            nonfinite += 1
    worst.sort(reverse=True)
    return {"max_abs_diff": max(diffs) if diffs else 0.0, "identical": identical, "nonfinite_mismatch": nonfinite,
            "all_identical": identical == len(common),
            "worst": [{"tensor": n, "abs_diff": d, "onnxq": ours[n], "incumbent": theirs[n]} for d, n in worst[:5] if d > 0]}


def _width_agreement(common: Sequence[str], ours: Mapping[str, Sequence[float]], theirs: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    rel: list[tuple[float, str]] = []
    for name in common:
        wa, wb = _quant_width(ours[name]), _quant_width(theirs[name])
        if not (math.isfinite(wa) and math.isfinite(wb)):
            r = 0.0 if wa == wb else math.inf
        elif wa == wb:
            r = 0.0
        else:
            r = abs(wa - wb) / max(abs(wb), abs(wa), 1e-30) if wb == 0 else abs(wa - wb) / abs(wb)
        rel.append((r, name))
    values = [r for r, _ in rel]
    rel.sort(reverse=True)
    return {"median_rel_width_diff": statistics.median(values), "within_5pct": sum(r <= WITHIN for r in values) / len(values),
            "worst": [{"tensor": n, "rel_width_diff": r, "onnxq": ours[n], "incumbent": theirs[n]} for r, n in rel[:5]]}


def agreement(method: str, ours: Mapping[str, Sequence[float]], theirs: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Compare onnxq's ranges with the incumbent's on the tensors both calibrated."""
    common = sorted(set(ours) & set(theirs))
    out: dict[str, Any] = {"common": len(common), "only_onnxq": len(set(ours) - set(theirs)), "only_incumbent": len(set(theirs) - set(ours))}
    if common:
        out.update((_minmax_agreement if method == "minmax" else _width_agreement)(common, ours, theirs))
    return out


def _quant_width(r: Sequence[float]) -> float:
    """Width of the range a quantizer uses: ``[min(lo, 0), max(hi, 0)]`` (both tools' quantizers widen so).

    onnxq's histogram methods already return ``min = 0`` for non-negative data while the incumbent
    returns the clipped data minimum (e.g. [0.36, 1.39] for a positive tensor); widening both to
    include zero compares what quantization actually gets.
    """
    return max(r[1], 0.0) - min(r[0], 0.0)
