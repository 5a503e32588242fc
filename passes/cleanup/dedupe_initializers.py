"""``dedupe-initializers``: make identical constants one initializer.

Exporters often write the same tensor (shape constants, shared embeddings, repeated scales) many
times. Two constants are merged when dtype, shape and bytes are equal (hash first, bytes compared
to rule out collisions). Only constants of the same (sub)graph scope are merged.
"""

from __future__ import annotations

import hashlib

import numpy as np

from onnxq import ir
from onnxq.ir import Model
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass


def _key(values: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    return (str(values.dtype), tuple(values.shape), hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest())


@register_pass("dedupe-initializers")
class DedupeInitializers(Pass[EmptyConfig]):
    """Merge initializers with identical dtype, shape and contents."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        merged = 0
        saved = 0
        for graph in ir.iter_graphs(model.graph):
            outputs = {id(t) for t in graph.outputs}
            first: dict[tuple[str, tuple[int, ...], str], object] = {}
            seen: set[int] = set()
            for node in graph.nodes:
                for t in list(node.inputs):
                    if not ir.is_constant(t) or id(t) in seen or id(t) in outputs:
                        continue
                    seen.add(id(t))
                    values = ir.const_value(t)
                    if values.dtype == object:
                        continue
                    key = _key(values)
                    keeper = first.setdefault(key, t)
                    if keeper is t or not np.array_equal(ir.const_value(keeper), values):
                        continue
                    for reader in list(t.outputs):
                        for j, x in enumerate(reader.inputs):
                            if x is t:
                                reader.inputs[j] = keeper
                    merged += 1
                    saved += values.nbytes
        return PassResult(model, merged > 0, {"merged": merged, "bytes_saved": saved})
