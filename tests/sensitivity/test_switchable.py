"""The switchable model is the QDQ model with every switch on and the float model with every switch off."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from models import build
from onnxq import ir
from onnxq.api import ConversionOptions
from onnxq.api.sensitivity_analysis import _prepare
from onnxq.passes.quantization._switchable import build_switchable
from onnxq.passes.quantization.insert_qdq import materialize
from tests.sensitivity._util import samples


def _plain(model: ir.Model) -> ort.InferenceSession:
    """A session without graph rewrites: the ONNX semantics of ``model``, op by op."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(ir.to_proto(model).SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_all_on_is_the_qdq_model_and_all_off_the_float_model(name: str) -> None:
    rng = np.random.default_rng(0)
    feeds = samples() if name == "cnn" else [{"input": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(8)]
    prepared = _prepare(ir.load(build(name)), feeds, ConversionOptions(), False)
    plan = prepared.plan
    switchable, switches = build_switchable(prepared.model, plan, prepared.ranges)
    assert set(switches.activations) == set(plan.activations) and set(switches.nodes) == {w.node for w in plan.weights}
    qdq = ir.clone(prepared.model)
    materialize(qdq, plan, prepared.ranges)
    session, float_session, qdq_session = _plain(switchable), _plain(prepared.model), _plain(qdq)
    on = switches.feeds(set(plan.activations), {(w.node, w.index) for w in plan.weights})
    off = switches.feeds(set(), set())
    for feed in feeds[:3]:
        np.testing.assert_allclose(session.run(None, feed | on)[0], qdq_session.run(None, feed)[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(session.run(None, feed | off)[0], float_session.run(None, feed)[0])
