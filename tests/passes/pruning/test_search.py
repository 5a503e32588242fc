"""prune_until: the curve, stopping at the first step out of tolerance, metrics, labels, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from models import build
from onnxq import ConfigError, PassContext, ir, make_pass
from onnxq.passes.pruning import channel_stat_tensors, collect_channel_stats, prune_until
from onnxq.runtime.evaluate import compare_models
from tests.helpers import checked, random_feeds, run

STEPS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def mlp_samples(count: int = 6) -> tuple[ir.Model, list[dict[str, np.ndarray]]]:
    src = build("mlp")
    return ir.load(src), [random_feeds(src, seed=s, dims={"N": 4}) for s in range(count)]


def magnitude(step: float):  # noqa: ANN201 - a pass factory
    return make_pass("prune-magnitude", {"sparsity": step})


def test_cosine_search_stops_at_the_first_failure() -> None:
    model, samples = mlp_samples()
    before = ir.to_proto(model).SerializeToString()
    result = prune_until(model, magnitude, STEPS, samples, metric="cosine", tolerance=0.02)
    assert ir.to_proto(model).SerializeToString() == before  # the input is never modified
    ok = [c["ok"] for c in result.curve]
    assert ok[:-1] == [True] * (len(ok) - 1) and ok[-1] is False  # stops right after the first failure
    assert result.best_step == result.curve[-2]["step"] and 0.1 <= result.best_step < 0.9
    sparsities = [c["sparsity"] for c in result.curve]
    assert sparsities == sorted(sparsities) and abs(sparsities[0] - 0.1) < 0.01
    again = compare_models(model, checked(result.best_model), samples)
    assert again.worst("cosine") >= 0.98 and again.worst("cosine") == pytest.approx(result.curve[-2]["metric"])


def test_no_step_within_tolerance_and_all_steps_within() -> None:
    model, samples = mlp_samples(3)
    none = prune_until(model, magnitude, [0.8, 0.9], samples, metric="cosine", tolerance=1e-6)
    assert none.best_model is None and none.best_step is None and len(none.curve) == 1
    everything = prune_until(model, magnitude, [0.01, 0.02], iter(samples), metric="sqnr", tolerance=10.0)
    assert everything.best_step == 0.02 and all(c["ok"] for c in everything.curve) and len(everything.curve) == 2


def test_top1_and_accuracy_metrics() -> None:
    model, samples = mlp_samples()
    top1 = prune_until(model, magnitude, STEPS, samples, metric="top1", tolerance=0.1)
    assert top1.best_step is not None and all(0 <= c["metric"] <= 1 for c in top1.curve)
    labelled = [(s, run(model, s)[0].argmax(axis=-1)) for s in samples]  # labels = the float model's answers
    acc = prune_until(model, magnitude, STEPS, labelled, metric="accuracy", tolerance=0.1)
    assert acc.curve[0]["metric"] > 0.9 and acc.best_step is not None
    with pytest.raises(ConfigError, match="needs labelled samples"):
        prune_until(model, magnitude, STEPS, samples, metric="accuracy", tolerance=0.1)


def test_channel_search_with_stats_context() -> None:
    src = build("cnn")
    model = ir.load(src)
    samples = [random_feeds(src, seed=s, dims={"N": 1}) for s in range(2)]
    stats = collect_channel_stats(model, samples, channel_stat_tensors(ir.clone(model)))
    result = prune_until(
        model,
        lambda s: make_pass("prune-channels", {"ratio": s, "criterion": "mean-activation", "round_to": 1}),
        [0.1, 0.5],
        samples,
        tolerance=0.5,
        ctx_factory=lambda s: PassContext(channel_stats=stats),
    )
    first = result.curve[0]
    assert first["modified"] and first["params"] == first["stats"]["params_after"] < first["stats"]["params_before"]
    assert [c["step"] for c in result.curve] == [0.1, 0.5][: len(result.curve)]


@pytest.mark.parametrize(
    "steps, metric, tolerance, message",
    [
        ([], "cosine", 0.1, "strictly increasing"),
        ([0.2, 0.1], "cosine", 0.1, "strictly increasing"),
        ([0.1], "mse", 0.1, "metric must be"),
        ([0.1], "cosine", -1.0, "tolerance"),
    ],
)
def test_bad_arguments(steps: list, metric: str, tolerance: float, message: str) -> None:
    model, samples = mlp_samples(1)
    with pytest.raises(ConfigError, match=message):
        prune_until(model, magnitude, steps, samples, metric=metric, tolerance=tolerance)
