"""Comparing a candidate model with its reference on the same inputs (the maths behind ``onnxq eval``).

Metrics are accumulated sample by sample (streaming: memory does not grow with the data set):

- cosine similarity of the flattened outputs, per sample (mean and min reported) and overall,
- SQNR in dB: ``10 log10(Σ ref² / Σ (ref - cand)²)`` over all samples,
- max and mean absolute error,
- top-1 agreement along the last axis (each row's argmax), for outputs with a class axis,
- top-1 accuracy against labels, when labels are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationDataError, CalibrationError
from .session import make_session, run_session

__all__ = ["OutputMetrics", "EvalResult", "MetricAccumulator", "compare_models", "compare_outputs"]


@dataclass
class OutputMetrics:
    """Agreement of one output between reference and candidate."""

    name: str
    samples: int
    cosine: float
    cosine_mean: float
    cosine_min: float
    sqnr_db: float
    max_abs: float
    mean_abs: float
    top1_agreement: float | None = None
    top1_accuracy_reference: float | None = None
    top1_accuracy_candidate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """Per-output metrics plus bookkeeping."""

    outputs: list[OutputMetrics] = field(default_factory=list)
    samples: int = 0

    def output(self, name: str | None = None) -> OutputMetrics:
        """Metrics for ``name`` (or the first output)."""
        if name is None:
            return self.outputs[0]
        return next(o for o in self.outputs if o.name == name)

    def worst(self, metric: str = "cosine") -> float:
        """The worst value of ``metric`` over outputs (min for similarity, max for errors)."""
        values = [getattr(o, metric) for o in self.outputs if getattr(o, metric) is not None]
        if not values:
            return float("nan")
        return max(values) if metric in ("max_abs", "mean_abs") else min(values)

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "outputs": [o.as_dict() for o in self.outputs]}


class MetricAccumulator:
    """Streaming accumulator of the metrics for one output."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples = 0
        self.dot = 0.0
        self.ref_sq = 0.0
        self.cand_sq = 0.0
        self.noise_sq = 0.0
        self.max_abs = 0.0
        self.abs_sum = 0.0
        self.count = 0
        self.cosines: list[float] = []
        self.top1_match = 0
        self.top1_total = 0
        self.ref_correct = 0
        self.cand_correct = 0
        self.labelled = 0

    def update(self, ref: np.ndarray, cand: np.ndarray, label: Any = None) -> None:
        if ref.shape != cand.shape:
            raise CalibrationDataError(f"output '{self.name}': reference shape {ref.shape} differs from candidate shape {cand.shape}")
        r = np.asarray(ref, dtype=np.float64).ravel()
        c = np.asarray(cand, dtype=np.float64).ravel()
        diff = r - c
        self.samples += 1
        self.dot += float(r @ c)
        rs, cs = float(r @ r), float(c @ c)
        self.ref_sq += rs
        self.cand_sq += cs
        self.noise_sq += float(diff @ diff)
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        self.abs_sum += float(np.abs(diff).sum())
        self.count += diff.size
        self.cosines.append(_cos(float(r @ c), rs, cs))
        if ref.ndim >= 1 and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating):
            ra = np.argmax(ref.reshape(-1, ref.shape[-1]), axis=-1)
            ca = np.argmax(cand.reshape(-1, cand.shape[-1]), axis=-1)
            self.top1_match += int((ra == ca).sum())
            self.top1_total += ra.size
            if label is not None:
                lab = np.asarray(label).reshape(-1)
                if lab.size == ra.size:
                    self.ref_correct += int((ra == lab).sum())
                    self.cand_correct += int((ca == lab).sum())
                    self.labelled += ra.size

    def result(self) -> OutputMetrics:
        sqnr = float("inf") if self.noise_sq == 0 else 10 * np.log10(max(self.ref_sq, 1e-300) / self.noise_sq)
        return OutputMetrics(
            name=self.name,
            samples=self.samples,
            cosine=_cos(self.dot, self.ref_sq, self.cand_sq),
            cosine_mean=float(np.mean(self.cosines)) if self.cosines else float("nan"),
            cosine_min=float(np.min(self.cosines)) if self.cosines else float("nan"),
            sqnr_db=float(sqnr),
            max_abs=self.max_abs,
            mean_abs=self.abs_sum / max(self.count, 1),
            top1_agreement=self.top1_match / self.top1_total if self.top1_total else None,
            top1_accuracy_reference=self.ref_correct / self.labelled if self.labelled else None,
            top1_accuracy_candidate=self.cand_correct / self.labelled if self.labelled else None,
        )


def _cos(dot: float, a: float, b: float) -> float:
    if a == 0 and b == 0:
        return 1.0
    if a == 0 or b == 0:
        return 0.0
    return float(dot / np.sqrt(a * b))


def compare_outputs(names: Sequence[str], pairs: Iterable[tuple[Sequence[np.ndarray], Sequence[np.ndarray], Any]]) -> EvalResult:
    """Metrics from an iterable of ``(reference outputs, candidate outputs, label)``."""
    accs = [MetricAccumulator(n) for n in names]
    samples = 0
    for ref, cand, label in pairs:
        samples += 1
        for acc, r, c in zip(accs, ref, cand):
            acc.update(r, c, label)
    return EvalResult([a.result() for a in accs], samples)


def compare_models(
    reference: Any,
    candidate: Any,
    samples: Iterable[dict[str, np.ndarray]] | Iterable[tuple[dict[str, np.ndarray], Any]],
    *,
    threads: int = 1,
    with_labels: bool = False,
    reference_session: Any = None,
) -> EvalResult:
    """Run both models on the same samples and compare every output (matched by position).

    Args:
        reference / candidate: Model, ModelProto, bytes or path.
        samples: feeds (or ``(feeds, label)`` pairs when ``with_labels``).
        threads: onnxruntime intra-op threads.
        reference_session: reuse an existing session for the reference (loops evaluating many
            candidates against one reference).
    """
    ref_sess = reference_session or make_session(reference, threads=threads, where="reference model")
    cand_sess = make_session(candidate, threads=threads, where="candidate model")
    names = [o.name for o in ref_sess.get_outputs()]
    cand_names = [o.name for o in cand_sess.get_outputs()]
    if len(cand_names) != len(names):
        raise CalibrationDataError(f"reference has {len(names)} outputs {names}, candidate has {len(cand_names)} {cand_names}")

    ref_inputs = sorted(i.name for i in ref_sess.get_inputs())
    cand_inputs = sorted(i.name for i in cand_sess.get_inputs())
    if ref_inputs != cand_inputs:
        raise CalibrationDataError(f"reference inputs {ref_inputs} differ from candidate inputs {cand_inputs}")

    def run(which: str, sess: Any, feeds: dict[str, np.ndarray], index: int) -> list[np.ndarray]:
        try:
            return run_session(sess, feeds)
        except Exception as e:
            msg = " ".join(str(e).split())
            raise CalibrationError(f"{which} model: onnxruntime failed on sample #{index}: {msg}") from e

    def pairs() -> Iterable[tuple[list[np.ndarray], list[np.ndarray], Any]]:
        for index, item in enumerate(samples):
            feeds, label = item if with_labels and isinstance(item, tuple) else (item, None)
            yield run("reference", ref_sess, feeds, index), run("candidate", cand_sess, feeds, index), label

    return compare_outputs(names, pairs())
