"""Weight layers shared by the pruning and compression passes: finding, filtering, reading, writing.

A *weight layer* is a Conv / ConvTranspose / Gemm / MatMul node whose second input is

- a float constant (the usual case), or
- the output of ``DequantizeLinear(q, scale, zero_point)`` with an integer constant ``q`` and constant
  scale / zero point (a weight-quantized model). Its float value is ``(q - zp) * scale``; zeroing an
  entry means writing ``q = zp`` there, which dequantizes to exactly 0 whatever the zero point, so a
  pruned quantized weight keeps its scale and zero point unchanged ("re-quantized with the same
  parameters": the other entries are untouched, hence bit-identical).

A constant read by two weight layers is one layer (the first in graph order); the second is reported
as sharing it. A constant also read by some other node (a tied embedding ``Gather``) is skipped:
pruning it would silently change that node too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError, PreconditionError
from onnxq.ir import Constant, Model, Node, Tensor
from onnxq.pass_base import Pass, PassConfig, PassContext

__all__ = [
    "WEIGHT_OPS",
    "WeightLayer",
    "LayerSelectionConfig",
    "weight_layers",
    "select_layers",
    "require_known_layers",
    "set_const_input",
    "fraction",
    "check_unit_interval",
    "require_exactly_one",
    "shape_snapshot",
    "restore_shapes",
    "jsonable",
    "zero_and_report",
]

#: Ops whose input 1 is the weight.
WEIGHT_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class WeightLayer:
    """One layer's weight.

    Attributes:
        name: the node's name (unique in the report; ``op(weight)`` for unnamed nodes).
        node: the Conv / ConvTranspose / Gemm / MatMul node.
        tensor: the float weight constant, or the integer constant under ``dq``.
        dq: the DequantizeLinear node feeding the layer, for quantized weights.
    """

    name: str
    node: Node
    tensor: Constant
    dq: Node | None = None

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def quantized(self) -> bool:
        return self.dq is not None

    @property
    def size(self) -> int:
        return int(ir.const_value(self.tensor).size)

    def _qparams(self) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point broadcast to the weight's shape."""
        assert self.dq is not None
        q = ir.const_value(self.tensor)
        scale = np.asarray(ir.constant_array(self.dq.inputs[1]), dtype=np.float64)
        zp_t = self.dq.inputs[2] if len(self.dq.inputs) > 2 and self.dq.inputs[2].name else None
        zp = np.zeros_like(scale, dtype=np.int64) if zp_t is None else np.asarray(ir.constant_array(zp_t), dtype=np.int64)
        if scale.ndim == 1 and scale.size > 1:
            axis = int(ir.attr(self.dq, "axis", 1)) % q.ndim
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return np.broadcast_to(scale, q.shape), np.broadcast_to(zp, q.shape)

    def values(self) -> np.ndarray:
        """The float weight (dequantized for quantized layers)."""
        w = ir.const_value(self.tensor)
        if self.dq is None:
            return np.asarray(w)
        scale, zp = self._qparams()
        return ((w.astype(np.int64) - zp) * scale).astype(np.float32)

    def zero_mask(self) -> np.ndarray:
        """Entries that are exactly zero (in the float domain)."""
        w = ir.const_value(self.tensor)
        if self.dq is None:
            return np.asarray(w) == 0
        return w.astype(np.int64) == self._qparams()[1]

    def apply_zero_mask(self, mask: np.ndarray) -> bool:
        """Set the entries under ``mask`` to zero (to the zero point when quantized).

        The constant object is updated in place (it keeps its name; the array is a new one, never a
        mutation of the shared original). Returns True when some entry changed.
        """
        w = np.asarray(ir.const_value(self.tensor))
        already = self.zero_mask()
        if not np.any(mask & ~already):
            return False
        new = w.copy()
        if self.dq is None:
            new[mask] = 0
        else:
            new[mask] = self._qparams()[1][mask].astype(w.dtype)
        self.tensor.values = new
        return True


def _quantized_weight(node: Node) -> tuple[Constant, Node] | str | None:
    """(integer constant, DequantizeLinear) behind ``node``'s weight, a reason, or None if not a DQ."""
    dq = ir.producer(node.inputs[1])
    if dq is None or dq.op != "DequantizeLinear" or (dq.domain or ""):
        return None
    q = dq.inputs[0]
    if not ir.is_constant(q) or ir.const_value(q).dtype.kind not in "iu":
        return "DequantizeLinear input is not an integer constant"
    if ir.constant_array(dq.inputs[1]) is None:
        return "DequantizeLinear scale is not a constant"
    if len(dq.inputs) > 2 and dq.inputs[2].name and ir.constant_array(dq.inputs[2]) is None:
        return "DequantizeLinear zero point is not a constant"
    if int(ir.attr(dq, "block_size", 0) or 0):
        return "blocked DequantizeLinear (block_size) is not supported"
    return q, dq


