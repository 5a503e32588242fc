"""``upgrade-opset``: convert an old model to a newer default-domain opset (onnx's version converter).

Quantization needs opset >= 13 for per-channel ``DequantizeLinear(axis=...)`` and >= 21 for blocked
or int4/int16 quantization; Paddle2ONNX exports are often opset 10-11. The converter rewrites ops
whose signatures changed (e.g. ``Split``/``Squeeze`` attributes becoming inputs). A model already at
or above the target is left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx.version_converter

from onnxq import ir
from onnxq.errors import ConfigError, PreconditionError
from onnxq.ir import Model
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass


@dataclass(frozen=True)
class UpgradeOpsetConfig(PassConfig):
    """Options of ``upgrade-opset``: ``target`` is the default-domain opset to reach."""

    target: int = 17

    def __post_init__(self) -> None:
        super().__post_init__()
        if not ir.MIN_OPSET <= self.target <= ir.MAX_OPSET:
            raise ConfigError(f"upgrade-opset: target must be in {ir.MIN_OPSET}..{ir.MAX_OPSET}, got {self.target}")


def upgrade_opset(model: Model, target: int) -> Model:
    """Return ``model`` converted to opset ``target`` (metadata, source and functions kept).

    A model too big to copy into a protobuf is converted without its weights (the converter rewrites
    nodes; large initializers keep their values, taken back by name).
    """
    cheap = ir.serializes_cheaply(model)
    proto = ir.to_proto(model, weights=cheap)
    try:
        converted = onnx.version_converter.convert_version(proto, target)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PreconditionError(f"{model.source}: cannot convert opset {model.opset} to {target}: {first}") from e
    new = ir.from_proto(converted, source=model.source, base_dir=model.base_dir, check=False, weights=None if cheap else model)
    new.opsets = {**model.opsets, ir.ONNX_DOMAIN: target}
    return new


@register_pass("upgrade-opset")
class UpgradeOpset(Pass[UpgradeOpsetConfig]):
    """Convert the model to a newer opset with onnx's version converter."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        before = model.opset
        if before >= self.config.target:
            return PassResult(model, False, {"opset": before})
        return PassResult(upgrade_opset(model, self.config.target), True, {"from": before, "to": self.config.target})
