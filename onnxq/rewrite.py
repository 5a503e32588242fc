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

What the walk guarantees a rule:

- *The graph as it now is.* Nodes a rewrite marked for removal are disconnected as soon as that
  rewrite returns (so a later match never counts them as readers or producers) and leave the node
  list when the walk of their graph ends.
- *No overlap.* A match naming a node an earlier match of the same walk claimed (consumed or
  edited) is refused silently (a later walk or pass run may apply it).
- *One scope.* A match naming a node of another graph (a pattern running from the main graph
  into an If branch or a Loop/Scan body, found through a tensor the body reads from outside) is
  refused with a reason: the rewrite would put the fused node in the walked graph, so a body
  output could become an outer value returned directly (onnxruntime refuses such a body), and
  the consumed nodes would stay behind in their own graph's node list.
- *Repeated walks* when a pass sets ``rounds`` > 1: a graph is walked again while the previous
  walk rewrote something, for rewrites that expose one another (an affine folded into its readers
  makes the affine before it foldable).
- *One skip record per node that stays*: a refusal is recorded once the pass is done, and only if
  no later walk rewrote the node after all.
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
        nodes: every node the rewrite consumes (the anchor included), and any node it edits in place
            that no other rewrite of the same walk should touch; a later match naming any of them in
            the same walk is refused, so rewrites never overlap.
        values: whatever the check computed that the rewrite needs (tensors, arrays, attributes).
        label: the counter this rewrite is counted under (default: the rule's name, else the anchor's op).
    """

    nodes: list[Node]
    values: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def anchor(self) -> Node:
        return self.nodes[0]


class Rewriter:
    """The edits a rule may make to one graph; removals are deferred (see the module docstring)."""

    def __init__(self, model: Model, graph: Graph, namer: ir.NameGenerator) -> None:
        self.model = model
        self.graph = graph
        self.namer = namer
        self.doomed: list[Node] = []
        self._pending: list[Node] = []
        #: ids of the walked graph's nodes (a match must stay within them)
        self.local: set[int] = {id(n) for n in graph.nodes}

    @property
    def opset(self) -> int:
        """The model's default-domain opset (a rule needing a newer one refuses with that reason)."""
        return self.model.opset

    def add(self, node: Node) -> Node:
        """Append ``node`` to the graph (the pass manager restores topological order afterwards)."""
        self.graph.nodes.append(node)
        self.local.add(id(node))
        return node

    def remove(self, *nodes: Node) -> None:
        """Mark nodes for removal: disconnected once the rewrite returns, dropped when the walk ends."""
        self._pending.extend(nodes)

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

    def _settle(self) -> list[Node]:
        """Disconnect the nodes the last rewrite marked (subgraphs included); returns them."""
        settled, self._pending = self._pending, []
        for node in settled:
            for sub in ir.subgraphs_of(node):
                for inner in ir.iter_nodes(sub):
                    inner.inputs.clear()
            node.inputs.clear()
            node.outputs.clear()
        self.doomed.extend(settled)
        return settled

    def _finish(self) -> None:
        """Drop the removed nodes from the graph's node list (the end of a walk)."""
        ir.remove_nodes(self.graph, self.doomed)
        self.doomed = []


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


def _label(node: Node) -> str:
    """How a skip record names ``node``: its name, else its first output's, else its op type."""
    return node.name or (node.outputs[0].name if node.outputs and node.outputs[0].name else node.op)


class _Walk:
    """One run of a rule list over a model: dispatch, counters, and the refusals still standing."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.by_op: dict[str, list[Rule]] = {}
        for r in rules:
            for op in r.ops:
                self.by_op.setdefault(op, []).append(r)
        self.counts: dict[str, int] = {}
        #: id(node) → (node, its label, reason); holding the node keeps its id from being reused.
        self.refusals: dict[int, tuple[Node, str, str]] = {}

    def graph(self, rw: Rewriter) -> int:
        """Walk ``rw.graph`` once; returns how many rewrites were applied."""
        taken: set[int] = set()
        applied = 0
        for node in list(rw.graph.nodes):
            rules = self.by_op.get(node.op)
            if not rules or id(node) in taken or (node.domain or "") not in ("", "ai.onnx"):
                continue
            found, reason = self._first(rw, node, rules, taken)
            if found is None:
                if reason:
                    self.refusals[id(node)] = (node, _label(node), reason)
                continue
            rule, match = found
            rule.rewrite(rw, match)
            consumed = match.nodes + rw._settle()
            taken.update(id(n) for n in consumed)
            for n in consumed:
                self.refusals.pop(id(n), None)
            label = match.label or rule.name or node.op
            self.counts[label] = self.counts.get(label, 0) + 1
            applied += 1
        rw._finish()
        return applied

    @staticmethod
    def _first(rw: Rewriter, node: Node, rules: list[Rule], taken: set[int]) -> tuple[tuple[Rule, Match] | None, str]:
        """The first rule whose match at ``node`` overlaps nothing taken, or the first refusal."""
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
            if any(id(n) not in rw.local for n in found.nodes):
                reason = reason or "the pattern crosses a subgraph boundary (an If/Loop/Scan body and its enclosing graph)"
                continue
            return (r, found), ""
        return None, reason


class RewritePass(Pass[C]):
    """A pass that is a list of rules (see the module docstring).

    Class attributes:
        counter: prefix of the per-rule counters in the pass's stats ("fused", "removed", ...).
        skip_kept: what a node a rule refused stays as, in its skip record.
        rounds: how many times each graph may be walked (again only while a walk rewrote something).
    """

    counter: ClassVar[str] = "rewritten"
    skip_kept: ClassVar[Kept] = "unchanged"
    rounds: ClassVar[int] = 1

    @abstractmethod
    def rules(self) -> Sequence[Rule]:
        """The rules, in priority order (the first that matches an anchor wins)."""

    def after(self, model: Model, counts: dict[str, int]) -> None:
        """Hook run once after every graph was walked, with the per-label counters (e.g. declare the
        opset of a domain the new nodes live in)."""

    def summarize(self, counts: dict[str, int], refused: dict[str, str]) -> dict[str, Any]:
        """The pass's stats from its counters and refusals (``{node: reason}``); override to rename keys.

        Default: ``{counter: total, "<counter>.<label>": n, ..., "refused": number of nodes refused}``.
        """
        total = sum(counts.values())
        return {self.counter: total, **{f"{self.counter}.{k}": v for k, v in sorted(counts.items())}, "refused": len(refused)}

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        walk = _Walk(self.rules())
        namer = ir.names(model)
        for graph in list(ir.iter_graphs(model.graph)):
            rw = Rewriter(model, graph, namer)
            for _ in range(max(1, self.rounds)):
                if not walk.graph(rw):
                    break
        self.after(model, walk.counts)
        refused: dict[str, str] = {}
        for node, name, reason in walk.refusals.values():
            refused[name] = reason
            ctx.skip(name, node.op, reason, kept=self.skip_kept)
        return PassResult(model, sum(walk.counts.values()) > 0, self.summarize(walk.counts, refused))