def _unique_name(node: Node, tensor: Tensor, taken: set[str]) -> str:
    base = node.name or f"{node.op}({tensor.name})"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}#{k}"
    taken.add(name)
    return name


def weight_layers(model: Model, ops: Iterable[str] = WEIGHT_OPS) -> tuple[list[WeightLayer], dict[str, str]]:
    """All weight layers in graph order (main graph first, then subgraphs), plus skipped ones.

    Nodes whose weight is computed at run time (attention's ``Q @ K^T``) are not layers and are not
    listed. Returns ``(layers, skipped)`` with ``skipped`` mapping a node name to the reason.
    """
    ops = tuple(ops)
    layers: list[WeightLayer] = []
    skipped: dict[str, str] = {}
    owner: dict[int, str] = {}
    taken: set[str] = set()
    for node in ir.iter_nodes(model.graph):
        if node.op not in ops or (node.domain or "") or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        dq: Node | None = None
        if ir.is_constant(w):
            tensor = w
            if ir.const_value(w).dtype.kind != "f":
                skipped[_unique_name(node, w, taken)] = f"weight dtype {ir.const_value(w).dtype} is not float"
                continue
        else:
            found = _quantized_weight(node)
            if found is None:
                continue
            if isinstance(found, str):
                skipped[_unique_name(node, w, taken)] = found
                continue
            tensor, dq = found
        name = _unique_name(node, tensor, taken)
        if id(tensor) in owner:
            skipped[name] = f"shares its weight with '{owner[id(tensor)]}' (handled there)"
            continue
        others = [n for n in ir.consumers(tensor) if (n is not dq) and n.op not in ops]
        if dq is not None:
            others += [n for n in ir.consumers(dq.outputs[0]) if n.op not in ops]
        if others:
            skipped[name] = f"weight '{tensor.name}' is also read by {others[0].op} '{others[0].name}'"
            continue
        owner[id(tensor)] = name
        layers.append(WeightLayer(name, node, tensor, dq))
    return layers, skipped


def check_unit_interval(owner: str, key: str, value: float | None, *, closed: bool = False) -> None:
    """Refuse ``value`` outside [0, 1) (or [0, 1] when ``closed``); None passes."""
    if value is None:
        return
    hi_ok = value <= 1 if closed else value < 1
    if not (math.isfinite(value) and value >= 0 and hi_ok):
        raise ConfigError(f"{owner}: {key} must be in [0, {'1]' if closed else '1)'}, got {value}")


def require_exactly_one(owner: str, config: Any, keys: tuple[str, ...]) -> None:
    """Refuse a config that sets (not None) none or several of ``keys``: alternative ways of saying how much."""
    given = [k for k in keys if getattr(config, k) is not None]
    if len(given) != 1:
        raise ConfigError(f"{owner}: give exactly one of {', '.join(keys)} (got {', '.join(given) or 'none'})")


def fraction(part: int, whole: int) -> float:
    """``part / whole`` rounded for reports (0 when ``whole`` is 0)."""
    return round(part / whole, 4) if whole else 0.0


@dataclass(frozen=True)
class LayerSelectionConfig(PassConfig):
    """Base of configs choosing which weight layers a pass touches.

    ``onnxq passes`` lists a subclass's own options before these shared ones.

    Attributes:
        exclude_names: regular expressions; a layer whose node name matches one (``re.search``)
            is left alone.
        exclude_ops: op types left alone (e.g. ``["ConvTranspose"]``).
        layers: when non-empty, only these node names (each must exist).
        skip_first_last: leave the first and the last weight layer (in graph order), which
            usually cost the most accuracy per parameter.
    """

    exclude_names: tuple[str, ...] = ()
    exclude_ops: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    skip_first_last: bool = False

    SUPPORTED_OPS: ClassVar[tuple[str, ...]] = WEIGHT_OPS

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        for pattern in self.exclude_names:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"{owner}: exclude_names pattern '{pattern}' is not a valid regular expression: {e}") from e
        bad = [op for op in self.exclude_ops if op not in self.SUPPORTED_OPS]
        if bad:
            raise ConfigError(f"{owner}: exclude_ops {bad} are not layer ops; valid: {', '.join(self.SUPPORTED_OPS)}")


def require_known_layers(names: Iterable[str], layers: Iterable[str], what: str = "layer") -> None:
    """Raise :class:`PreconditionError` naming the first of ``layers`` not in ``names``.

    The message lists a few valid names so a typo is easy to fix.
    """
    valid = list(names)
    known = set(valid)
    for name in layers:
        if name not in known:
            sample = ", ".join(f"'{n}'" for n in valid[:8]) + (", ..." if len(valid) > 8 else "")
            raise PreconditionError(f"{what} '{name}' does not exist in the model; valid {what}s: {sample or '(none)'}")


