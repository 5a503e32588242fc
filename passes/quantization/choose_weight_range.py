"""``choose-weight-range``: 8-bit or 7-bit weights per node, by what this CPU's int8 kernels actually do.

On x86 CPUs without VNNI, onnxruntime's u8·s8 kernels add two adjacent products into a saturating
int16 (:func:`onnxq.runtime.kernels.int8_products_saturate`). ``annotate-quantization``'s automatic
answer is global: 7-bit weights (``reduce_range``) on every layer. That costs every layer one bit of
weight resolution — 2 to 6 dB of output SQNR on the builders — while most layers never saturate on
real activations: per-tensor weights rarely come near the pair-sum bound (2·255·w ≤ 32,767), and
per-channel ones do only on some layers. This pass replaces the global answer with a per-node one,
measured on the calibration samples:

1. **find the saturating nodes.** The plan is materialized with 8-bit weights on a copy of the model
   (after ``close-float-islands``' rewrites, so the graph is the one that ships), every QuantizeLinear
   output is exposed, and the first ``samples`` calibration inputs run through onnxruntime twice:
   with its int8 kernels (full optimization) and with exact Q/DQ arithmetic (optimizations off). A
   weighted node saturates when its quantized inputs agree in both runs (no code differs by more than
   one: the kernels' requantization rounds differently) and its quantized output does not (a code
   differs by ``min_code_error`` or more). Those nodes get 7-bit weights and the search repeats, since
   nodes downstream of a fixed one now see agreeing inputs, until a round finds nothing new or
   ``max_rounds`` is spent.
2. **score four plans** against the float model on the next ``samples`` calibration inputs (held out
   from the search, so that a plan fitted to its samples must hold on others), with onnxruntime's kernels:
   every weight at 7 bits (annotate's answer), every weight at 8 bits, 7 bits on the saturating nodes
   only, and 7 bits on every node not shown clean (the undecided ones: no Q output to compare, or
   inputs that never agreed). Each plan is scored on both sample sets (search and held-out); one
   replaces all-7-bit only when it is better by ``min_gain_db`` on both (the noisier a model's SQNR
   over a few samples, the more this keeps annotate's safe answer); ties keep the earlier plan.

The choice is written where every later pass reads it: the plan's weights, and ``quant_config``
(``reduce_range`` automatic again and ``reduce_range_nodes`` naming the 7-bit nodes), so ``tune-latency`` and
``mixed-precision``, which rebuild the plan from the config, keep it. Only weights annotate put on the
7-bit grid are candidates: an explicit ``--no-reduce-range`` leaves nothing to decide, and the
conversion pipeline adds this pass only when ``reduce_range`` is automatic and the target runs on
onnxruntime. Decisions are numeric (integer kernels, fixed samples), so they repeat on the same CPU.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.calibration.expose import expose_tensors
from onnxq.errors import ConfigError
from onnxq.ir import Model, Node
from onnxq.metrics import sqnr_of
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.plan import QuantPlan
from onnxq.runtime.kernels import REDUCE_RANGE_NOTE, int8_products_saturate
from onnxq.runtime.session import make_session

from .tune_latency import shipped_candidate

__all__ = ["ChooseWeightRange", "ChooseWeightRangeConfig", "saturating_nodes", "with_narrow_weights"]

Feed = Mapping[str, np.ndarray]
#: Ops between a weighted node and the QuantizeLinear of its output that onnxruntime fuses into the node.
_FUSED_ACTIVATIONS = ("Relu", "Clip")
#: The plans scored, in tie-break order (annotate's answer first: a tie changes nothing).
ALL_7BIT, ALL_8BIT, SATURATING_7BIT, UNPROVEN_7BIT = "7-bit", "8-bit", "7-bit where saturating", "7-bit unless shown clean"


@dataclass(frozen=True)
class ChooseWeightRangeConfig(PassConfig):
    """Options.

    Attributes:
        samples: calibration inputs the saturation search runs on (the first ones); the plans are
            scored on the next ``samples`` (on the same ones when there are no more), so a plan
            fitted to the search's samples has to hold on others to win.
        max_rounds: saturation-search rounds (each: one materialized model, two sessions).
        min_code_error: an output code this far from exact arithmetic is a saturation, not rounding.
        min_gain_db: how much a plan must beat all-7-bit by on *both* sample sets to replace it
            (SQNR of a few samples is noisy; a gain that shows on one set only is not taken).
    """

    samples: int = 8
    max_rounds: int = 6
    min_code_error: int = 2
    min_gain_db: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 1 or self.max_rounds < 1 or self.min_code_error < 2:
            raise ConfigError(
                "choose-weight-range: samples and max_rounds must be >= 1 and min_code_error >= 2, "
                f"got {self.samples}, {self.max_rounds}, {self.min_code_error}"
            )


def with_narrow_weights(plan: QuantPlan, candidates: set[str], narrow: set[str]) -> QuantPlan:
    """``plan`` with the weights of ``candidates`` nodes on the 8-bit grid, except those of ``narrow`` (7-bit)."""
    weights = [dataclasses.replace(w, reduce_range=w.node in narrow) if w.kind == "weight" and w.node in candidates else w for w in plan.weights]
    return dataclasses.replace(plan, weights=weights)


def _is_dequantized_constant(tensor: ir.Tensor) -> bool:
    """A weight or bias: a DequantizeLinear of a constant (or a float constant)."""
    dq = ir.producer(tensor)
    return ir.is_constant(tensor) or (dq is not None and dq.op == "DequantizeLinear" and ir.is_constant(dq.inputs[0]))


def _quantized_input(tensor: ir.Tensor) -> str | None:
    """The QuantizeLinear output behind an activation's DequantizeLinear, or None (a float activation)."""
    dq = ir.producer(tensor)
    if dq is None or dq.op != "DequantizeLinear":
        return None
    q = ir.producer(dq.inputs[0])
    return dq.inputs[0].name if q is not None and q.op == "QuantizeLinear" else None


