"""A rewrite-rule engine: a rule is a *match* (pattern + check) and a *rewrite*; one pass owns the walk.

Written the way onnxscript's rewriter splits a rewrite into pattern, check and replacement, on top
of onnxq's IR:

- :meth:`Rule.match` looks at one anchor node and returns ``None`` when the pattern is not there
  (nothing to report), a reason string when the pattern is there but the check refuses it (the
  engine records a :class:`~onnxq.context.Skip`), or a :class:`Match` naming the nodes the rewrite
  will consume and whatever values it computed on the way.
- :meth:`Rule.rewrite` edits the graph through the :class:`Rewriter` it is given: add nodes,
  redirect uses, mark nodes for removal. It never removes nodes itself, so the walk stays valid.

:class:`RewritePass` owns everything else, once for every pass built on it: the walk over every
graph (subgraphs of If/Loop/Scan included), dispatch by op type, refusing overlapping matches,
deferred removal, per-rule counters, and the skip records. A pass is then its list of rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from . import ir
from .config import PassConfig
from .context import Kept, PassContext
from .ir import Graph, Model, Node, Tensor
from .pass_base import Pass, PassResult

__all__ = ["Rule", "Match", "Rewriter", "RewritePass"]

C = TypeVar("C", bound=PassConfig)


@dataclass
class Match:
    """A pattern found at one anchor node.

    Attributes:
        nodes: every node the rewrite consumes (the anchor included); a later match touching any of
            them in the same walk is refused, so rewrites never overlap.
        values: whatever the check computed that the rewrite needs (tensors, arrays, attributes).
        label: the counter this rewrite is counted under (default: the rule's name).
    """

    nodes: list[Node]
    values: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def anchor(self) -> Node:
        return self.nodes[0]


class Rewriter:
    """The edits a rule may make to one graph; removals are deferred until the walk ends."""

    def __init__(self, model: Model, graph: Graph, namer: ir.NameGenerator) -> None:
        self.model = model
        self.graph = graph
        self.namer = namer
        self.doomed: list[Node] = []

    @property
    def opset(self) -> int:
        return self.model.opset

    def add(self, node: Node) -> Node:
        """Append ``node`` to the graph (the pass manager restores topological order afterwards)."""
        self.graph.nodes.append(node)
        return node

    def remove(self, *nodes: Node) -> None:
        """Mark nodes for removal at the end of the walk."""
        self.doomed.extend(nodes)

    def replace_uses(self, old: Tensor, new: Tensor) -> None:
        """Make every reader of ``old`` (and the graph outputs) read ``new`` instead."""
        ir.replace_all_uses(self.graph, old, new)

    def take_output(self, old: Node, new: Node, index: int = 0) -> Tensor:
        """Move ``old``'s output ``index`` (name, readers, graph-output role) to ``new``'s outputs."""
        out = old.outputs[index]
        old.outputs[index] = ir.make_variable("")
        new.outputs.append(out)
        return out

    def name(self, base: str) -> str:
        """A fresh unique name derived from ``base``."""
        return self.namer.new(base)


class Rule(ABC):
    """One rewrite. Subclasses set ``name`` and ``ops`` (anchor op types, default domain only)."""

    name: ClassVar[str] = ""
    ops: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        """The match at ``node``; a reason when the pattern is there but cannot be rewritten; None when absent."""

    @abstractmethod
    def rewrite(self, rw: Rewriter, match: Match) -> None:
        """Apply the rewrite found by :meth:`match`."""


class RewritePass(Pass[C]):
    """A pass that is a list of rules (see the module docstring).

    Class attributes:
        counter: prefix of the per-rule counters in the pass's stats ("fused", "removed", ...).
        skip_kept: what a node a rule refused stays as, in its skip record.
    """

    counter: ClassVar[str] = "rewritten"
    skip_kept: ClassVar[Kept] = "unchanged"

    @abstractmethod
    def rules(self) -> Sequence[Rule]:
        """The rules, in priority order (the first that matches an anchor wins)."""

    def after(self, model: Model, counts: dict[str, int]) -> None:
        """Hook run once after the walk (e.g. declare an opset the new nodes need)."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        by_op: dict[str, list[Rule]] = {}
        for r in self.rules():
            for op in r.ops:
                by_op.setdefault(op, []).append(r)
        namer = ir.names(model)
        counts: dict[str, int] = {}
        refused = 0
        for graph in list(ir.iter_graphs(model.graph)):
            rw = Rewriter(model, graph, namer)
            taken: set[int] = set()
            for node in list(graph.nodes):
                rules = by_op.get(node.op)
                if not rules or id(node) in taken or (node.domain or "") not in ("", "ai.onnx"):
                    continue
                label, reason = self._apply_first(rw, node, rules, taken)
                if label:
                    counts[label] = counts.get(label, 0) + 1
                elif reason:
                    refused += 1
                    ctx.skip(node.name or (node.outputs[0].name if node.outputs else node.op), node.op, reason, kept=self.skip_kept)
            ir.remove_nodes(graph, rw.doomed)
        self.after(model, counts)
        total = sum(counts.values())
        stats: dict[str, Any] = {self.counter: total, **{f"{self.counter}.{k}": v for k, v in sorted(counts.items())}, "refused": refused}
        return PassResult(model, total > 0, stats)

    @staticmethod
    def _apply_first(rw: Rewriter, node: Node, rules: list[Rule], taken: set[int]) -> tuple[str, str]:
        """Apply the first rule that matches ``node``: (its label, "") or ("", the first refusal)."""
        reason = ""
        for r in rules:
            found = r.match(rw, node)
            if found is None:
                continue
            if isinstance(found, str):
                reason = reason or found
                continue
            if any(id(n) in taken for n in found.nodes):
                continue
            r.rewrite(rw, found)
            taken.update(id(n) for n in found.nodes)
            return found.label or r.name, ""
        return "", reason
