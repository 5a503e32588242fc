"""``record-batchnorm-stats``: remember what each BatchNormalization says about its layer's output, before folding.

An inference BatchNormalization after a linear layer outputs ``y = gamma · (x - mean) / sqrt(var + eps) + beta``:
whatever the layer computed, channel ``c`` of ``y`` is normalized to mean ``beta[c]`` and standard
deviation ``|gamma[c]|`` (on data like the data its running statistics were measured on).
``fold-batchnorm`` (in ``cleanup``) folds it into the layer's weights and that knowledge is gone, so
this pass runs before ``cleanup`` and records ``{layer node: ChannelGaussian(beta, |gamma|)}`` in
``ctx.batchnorm_stats`` for every BatchNormalization that will fold (same checks as the fold).

Readers: ``correct-bias data_free=true`` (the expected input of the next layer, Nagel et al. 2019
§4.2) and ``equalize-cross-layer`` (high-bias absorption), which also keeps the record up to date
when it rescales channels. The graph is not changed, except that an unnamed layer gets a name (the
record is keyed by node name).
"""

from __future__ import annotations

import numpy as np

from onnxq import ir
from onnxq.context import ChannelGaussian
from onnxq.ir import Model, Node
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass
from onnxq.passes.fusion._affine import LINEAR_OPS, check_fold, output_channels

__all__ = ["RecordBatchNormStats", "batchnorm_gaussian"]


def batchnorm_gaussian(bn: Node) -> ChannelGaussian | str:
    """``N(beta, gamma²)`` per channel of an inference BatchNormalization, or why it has none."""
    if int(bn.attrs.get("training_mode", 0)):
        return "BatchNormalization is in training mode"
    params = [ir.constant_array(t) for t in bn.inputs[1:3]]
    if len(params) != 2 or params[0] is None or params[1] is None:
        return "BatchNormalization scale/bias are not constants"
    gamma, beta = (np.asarray(p, np.float64).reshape(-1) for p in params)
    return ChannelGaussian(mean=beta, std=np.abs(gamma))


@register_pass("record-batchnorm-stats")
class RecordBatchNormStats(Pass[EmptyConfig]):
    """Record each foldable BatchNormalization's per-channel output mean/std under its layer's name (run before cleanup)."""

    changes_structure = False
    writes = ("batchnorm_stats",)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        stats: dict[str, ChannelGaussian] = dict(ctx.batchnorm_stats or {})
        namer = ir.names(model)
        renamed = False
        for graph in ir.iter_graphs(model.graph):
            for bn in graph.nodes:
                if bn.op != "BatchNormalization" or (bn.domain or ""):
                    continue
                layer = ir.producer(bn.inputs[0])
                if layer is None or layer.op not in LINEAR_OPS or (layer.domain or ""):
                    continue
                found = batchnorm_gaussian(bn)
                reason = check_fold(graph, layer, bn) or (found if isinstance(found, str) else None)
                if reason is None and isinstance(found, ChannelGaussian) and output_channels(layer) != found.mean.size:
                    reason = "channel count differs from the layer's"
                if reason is not None or not isinstance(found, ChannelGaussian):
                    ctx.skip(bn.name or bn.outputs[0].name, bn.op, f"statistics not recorded: {reason}", kept="unchanged")
                    continue
                if not layer.name:
                    layer.name = namer.new(f"{layer.op}_bn")
                    renamed = True
                stats[layer.name] = found
        ctx.batchnorm_stats = stats
        return PassResult(model, renamed, {"recorded": len(stats)})
