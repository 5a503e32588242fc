"""The in-memory model: an onnx-graphsurgeon graph plus everything a ModelProto carries besides it.

onnx-graphsurgeon is our working graph (real edges between nodes and tensors), but it drops or
defaults several model-level fields (it assumes opset 11 when unsure, and invents domain versions).
:class:`Model` keeps those fields explicitly so a load → save round trip preserves them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:  # pragma: no cover
    import onnx_graphsurgeon as gs

__all__ = ["Model", "ONNX_DOMAIN", "MS_DOMAIN", "clone", "gc_paused"]

ONNX_DOMAIN = ""
MS_DOMAIN = "com.microsoft"


@dataclass
class Model:
    """A loaded ONNX model.

    Attributes:
        graph: the onnx-graphsurgeon graph (nodes, tensors, subgraphs). Passes edit it in place.
        opsets: operator-set versions by domain (``""`` is the default ONNX domain).
        ir_version: the ONNX IR version to write.
        producer_name / producer_version / domain / model_version / doc_string: copied through.
        metadata: ``metadata_props`` as an ordered mapping.
        functions: model-local functions, kept as raw protos (graph-surgeon's function support
            rewrites them; we only need to carry them through untouched).
        source: where the model came from (a path or a short description), for error messages.
        base_dir: folder used to resolve external data when the model was loaded from a file.
        large: loaded past the protobuf limit, or made from such a model (clones and conversions
            keep the flag). Large models are saved with external data and never serialized into
            one protobuf, even once a conversion shrank them below the limit: a pipeline on a
            large model then never builds a protobuf holding its weights (see ``ir.is_large``).
    """

    graph: gs.Graph
    opsets: dict[str, int]
    ir_version: int = 8
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[onnx.FunctionProto] = field(default_factory=list)
    source: str = "<memory>"
    base_dir: Path | None = None
    large: bool = False

    @property
    def opset(self) -> int:
        """The default-domain (ai.onnx) opset version."""
        return self.opsets.get(ONNX_DOMAIN, self.opsets.get("ai.onnx", 0))

    def set_opset(self, domain: str, version: int) -> None:
        """Record that the model uses ``domain`` at ``version`` (never lowers an existing version)."""
        if domain == ONNX_DOMAIN:
            self.opsets[ONNX_DOMAIN] = version
            self.graph.opset = version
        elif self.opsets.get(domain, 0) < version:
            self.opsets[domain] = version

    def replace_graph(self, graph: gs.Graph) -> Model:
        """A shallow copy of this model with another graph (metadata dicts are copied)."""
        return dataclasses.replace(
            self,
            graph=graph,
            opsets=dict(self.opsets),
            metadata=dict(self.metadata),
            functions=list(self.functions),
        )


def clone(model: Model) -> Model:
    """An independent copy of ``model`` (constant arrays are shared: passes never mutate them)."""
    return model.replace_graph(model.graph.copy())


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for bulk graph work.

    A graph is hundreds of thousands of small objects linked in cycles (node ↔ tensor); every
    full collection walks all of them, which made load/cleanup time grow quadratically with the
    node count. Reference counting still frees acyclic garbage; cycles are collected on exit.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