def select_layers(all_layers: list[WeightLayer], cfg: Any) -> tuple[list[WeightLayer], dict[str, str]]:
    """Apply a :class:`LayerSelectionConfig`'s filters; ``(selected, left_out)`` with a reason per layer left out."""
    left: dict[str, str] = {}
    ends = {all_layers[0].name, all_layers[-1].name} if cfg.skip_first_last and all_layers else set()
    wanted = set(cfg.layers)
    selected = []
    for layer in all_layers:
        pattern = next((p for p in cfg.exclude_names if re.search(p, layer.node.name or "")), None)
        if wanted and layer.name not in wanted:
            continue
        if layer.name in ends:
            left[layer.name] = "first/last layer (skip_first_last)"
        elif layer.op in cfg.exclude_ops:
            left[layer.name] = f"op {layer.op} is excluded"
        elif pattern is not None:
            left[layer.name] = f"name matches exclude pattern '{pattern}'"
        else:
            selected.append(layer)
    return selected, left


def set_const_input(node: Node, index: int, values: np.ndarray, namer: ir.NameGenerator) -> None:
    """Give ``node`` a new constant value at input ``index``.

    A constant read only by ``node`` is updated in place (it keeps its name); a shared one is left
    to its other readers and ``node`` gets a fresh constant.
    """
    old = node.inputs[index]
    if ir.is_constant(old) and len(ir.consumers(old)) == 1:
        old.values = np.asarray(values)
        return
    base = old.name if old.name else f"{node.name or node.op}/input{index}"
    node.inputs[index] = ir.make_constant(namer.new(base), np.asarray(values))


def shape_snapshot(model: Model) -> list[tuple[Tensor, Any, Any]]:
    """Every node output's (tensor, dtype, shape), to undo shape inference when a pass changes nothing."""
    return [(t, t.dtype, t.shape) for g in ir.iter_graphs(model.graph) for n in g.nodes for t in n.outputs]


def restore_shapes(snapshot: list[tuple[Tensor, Any, Any]]) -> None:
    """Put back the annotations recorded by :func:`shape_snapshot`."""
    for t, dtype, shape in snapshot:
        t.dtype, t.shape = dtype, shape


def jsonable(value: Any) -> Any:
    """Round floats for reports; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


LC = TypeVar("LC", bound=LayerSelectionConfig)


class LayerPass(Pass[LC]):
    """Base of passes that rewrite a selection of weight layers (a :class:`LayerSelectionConfig`).

    Checks in ``requires`` that every layer named in ``layers`` exists, and gives ``run`` the
    selected layers plus a reason for every layer left out.
    """

    #: op types whose weights this pass handles
    layer_ops: ClassVar[tuple[str, ...]] = WEIGHT_OPS

    def requires(self, model: Model) -> None:
        cfg = self.config
        if getattr(cfg, "layers", ()):
            layers, skipped = weight_layers(model, self.layer_ops)
            require_known_layers([layer.name for layer in layers] + list(skipped), cfg.layers)

    def selected_layers(self, model: Model) -> tuple[list[WeightLayer], dict[str, str]]:
        """``(layers to rewrite, {layer: reason left out})``."""

        all_layers, skipped = weight_layers(model, self.layer_ops)
        layers, left = select_layers(all_layers, self.config)
        skipped.update(left)
        return layers, skipped


def record_skips(model: Model, ctx: PassContext, skipped: Mapping[str, str]) -> int:
    """Record every layer (or channel group) a pass left alone as a skip record; returns the count.

    Keys are node names where a node exists (its op is looked up), otherwise group names.
    """
    ops = {n.name: n.op for n in ir.iter_nodes(model.graph) if n.name}
    for name, reason in skipped.items():
        ctx.skip(name, ops.get(name, "channel group"), reason, kept="unchanged")
    return len(skipped)


def zero_and_report(layer: WeightLayer, mask: np.ndarray, **extra: Any) -> tuple[bool, dict[str, Any]]:
    """Zero ``layer``'s weights where ``mask`` is set; ``(changed, report entry)``.

    The entry holds the sparsity before and after (a quantized weight's pruned entries become its
    zero point, its scale and zero point stay).
    """
    before = int(layer.zero_mask().sum())
    changed = bool(layer.apply_zero_mask(mask))
    after = int(layer.zero_mask().sum())
    entry: dict[str, Any] = {"op": layer.op, "params": layer.size, **extra, "before": fraction(before, layer.size), "after": fraction(after, layer.size)}
    if layer.quantized:
        entry["quantized"] = "pruned entries set to the zero point; scale and zero point kept"
    return changed, entry
