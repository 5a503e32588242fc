"""The rule registry and what every rule reads: a :class:`LintContext` (the graph view, the target's
profile and rules, options) in, :class:`~onnxq.lint.Finding` records out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..ir import Node
from ..targets import TargetProfile, TargetRules
from ._findings import Finding, Severity
from ._graph import QDQGraph

__all__ = ["LintContext", "Rule", "RULES", "rule", "finding"]


@dataclass
class LintContext:
    """What a rule sees.

    Attributes:
        graph: the Q/DQ view of the model.
        profile: the target's profile (``profile.rules`` is what most rules read).
        power_of_two: the model is meant to have power-of-two scales (fixed-point targets).
        observed: per QuantizeLinear node, the largest ``|x|`` it saw on the given data (None: no data).
        notes: sentences for the report (a rule that could not run, and why).
    """

    graph: QDQGraph
    profile: TargetProfile
    power_of_two: bool = False
    observed: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rules(self) -> TargetRules:
        return self.profile.rules

    def quantized(self, node: Node) -> bool:
        """``node`` is quantized on this target (its fused activations count as part of it)."""
        return self.graph.is_quantized(node, self.rules.fused_activations)


Rule = Callable[[LintContext], Iterable[Finding]]
#: rule id → rule. The rule's docstring is its documentation (``onnxq lint --rules`` prints it).
RULES: dict[str, Rule] = {}


def rule(rule_id: str) -> Callable[[Rule], Rule]:
    """Register a rule under ``rule_id`` (duplicates refused)."""

    def deco(fn: Rule) -> Rule:
        if rule_id in RULES:
            raise ValueError(f"lint rule '{rule_id}' is already registered")
        RULES[rule_id] = fn
        return fn

    return deco


def finding(rule_id: str, severity: Severity, nodes: Iterable[str], message: str, fix: str) -> Finding:
    """A finding (node names deduplicated, order kept)."""
    return Finding(rule_id, severity, tuple(dict.fromkeys(n for n in nodes if n)), message, fix)
