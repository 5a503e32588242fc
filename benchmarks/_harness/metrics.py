"""Task metrics of a contender against fp32 on the same held-out inputs.

A *metric* is a factory of accumulators (one per contender). An accumulator is fed sample by sample
with the contender's outputs, fp32's outputs and the sample's label (``update(outs, refs, label)``)
and gives a JSON-ready dict at the end (``result()``):

======================  ================================================================  =====================
accumulator             what it measures                                                  result keys
======================  ================================================================  =====================
``OutputAgreement``     SQNR (dB) and cosine over all samples, per output (onnxq's        sqnr_db, cosine (+ top-1)
                        ``MetricAccumulator``); the worst output, or the first
``Top1Agreement``       argmax along the last axis equal to fp32's, per row               value, rows
``CharAccuracy``        recogniser: greedy CTC decoding, character accuracy vs the truth  value, exact_lines, lines
``ClsTop1``             direction classifier: top-1 vs the labels and vs fp32             value, agree_fp32, lines
``MaskIoU``             detector: IoU of the binarised text mask with fp32's, per page    value, worst, pages
``RowCosine``           cosine per row (one row per batch item), nearest-neighbour        cos_mean, cos_min, rows,
                        agreement and pair@1 of embeddings                                finite (+ nn_agree, pair_at_1)
======================  ================================================================  =====================

:func:`combine` runs several on the same outputs; :class:`Renamed` picks and renames keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from . import onnxq_api

__all__ = ["Accumulator", "CharAccuracy", "ClsTop1", "MaskIoU", "Metric", "OutputAgreement", "Renamed", "RowCosine",
           "Top1Agreement", "combine"]

Outputs = Sequence[np.ndarray]


class Accumulator(Protocol):
    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None: ...

    def result(self) -> dict[str, Any]: ...


#: A fresh accumulator per contender.
Metric = Callable[[], Accumulator]


class OutputAgreement:
    """SQNR and cosine of each output over all samples: the worst output's (``worst``) or the first's.

    ``top1_key`` adds the first output's top-1 agreement along its last axis under that key.
    """

    def __init__(self, worst: bool = True, top1_key: str | None = None) -> None:
        self.worst, self.top1_key = worst, top1_key
        self.accs: list[Any] | None = None

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        count = len(refs) if self.worst else 1
        if self.accs is None:
            self.accs = [onnxq_api.output_accumulator(f"output {i}") for i in range(count)]
        for acc, r, c in zip(self.accs, refs[:count], outs[:count]):
            acc.update(r, c)

    def result(self) -> dict[str, Any]:
        metrics = [a.result() for a in self.accs or []]
        if not metrics:
            return {}
        out = {"sqnr_db": min(m.sqnr_db for m in metrics), "cosine": min(m.cosine for m in metrics)}
        if self.top1_key:
            out[self.top1_key] = metrics[0].top1_agreement
        return out


class Top1Agreement:
    """Rows (all axes but the last) whose argmax equals fp32's, on the first output."""

    def __init__(self) -> None:
        self.agree = self.total = 0

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        out, ref = outs[0], refs[0]
        arg, ref_arg = out.reshape(-1, out.shape[-1]).argmax(1), ref.reshape(-1, ref.shape[-1]).argmax(1)
        self.agree += int((arg == ref_arg).sum())
        self.total += arg.size

    def result(self) -> dict[str, Any]:
        return {"value": self.agree / max(self.total, 1), "rows": self.total}


class CharAccuracy:
    """PP-OCR recogniser: greedy CTC decoding with ``dictionary``; labels are the true lines."""

    def __init__(self, dictionary: Sequence[str]) -> None:
        self.dictionary = dictionary
        self.pred: list[str] = []
        self.truth: list[str] = []

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        import ocr_data

        self.pred.extend(ocr_data.rec_decode(outs[0], self.dictionary))
        self.truth.extend(label)

    def result(self) -> dict[str, Any]:
        import ocr_data

        exact = float(np.mean([p == t for p, t in zip(self.pred, self.truth)])) if self.truth else float("nan")
        return {"value": ocr_data.char_accuracy(self.pred, self.truth), "exact_lines": exact, "lines": len(self.truth)}


class ClsTop1:
    """PP-OCR direction classifier: top-1 against the labels, and agreement with fp32's top-1."""

    def __init__(self) -> None:
        self.correct = self.agree = self.total = 0

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        arg, ref_arg = outs[0].reshape(len(label), -1).argmax(1), refs[0].reshape(len(label), -1).argmax(1)
        self.correct += int((arg == np.asarray(label)).sum())
        self.agree += int((arg == ref_arg).sum())
        self.total += len(label)

    def result(self) -> dict[str, Any]:
        return {"value": self.correct / max(self.total, 1), "agree_fp32": self.agree / max(self.total, 1), "lines": self.total}


class MaskIoU:
    """PP-OCR detector: IoU of each page's binarised (thresh 0.3) text mask with fp32's."""

    def __init__(self) -> None:
        self.ious: list[float] = []

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        import ocr_data

        for a, b in zip(ocr_data.det_mask(outs[0]), ocr_data.det_mask(refs[0])):
            self.ious.append(ocr_data.mask_iou(a, b))

    def result(self) -> dict[str, Any]:
        return {"value": float(np.mean(self.ious)), "worst": float(np.min(self.ious)), "pages": len(self.ious)}


def _rows(outputs: Sequence[np.ndarray]) -> np.ndarray:
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


class RowCosine:
    """Cosine per row of the first output (mean, min); with ``neighbours`` also, over all rows,
    nearest-neighbour agreement with fp32 and pair@1 (rows 2k and 2k+1 are paraphrase partners)."""

    def __init__(self, neighbours: bool = False) -> None:
        self.neighbours = neighbours
        self.outs: list[np.ndarray] = []
        self.refs: list[np.ndarray] = []

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        self.outs.append(outs[0])
        self.refs.append(refs[0])

    def result(self) -> dict[str, Any]:
        ref, out = _rows(self.refs), _rows(self.outs)
        if out.shape != ref.shape:
            return {"error": f"output shape {out.shape} != fp32 {ref.shape}"}
        cos = _cosines(ref, out)
        acc: dict[str, Any] = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "rows": len(cos),
                               "finite": bool(np.isfinite(out).all())}
        if self.neighbours:
            nn = _nearest(out)
            acc["nn_agree"] = float((nn == _nearest(ref)).mean())
            acc["pair_at_1"] = float((nn == (np.arange(len(ref)) ^ 1)).mean())
        return acc


class Renamed:
    """Another accumulator's result with only the keys of ``names`` (old -> new)."""

    def __init__(self, inner: Accumulator, names: Mapping[str, str]) -> None:
        self.inner, self.names = inner, dict(names)

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        self.inner.update(outs, refs, label)

    def result(self) -> dict[str, Any]:
        res = self.inner.result()
        return {new: res.get(old) for old, new in self.names.items()}


class _Combined:
    def __init__(self, parts: Sequence[Metric], nested: Mapping[str, Metric]) -> None:
        self.parts = [p() for p in parts]
        self.nested = {k: m() for k, m in nested.items()}

    def update(self, outs: Outputs, refs: Outputs, label: Any) -> None:
        for acc in [*self.parts, *self.nested.values()]:
            acc.update(outs, refs, label)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for acc in self.parts:
            out.update(acc.result())
        out.update({k: acc.result() for k, acc in self.nested.items()})
        return out


def combine(*parts: Metric, **nested: Metric) -> Metric:
    """One metric from several on the same outputs: ``parts`` merged, each of ``nested`` under its key."""
    return lambda: _Combined(parts, nested)
