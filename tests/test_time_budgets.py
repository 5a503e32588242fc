"""Time bounds of the search loops: each has a budget, and says the seconds spent and whether it cut the search.

- ``adaround``: ``seconds_per_layer``; stats ``seconds`` and ``budget_cut_layers``.
- SmoothQuant's alpha search: :class:`~onnxq.passes.quantization._smooth_search.SearchBudget`;
  ``search_seconds`` and ``search_cut_short``.
- ``onnxq.sensitivity``: ``budget_s``; the report's ``seconds`` and a note saying whether the budget
  cut the analysis short (and how many units it left out).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import onnxq
from models import build
from onnxq.passes.compensation._rounding import RoundingProblem, learn_rounding
from onnxq.passes.quantization._smooth_search import SearchBudget, best_alpha
from tests.passes.quantization._compensation_util import run_steps, static_steps


def _rounding_problem() -> RoundingProblem:
    x = np.random.default_rng(1).standard_normal((200, 3)) @ np.random.default_rng(2).standard_normal((3, 12))
    w = np.random.default_rng(3).standard_normal((1, 4, 12))
    scale = np.float64(np.abs(w).max() / 63)
    return RoundingProblem(w, scale, np.float64(0.0), -64, 64, np.rint(w / scale), (x.T @ x / 200)[None])


def test_adaround_layer_budget_cuts_the_steps_and_says_so() -> None:
    p = _rounding_problem()
    cut = learn_rounding(p, iterations=10**9, seconds=0.05)
    assert cut.cut_short and cut.steps < 10**9 and 0.05 <= cut.seconds < 5.0
    full = learn_rounding(p, iterations=50, seconds=60.0)
    assert not full.cut_short and full.steps == 50


@pytest.mark.parametrize(("seconds", "cut"), [(1e-6, True), (60.0, False)])
def test_adaround_stats_count_the_layers_the_budget_cut(seconds: float, cut: bool) -> None:
    proto = build("cnn")
    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    step = {"pass": "adaround", "samples": 4, "positions": 64, "iterations": 20, "seconds_per_layer": seconds}
    _, _, records = run_steps(proto, static_steps(after=[step]), calib)
    stats = records["adaround"].stats
    assert stats["layers"] > 0 and isinstance(stats["seconds"], float)
    assert stats["budget_cut_layers"] == (stats["layers"] if cut else 0)


def _alpha_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)) * np.array([1, 1, 1, 30, 1, 1, 1, 1.0])
    return x, x.min(axis=0), x.max(axis=0), [rng.standard_normal((8, 4))]


def _scales(x: np.ndarray, w: np.ndarray) -> Callable[[float], np.ndarray]:
    act, wmax = np.abs(x).max(axis=0), np.abs(w).max(axis=1)
    return lambda a: np.clip(act**a / wmax ** (1 - a), 1e-2, 1e2)


def test_alpha_search_without_a_limit_evaluates_every_candidate() -> None:
    x, lo, hi, ws = _alpha_problem()
    budget = SearchBudget()
    _, errors = best_alpha(x, lo, hi, ws, [0.3, 0.5, 0.7], _scales(x, ws[0]), budget=budget)
    assert sorted(errors) == [0.3, 0.5, 0.7]
    stats = budget.as_stats()
    assert stats["search_cut_short"] is False and isinstance(stats["search_seconds"], float)


def test_alpha_search_stops_when_the_budget_is_spent() -> None:
    x, lo, hi, ws = _alpha_problem()
    spent = SearchBudget(seconds=0.0)
    alpha, errors = best_alpha(x, lo, hi, ws, [0.3, 0.5, 0.7], _scales(x, ws[0]), budget=spent)
    assert list(errors) == [0.3] and alpha == 0.3 and spent.cut_short  # without a fallback: the first candidate
    spent = SearchBudget(seconds=0.0)
    alpha, errors = best_alpha(x, lo, hi, ws, [0.3, 0.5, 0.7], _scales(x, ws[0]), budget=spent, fallback=0.5)
    assert errors == {} and alpha == 0.5 and spent.as_stats()["search_cut_short"] is True


def _sensitivity(budget_s: float) -> onnxq.SensitivityReport:
    rng = np.random.default_rng(0)
    data = [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    return onnxq.sensitivity(build("cnn"), data, metric="sqnr", use_cache=False, budget_s=budget_s, eval_samples=2)


def test_sensitivity_budget_leaves_units_out_and_says_so() -> None:
    cut = _sensitivity(1e-6)  # spent by the preparation: only the two baselines run
    assert cut.units == [] and cut.evaluated == 2
    assert "cut the analysis short" in cut.notes[-1] and cut.seconds > 0
    full = _sensitivity(600.0)
    assert full.units and "not reached" in full.notes[-1]


def test_sensitivity_budget_must_be_positive() -> None:
    with pytest.raises(onnxq.ConfigError, match="budget_s"):
        _sensitivity(0.0)
