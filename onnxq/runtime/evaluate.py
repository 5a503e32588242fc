"""Comparing a candidate model with its reference on the same inputs (the maths behind ``onnxq eval``).

Metrics are accumulated sample by sample (streaming: memory does not grow with the data set), all
from the registry of :mod:`onnxq.metrics`:

- cosine similarity of the flattened outputs, per sample (mean and min reported) and overall,
- SQNR in dB: ``10 log10(Σ ref² / Σ (ref - cand)²)`` over all samples,
- max and mean absolute error,
- top-1 agreement along the last axis (each row's argmax), for outputs with a class axis,
- top-1 accuracy against labels, when labels are given,
- any further registry metric asked for (``metrics``: a spec such as ``worst_slice_sqnr:axis=1``,
  a :class:`~onnxq.metrics.Metric` or a ``fn(ref, cand) -> float``), reported under its spec,
- and guards (:class:`~onnxq.metrics.Guard`: a metric with a bar), reported with their verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationDataError, CalibrationError, ConfigError
from ..metrics import Guard, Metric, cosine_of, make_metric
from .session import make_session, run_session

__all__ = ["OutputMetrics", "EvalResult", "MetricAccumulator", "compare_models", "compare_outputs", "metrics_per_output", "STANDARD"]


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
    #: further registry metrics asked for, by spec
    metrics: dict[str, float | None] = field(default_factory=dict)
    #: guard records (metric, threshold, value, meets, why) — see :meth:`onnxq.metrics.Guard.record`
    guards: list[dict[str, Any]] = field(default_factory=list)

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


#: The registry metrics every evaluation reports, by OutputMetrics field.
STANDARD = {"cosine": "cosine", "sqnr_db": "sqnr", "max_abs": "max_abs", "mean_abs": "mean_abs", "top1_agreement": "top1"}


class MetricAccumulator:
    """Streaming accumulator of the metrics for one output: the standard ones, ``metrics`` and ``guards``."""

    def __init__(self, name: str, metrics: Sequence[Metric] = (), guards: Sequence[Guard] = ()) -> None:
        self.name = name
        self.samples = 0
        self.standard = {field_: make_metric(spec).accumulator() for field_, spec in STANDARD.items()}
        self.extra = [(m, m.accumulator()) for m in metrics]
        self.guards = [(g, g.metric.accumulator()) for g in guards]
        self.cosines: list[float] = []  # per-sample cosines (one scalar per sample)
        self.ref_correct = 0
        self.cand_correct = 0
        self.labelled = 0

    def update(self, ref: np.ndarray, cand: np.ndarray, label: Any = None) -> None:
        if ref.shape != cand.shape:
            raise CalibrationDataError(f"output '{self.name}': reference shape {ref.shape} differs from candidate shape {cand.shape}")
        for acc in self.standard.values():
            acc.update(ref, cand)
        for acc in [a for _, a in self.extra] + [a for _, a in self.guards]:
            try:
                acc.update(ref, cand)
            except ConfigError as e:
                raise ConfigError(f"output '{self.name}', sample #{self.samples}: {e}") from e
        self.samples += 1
        r, c = np.asarray(ref, dtype=np.float64).ravel(), np.asarray(cand, dtype=np.float64).ravel()
        self.cosines.append(cosine_of(float(r @ c), float(r @ r), float(c @ c)))
        if label is not None and ref.ndim >= 1 and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating):
            ra = np.argmax(ref.reshape(-1, ref.shape[-1]), axis=-1)
            ca = np.argmax(cand.reshape(-1, cand.shape[-1]), axis=-1)
            lab = np.asarray(label).reshape(-1)
            if lab.size == ra.size:
                self.ref_correct += int((ra == lab).sum())
                self.cand_correct += int((ca == lab).sum())
                self.labelled += ra.size

    def result(self) -> OutputMetrics:
        std = {field_: acc.result() for field_, acc in self.standard.items()}
        return OutputMetrics(
            name=self.name,
            samples=self.samples,
            cosine=float(std["cosine"] if std["cosine"] is not None else float("nan")),
            cosine_mean=float(np.mean(self.cosines)) if self.cosines else float("nan"),
            cosine_min=float(np.min(self.cosines)) if self.cosines else float("nan"),
            sqnr_db=float(std["sqnr_db"] if std["sqnr_db"] is not None else float("nan")),
            max_abs=float(std["max_abs"] or 0.0),
            mean_abs=float(std["mean_abs"] or 0.0),
            top1_agreement=std["top1_agreement"],
            top1_accuracy_reference=self.ref_correct / self.labelled if self.labelled else None,
            top1_accuracy_candidate=self.cand_correct / self.labelled if self.labelled else None,
            metrics={m.spec: acc.result() for m, acc in self.extra},
            guards=[g.record(acc.result(), acc.detail() if hasattr(acc, "detail") else "") for g, acc in self.guards],
        )


def compare_outputs(
    names: Sequence[str],
    pairs: Iterable[tuple[Sequence[np.ndarray], Sequence[np.ndarray], Any]],
    *,
    metrics: Mapping[str, Sequence[Metric]] | None = None,
    guards: Sequence[Guard] = (),
) -> EvalResult:
    """Metrics from an iterable of ``(reference outputs, candidate outputs, label)``.

    Args:
        metrics: further metrics per output name (beyond the standard ones).
        guards: guards to evaluate; each names its output.
    """
    accs = [MetricAccumulator(n, (metrics or {}).get(n, ()), [g for g in guards if g.output == n]) for n in names]
    samples = 0
    for ref, cand, label in pairs:
        samples += 1
        for acc, r, c in zip(accs, ref, cand):
            acc.update(r, c, label)
    return EvalResult([a.result() for a in accs], samples)


def metrics_per_output(names: Sequence[str], specs: Sequence[str | Metric | Callable[..., Any]]) -> dict[str, list[Metric]]:
    """Resolve metric specs onto outputs: ``SPEC@OUTPUT`` for one output, a bare spec (or a
    :class:`Metric` / function) for all of them.

    Raises:
        ConfigError: an unknown metric, or an output the model does not have (the message lists them).
    """
    out: dict[str, list[Metric]] = {n: [] for n in names}
    for spec in specs:
        target = None
        if isinstance(spec, str):
            spec, _, target = spec.partition("@")
        metric = make_metric(spec)
        if target and target not in out:
            raise ConfigError(f"metric '{metric.spec}@{target}': no output '{target}'; outputs: {', '.join(names)}")
        for name in [target] if target else names:
            out[name].append(metric)
    return out


def compare_models(
    reference: Any,
    candidate: Any,
    samples: Iterable[dict[str, np.ndarray]] | Iterable[tuple[dict[str, np.ndarray], Any]],
    *,
    threads: int = 1,
    with_labels: bool = False,
    reference_session: Any = None,
    metrics: Sequence[str | Metric | Callable[..., Any]] = (),
    guards: Sequence[Guard] = (),
) -> EvalResult:
    """Run both models on the same samples and compare every output (matched by position).

    Args:
        reference / candidate: Model, ModelProto, bytes or path.
        samples: feeds (or ``(feeds, label)`` pairs when ``with_labels``).
        threads: onnxruntime intra-op threads.
        reference_session: reuse an existing session for the reference (loops evaluating many
            candidates against one reference).
        metrics: further metrics, reported under their spec (see :func:`metrics_per_output`).
        guards: guards to evaluate (e.g. :func:`onnxq.metrics.choose_guards` of the reference).

    Raises:
        ConfigError: an unknown metric or output, or a metric function that fails.
    """
    ref_sess = reference_session or make_session(reference, threads=threads, where="reference model")
    cand_sess = make_session(candidate, threads=threads, where="candidate model")
    names = [o.name for o in ref_sess.get_outputs()]
    per_output = metrics_per_output(names, metrics)
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

    return compare_outputs(names, pairs(), metrics=per_output, guards=guards)
