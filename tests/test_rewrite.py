"""The rewrite engine alone (:mod:`onnxq.rewrite`): tiny rules on tiny graphs from ``onnx.parser``.

Each test builds a throwaway :class:`RewritePass` from hand-written rules and runs it as a pipeline
of one (normalized and checked after it, its skip records stamped with its class name).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from onnxq import ir
from onnxq.context import PassContext, Skip
from onnxq.ir import Node
from onnxq.pass_base import EmptyConfig, PassResult
from onnxq.pass_manager import PassManager
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule
from tests.helpers import assert_same_outputs, graph, run
from tests.passes.quantization._pass_util import load, ops


class DoubleNeg(Rule):
    """``Neg(Neg(x))`` → ``x``, refused when the inner Neg has other readers."""

    name = "double-neg"
    ops = ("Neg",)

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        inner = ir.producer(node.inputs[0])
        if inner is None or inner.op != "Neg":
            return None
        if ir.only_consumer(rw.graph, inner.outputs[0]) is not node:
            return "inner Neg has other readers"
        return Match([node, inner], {"x": inner.inputs[0]})

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        rw.replace_uses(match.anchor.outputs[0], match.values["x"])
        rw.remove(*match.nodes)


class Rules(RewritePass[EmptyConfig]):
    """A pass made of the rules it is given; remembers what its ``after`` hook saw."""

    counter = "done"

    def __init__(self, *rules: Rule) -> None:
        super().__init__()
        self._rules = list(rules)
        self.after_counts: dict[str, int] | None = None

    def rules(self) -> Sequence[Rule]:
        return self._rules

    def after(self, model: ir.Model, counts: dict[str, int]) -> None:
        self.after_counts = dict(counts)


def run_rules(p: RewritePass[EmptyConfig], model: ir.Model) -> tuple[PassResult, PassContext]:
    ctx = PassContext()
    result = PassManager([p], check=True).run(model, ctx)
    return PassResult(result.model, result.modified, result.records[0].stats), ctx


NEGS = ("(float[2, 3] x) => (float[2, 3] y)", "[inner] a = Neg (x)", "[outer] b = Neg (a)", "[relu] y = Relu (b)")


def test_a_rule_that_matches_rewrites_and_is_counted() -> None:
    src = graph(*NEGS)
    p = Rules(DoubleNeg())
    result, ctx = run_rules(p, load(src))
    assert result.modified and ops(result.model) == ["Relu"]
    assert result.stats == {"done": 1, "done.double-neg": 1, "refused": 0}
    assert p.after_counts == {"double-neg": 1} and ctx.skips == []
    assert_same_outputs(src, result.model, {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)})
    again, _ = run_rules(Rules(DoubleNeg()), result.model)
    assert not again.modified and again.stats["done"] == 0


def test_a_refusal_is_recorded_once_as_a_skip_and_nothing_changes() -> None:
    src = graph(
        "(float[2] x) => (float[2] y, float[2] z)",
        "[inner] a = Neg (x)",
        "[outer] y = Neg (a)",
        "[relu] z = Relu (a)",
    )
    model = load(src)
    before = ir.to_proto(model).SerializeToString()
    result, ctx = run_rules(Rules(DoubleNeg()), model)
    assert not result.modified and ir.to_proto(result.model).SerializeToString() == before
    assert ctx.skips == [Skip("outer", "Neg", "inner Neg has other readers", "Rules", "unchanged")]
    assert result.stats == {"done": 0, "refused": 1}


class Refuse(Rule):
    """Refuses every Neg."""

    name = "refuse"
    ops = ("Neg",)

    def match(self, rw: Rewriter, node: Node) -> str:
        return "never"

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        raise AssertionError("never matches")


def test_the_first_rule_that_matches_wins_and_refusals_of_consumed_nodes_are_dropped() -> None:
    src = graph(
        "(float[2, 3] x) => (float[2, 3] y, float[2, 3] z)",
        "[inner] a = Neg (x)",
        "[outer] b = Neg (a)",
        "[relu] y = Relu (b)",
        "[lone] z = Neg (x)",
    )
    result, ctx = run_rules(Rules(Refuse(), DoubleNeg()), load(src))
    assert result.modified and ops(result.model) == ["Relu", "Neg"]
    # outer: Refuse refused, DoubleNeg matched → rewritten. inner: refused, then consumed by that
    # rewrite → no record. lone: refused and still there → recorded.
    assert [(s.node, s.reason) for s in ctx.skips] == [("lone", "never")]


class Claim(Rule):
    """Tags a Relu and the node before it, claiming both (an in-place edit, nothing removed)."""

    name = "claim"
    ops = ("Relu",)

    def match(self, rw: Rewriter, node: Node) -> Match | None:
        producer = ir.producer(node.inputs[0])
        if producer is None or node.name.endswith("+"):
            return None
        return Match([node, producer])

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        for n in match.nodes:
            n.name += "+"


def test_overlapping_matches_are_refused_silently_until_the_next_run() -> None:
    src = graph(
        "(float[2] x) => (float[2] y, float[2] z)",
        "[neg] n = Neg (x)",
        "[r1] y = Relu (n)",
        "[r2] z = Relu (n)",
    )
    result, ctx = run_rules(Rules(Claim()), load(src))
    assert result.stats["done"] == 1 and ctx.skips == []
    assert sorted(n.name for n in result.model.graph.nodes) == ["neg+", "r1+", "r2"]
    again, _ = run_rules(Rules(Claim()), result.model)
    assert again.stats["done"] == 1 and sorted(n.name for n in again.model.graph.nodes) == ["neg++", "r1+", "r2+"]


class DropIdentity(Rule):
    """Removes Identity nodes and notes, at every match, how the nodes it removed before look."""

    name = "drop"
    ops = ("Identity",)

    def __init__(self) -> None:
        self.removed: list[Node] = []
        self.seen: list[list[tuple[bool, bool]]] = []

    def match(self, rw: Rewriter, node: Node) -> Match:
        self.seen.append([(any(n is m for m in rw.graph.nodes), bool(n.inputs or n.outputs)) for n in self.removed])
        return Match([node])

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        rw.replace_uses(match.anchor.outputs[0], match.anchor.inputs[0])
        rw.remove(match.anchor)
        self.removed.append(match.anchor)


def test_removal_is_deferred_to_the_end_of_the_walk_but_removed_nodes_are_disconnected_at_once() -> None:
    src = graph(
        "(float[2] x) => (float[2] y)",
        "a = Identity (x)",
        "b = Identity (a)",
        "c = Identity (b)",
        "y = Relu (c)",
    )
    rule = DropIdentity()
    result, _ = run_rules(Rules(rule), load(src))
    assert ops(result.model) == ["Relu"] and result.stats["done.drop"] == 3
    # still in the node list while the walk goes on (so the walk's own list stays valid) ...
    assert rule.seen == [[], [(True, False)], [(True, False), (True, False)]]
    # ... and gone once it ends
    assert not any(n is m for n in rule.removed for m in result.model.graph.nodes)


def test_subgraphs_are_walked() -> None:
    src = graph(
        "(bool c, float[2] x) => (float[2] y)",
        "y = If (c) <then_branch = then_g () => (float[2] t) {",
        "    n1 = Neg (x)",
        "    t = Neg (n1)",
        "}, else_branch = else_g () => (float[2] e) {",
        "    e = Relu (x)",
        "}>",
    )
    result, _ = run_rules(Rules(DoubleNeg()), load(src))
    assert result.modified and result.stats["done.double-neg"] == 1
    then_branch = result.model.graph.nodes[0].attrs["then_branch"]
    assert [n.op for n in then_branch.nodes] == ["Identity"]  # the branch output keeps its name
    x = np.array([-1.5, 2.0], np.float32)
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        np.testing.assert_array_equal(run(result.model, feeds)[0], run(src, feeds)[0])


class DropUnlessFollowed(Rule):
    """Removes an Identity, refusing one whose output another Identity reads (it goes once that one has)."""

    name = "drop"
    ops = ("Identity",)

    def match(self, rw: Rewriter, node: Node) -> Match | str:
        if any(user.op == "Identity" for user in node.outputs[0].outputs):
            return "another Identity follows"
        return Match([node])

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        rw.replace_uses(match.anchor.outputs[0], match.anchor.inputs[0])
        rw.remove(match.anchor)


class TwoRounds(Rules):
    rounds = 2


@pytest.mark.parametrize("cls", [Rules, TwoRounds])
def test_rounds_repeat_the_walk_and_a_refusal_undone_later_is_not_recorded(cls: type[Rules]) -> None:
    src = graph(
        "(float[2] x) => (float[2] y)",
        "[first] a = Identity (x)",
        "[second] b = Identity (a)",
        "y = Relu (b)",
    )
    result, ctx = run_rules(cls(DropUnlessFollowed()), load(src))
    if cls is TwoRounds:
        assert ops(result.model) == ["Relu"] and result.stats == {"done": 2, "done.drop": 2, "refused": 0} and ctx.skips == []
    else:
        assert ops(result.model) == ["Identity", "Relu"] and result.stats == {"done": 1, "done.drop": 1, "refused": 1}
        assert [(s.node, s.reason) for s in ctx.skips] == [("first", "another Identity follows")]


def test_nodes_of_other_domains_are_never_anchors() -> None:
    model = load(graph(*NEGS))
    for n in model.graph.nodes:
        if n.op == "Neg":
            n.domain = "custom"
    result, ctx = run_rules(Rules(DoubleNeg(), Refuse()), model)
    assert not result.modified and ctx.skips == []