def _quantized_output(node: Node) -> str | None:
    """The QuantizeLinear output a weighted node's result reaches, directly or through a fused Relu/Clip."""
    tensor = node.outputs[0]
    for _ in range(2):
        users = ir.consumers(tensor)
        if len(users) != 1:
            return None
        user = users[0]
        if user.op == "QuantizeLinear":
            return user.outputs[0].name
        if user.op not in _FUSED_ACTIVATIONS:
            return None
        tensor = user.outputs[0]
    return None


def _probes(model: Model, nodes: Iterable[str]) -> dict[str, tuple[list[str], str]]:
    """Node → (its quantized activation inputs, its quantized output), for the main-graph nodes that have both."""
    wanted, found = set(nodes), {}
    for node in model.graph.nodes:
        if node.name not in wanted:
            continue
        inputs = [_quantized_input(t) for t in node.inputs if t is not None and t.name and not _is_dequantized_constant(t)]
        output = _quantized_output(node)
        if output is not None and inputs and all(i is not None for i in inputs):
            found[node.name] = ([i for i in inputs if i is not None], output)
    return found


def _code_errors(model: Model, tensors: Sequence[str], samples: Sequence[Feed]) -> dict[str, int]:
    """Largest code difference of each quantized tensor between onnxruntime's kernels and exact Q/DQ arithmetic."""
    exposed = expose_tensors(model, list(tensors))
    kernels = make_session(exposed.model, threads=1, where=f"{model.source} (int8 kernels)")
    exact = make_session(exposed.model, threads=1, optimization="disable", where=f"{model.source} (exact Q/DQ)")
    names = [o.name for o in kernels.get_outputs()]
    errors: dict[str, int] = {}
    for feed in samples:
        for name, got, want in zip(names, kernels.run(None, dict(feed)), exact.run(None, dict(feed))):
            tensor = exposed.output_to_tensor.get(name)
            if tensor is not None and np.asarray(got).size:
                diff = int(np.abs(np.asarray(got, np.int64) - np.asarray(want, np.int64)).max())
                errors[tensor] = max(errors.get(tensor, 0), diff)
    return errors


@dataclass(frozen=True)
class SaturationSearch:
    """What the search found: nodes whose 8-bit products saturate, nodes shown not to, and the rounds spent.

    The rest of the candidates stayed undecided: no Q output to compare, or inputs that never agreed.
    """

    saturating: frozenset[str]
    clean: frozenset[str]
    rounds: int


def saturating_nodes(
    model: Model, plan: QuantPlan, ranges: Mapping[str, Any], candidates: set[str], samples: Sequence[Feed], cfg: ChooseWeightRangeConfig
) -> SaturationSearch:
    """Step 1 of the module docstring over the ``candidates`` nodes."""
    narrow: set[str] = set()
    shown_clean: set[str] = set()
    rounds = 0
    while rounds < cfg.max_rounds:
        rounds += 1
        variant = shipped_candidate(model, with_narrow_weights(plan, candidates, narrow), ranges)
        probes = _probes(variant, candidates - narrow - shown_clean)
        if not probes:
            break
        errors = _code_errors(variant, sorted({t for ins, out in probes.values() for t in [*ins, out]}), samples)
        decided = {n for n, (ins, _) in probes.items() if all(errors.get(t, 0) <= 1 for t in ins)}
        found = {n for n in decided if errors.get(probes[n][1], 0) >= cfg.min_code_error}
        narrow |= found
        shown_clean |= decided - found
        if not found:  # nothing new fixed: the inputs still disagreeing will not agree next round
            break
    return SaturationSearch(frozenset(narrow), frozenset(shown_clean), rounds)


