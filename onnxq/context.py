"""What the passes of one pipeline run share: typed slots, skip records and notes.

A pass never reaches into a string-keyed bag. It declares the slots it ``reads`` and ``writes``
(names of :class:`PassContext` fields, checked when the pass class is registered) and the pass
manager validates a whole pipeline against those declarations before anything runs, so a recipe
that orders passes wrongly fails at once with a sentence ("tune-latency reads 'plan', which no
earlier step writes") instead of deep inside a pass.

Every node a pass leaves as it was is recorded once, in one shape: :class:`Skip` (node, op, reason,
the pass, and what the node stayed as). The conversion report's "nodes left float" is built from
these records and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

    from .calibration.collector import CalibrationStats
    from .calibration.ranges import RangeSet
    from .plan import QuantizationConfig, QuantPlan, TuningRecord

__all__ = ["PassContext", "Skip", "SLOTS", "Need", "Kept", "slot_names", "ChannelGaussian"]

#: What a skipped node stayed as: left in float by a quantization pass ("float"), quantized but
#: kept in QDQ form because no QLinear rule applied ("qdq"), or untouched by a rewrite that did not
#: apply ("unchanged": a BatchNormalization that could not fold).
Kept = Literal["float", "qdq", "unchanged"]


@dataclass(frozen=True)
class Skip:
    """A node a pass left as it was, and why.

    Attributes:
        node: node name (or its first output's name when the node is unnamed).
        op: op type.
        reason: one sentence a user can act on ("weight has fewer than 256 elements ...").
        pass_name: the pass that recorded it.
        kept: what the node stayed as (see :data:`Kept`).
    """

    node: str
    op: str
    reason: str
    pass_name: str = ""
    kept: Kept = "float"

    def as_dict(self) -> dict[str, str]:
        return {"node": self.node, "op": self.op, "reason": self.reason, "pass": self.pass_name, "kept": self.kept}


@dataclass(frozen=True)
class ChannelGaussian:
    """Per-channel ``N(mean, std²)`` of a node's output, read off the BatchNormalization folded into it.

    An inference BatchNormalization outputs ``gamma · x̂ + beta`` with ``x̂`` normalized, so after
    folding, its producer's output channel ``c`` has mean ``beta[c]`` and standard deviation
    ``|gamma[c]|`` (as far as the running statistics describe the data). Data-free bias correction
    and high-bias absorption use it; a pass that rescales channels updates it.
    """

    mean: np.ndarray
    std: np.ndarray


#: A declared need: one slot name, or a tuple of alternatives (any one of them suffices).
Need = str | tuple[str, ...]


@dataclass
class PassContext:
    """State shared by the passes of one pipeline run.

    Attributes:
        calibration_data: sample feeds (``{input name: array}``) that can be iterated more than once
            (calibration, smoothing and tuning each read them); see
            :func:`onnxq.calibration.collector.replayable`.
        ranges: activation ranges from calibration or a ranges file.
        calibration_stats: what the calibration run did (for the report).
        quant_config: the static-quantization options the plan was built with.
        plan: the static-quantization plan (written by annotate, refined by tuning, read by insert-qdq).
        tuning: the latency/accuracy tuner's measured steps.
        channel_stats: per-channel activation statistics for data-driven channel pruning.
        batchnorm_stats: ``{node name: ChannelGaussian}`` for nodes a BatchNormalization was folded
            into, recorded before folding (``record-batchnorm-stats``).
        skips: every node a pass left as it was (one record shape for all passes).
        notes: sentences for the report (a skipped step, an opset upgrade, a reverted rewrite).
        progress: draw progress bars (on a terminal only).
        current_pass: the running pass's name, set by the pass manager (stamped on skip records).
    """

    calibration_data: Iterable[Mapping[str, np.ndarray]] | None = None
    ranges: RangeSet | None = None
    calibration_stats: CalibrationStats | None = None
    quant_config: QuantizationConfig | None = None
    plan: QuantPlan | None = None
    tuning: TuningRecord | None = None
    channel_stats: Mapping[str, Mapping[str, Any]] | None = None
    batchnorm_stats: dict[str, ChannelGaussian] | None = None
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    progress: bool = False
    current_pass: str = ""
    _recorded: set[Skip] = field(default_factory=set, repr=False, compare=False)

    def skip(self, node: str, op: str, reason: str, *, kept: Kept = "float") -> None:
        """Record that ``node`` was left as it was, and why (a repeated record is kept once)."""
        record = Skip(node, op, reason, self.current_pass, kept)
        if record not in self._recorded:
            self._recorded.add(record)
            self.skips.append(record)

    def skipped(self, kept: Kept = "float") -> list[Skip]:
        """The skip records of one kind, in the order they were made."""
        return [s for s in self.skips if s.kept == kept]

    def note(self, text: str) -> None:
        """Add a sentence to the report's notes (once)."""
        if text not in self.notes:
            self.notes.append(text)

    def filled(self) -> set[str]:
        """Names of the slots that hold a value."""
        return {name for name in SLOTS if getattr(self, name) is not None}


def slot_names() -> tuple[str, ...]:
    """The data slots of :class:`PassContext`, in declaration order."""
    bookkeeping = {"skips", "notes", "progress", "current_pass"}
    return tuple(f.name for f in fields(PassContext) if f.name not in bookkeeping and not f.name.startswith("_"))


#: Names a pass may declare in ``reads`` / ``writes``.
SLOTS: tuple[str, ...] = slot_names()
