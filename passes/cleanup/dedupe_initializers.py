"""``dedupe-initializers``: make identical constants one initializer.

Exporters often write the same tensor (shape constants, shared embeddings, repeated scales) many
times. Two constants are merged when dtype, shape and bytes are equal (hash first, bytes compared
to rule out collisions).

Scopes: a graph's readers are only redirected to a constant visible from that graph — one read by
the graph itself or by an enclosing graph (an initializer of an outer scope is visible in every
body nested in it). So a body's copy of an outer weight merges into the outer one, two sibling
branches each keep their own copy (neither is visible from the other), and a merge never changes
what a reader in another scope reads: only the readers of the graph being walked are redirected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass

Key = tuple[str, tuple[int, ...], str]


def _key(values: np.ndarray) -> Key:
    return (str(values.dtype), tuple(values.shape), hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest())


@dataclass
class _Run:
    """State of one pass run: content keys computed once per constant, and the constants merged away."""

    keys: dict[int, Key | None] = field(default_factory=dict)
    merged: dict[int, Tensor] = field(default_factory=dict)

    def key(self, t: Tensor) -> Key | None:
        if id(t) not in self.keys:
            values = ir.const_value(t)
            self.keys[id(t)] = None if values.dtype == object else _key(values)
        return self.keys[id(t)]

    def dedupe(self, graph: Graph, visible: dict[Key, Tensor]) -> None:
        """Redirect ``graph``'s readers to the first identical constant visible here, then recurse."""
        keepers = dict(visible)  # the enclosing graphs' constants are visible here, not the siblings'
        outputs = {id(t) for t in graph.outputs}
        for node in graph.nodes:
            for i, t in enumerate(node.inputs):
                if not ir.is_constant(t) or id(t) in outputs:
                    continue
                key = self.key(t)
                if key is None:
                    continue
                keeper = keepers.setdefault(key, t)
                if keeper is not t and np.array_equal(ir.const_value(keeper), ir.const_value(t)):
                    node.inputs[i] = keeper
                    self.merged[id(t)] = t
        for node in graph.nodes:
            for sub in ir.subgraphs_of(node):
                self.dedupe(sub, keepers)


@register_pass("dedupe-initializers")
class DedupeInitializers(Pass[EmptyConfig]):
    """Merge initializers with identical dtype, shape and contents (within what each scope can see)."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        state = _Run()
        state.dedupe(model.graph, {})
        saved = sum(ir.const_value(t).nbytes for t in state.merged.values() if not t.outputs)
        return PassResult(model, bool(state.merged), {"merged": len(state.merged), "bytes_saved": saved})