def _worst_sqnr(session: Any, samples: Sequence[Feed], reference: Sequence[Sequence[np.ndarray]], float_outputs: Sequence[int]) -> float:
    """SQNR in dB of the worst float output of ``session`` (onnxruntime's kernels) against the float reference."""
    ref_sq, noise_sq = np.zeros(len(float_outputs)), np.zeros(len(float_outputs))
    for feed, ref in zip(samples, reference):
        got = session.run(None, dict(feed))
        for k, i in enumerate(float_outputs):
            r, c = np.asarray(ref[i], np.float64), np.asarray(got[i], np.float64)
            ref_sq[k] += float((r * r).sum())
            noise_sq[k] += float(((r - c) ** 2).sum())
    return min((sqnr_of(float(r), float(n)) for r, n in zip(ref_sq, noise_sq)), default=float("inf"))


@register_pass("choose-weight-range")
class ChooseWeightRange(Pass[ChooseWeightRangeConfig]):
    """Put weights on the 7-bit grid only where this CPU's 8-bit products saturate (measured), 8-bit elsewhere."""

    changes_structure = False
    reads = ("plan", "quant_config", "ranges")
    writes = ("plan", "quant_config")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan, qcfg, ranges = ctx.plan, ctx.quant_config, ctx.ranges
        if plan is None or qcfg is None or ranges is None:
            return PassResult(model, False, {"skipped": "no quantization plan"})
        candidates = {w.node for w in plan.weights if w.kind == "weight" and w.reduce_range}
        if not candidates:
            return PassResult(model, False, {"skipped": "no weight on the 7-bit grid"})
        if not int8_products_saturate(qcfg.activation_dtype, qcfg.weight_dtype):
            return PassResult(model, False, {"skipped": "this CPU's 8-bit products do not saturate"})
        feeds = list(islice(ctx.calibration_data, 2 * self.config.samples)) if ctx.calibration_data is not None else []
        samples, scoring = feeds[: self.config.samples], feeds[self.config.samples :] or feeds
        if not samples:
            ctx.note("weight range not measured (no samples; give --data): 7-bit weights everywhere")
            return PassResult(model, False, {"skipped": "no sample inputs"})
        found = saturating_nodes(model, plan, ranges, candidates, samples, self.config)
        choices = {ALL_7BIT: candidates, ALL_8BIT: set(), SATURATING_7BIT: set(found.saturating), UNPROVEN_7BIT: candidates - found.clean}
        scores = self._scores(model, plan, ranges, candidates, choices, (samples, scoring))
        gains = {k: min(v - base for v, base in zip(scores[k], scores[ALL_7BIT])) for k in scores}
        best = max(gains, key=lambda k: gains[k])  # max keeps the first of equal gains
        chosen = best if gains[best] >= self.config.min_gain_db else ALL_7BIT
        narrow = choices[chosen]
        stats: dict[str, Any] = {
            "candidates": len(candidates),
            "saturating": sorted(found.saturating),
            "shown_clean": len(found.clean),
            "rounds": found.rounds,
            "sqnr_db": {k: [round(v, 2) for v in pair] for k, pair in scores.items()},
            "chosen": chosen,
        }
        if chosen == ALL_7BIT:
            return PassResult(model, False, stats)
        ctx.plan = with_narrow_weights(plan, candidates, narrow)
        # reduce_range back to automatic: the plan reads it as off plus the named nodes, and dynamic
        # int8 units (mixed-precision) resolve it for their own kernels
        ctx.quant_config = dataclasses.replace(qcfg, reduce_range=None, reduce_range_nodes=tuple(re.escape(n) for n in sorted(narrow)))
        ctx.notes[:] = [n for n in ctx.notes if not n.startswith(REDUCE_RANGE_NOTE)]  # annotate's global answer no longer holds
        ctx.note(
            f"weight range by measurement: 8-bit weights on {len(candidates) - len(narrow)} of {len(candidates)} nodes, 7-bit on the "
            f"{len(narrow)} whose 8-bit products saturate on this CPU (or could not be shown not to): output SQNR +{gains[chosen]:.1f} dB over all 7-bit"
        )
        return PassResult(model, False, stats)

    def _scores(
        self,
        model: Model,
        plan: QuantPlan,
        ranges: Mapping[str, Any],
        candidates: set[str],
        choices: Mapping[str, set[str]],
        sample_sets: Sequence[Sequence[Feed]],
    ) -> dict[str, tuple[float, ...]]:
        """Each distinct choice's worst-output SQNR on each sample set (a choice equal to an earlier one is left out)."""
        float_session = make_session(model, threads=1, where=f"{model.source} (float)")
        float_outputs = [i for i, o in enumerate(float_session.get_outputs()) if "float" in str(o.type)]
        references = [[float_session.run(None, dict(s)) for s in samples] for samples in sample_sets]
        scores: dict[str, tuple[float, ...]] = {}
        for label, narrow in choices.items():
            if any(choices[earlier] == narrow for earlier in scores):
                continue
            variant = shipped_candidate(model, with_narrow_weights(plan, candidates, narrow), ranges)
            session = make_session(variant, threads=1, where=f"{model.source} (weight-range candidate)")
            scores[label] = tuple(_worst_sqnr(session, samples, ref, float_outputs) for samples, ref in zip(sample_sets, references))
        return scores
