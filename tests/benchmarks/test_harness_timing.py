"""Run plans and interleaved timing of the harness (``benchmarks/_harness/timing.py``), with fake sessions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks._harness import onnxq_api, timing
from benchmarks._harness.timing import RunPlan, TimingSpec


class FakeSession:
    """Records every run, in order, in a shared log; declares one input ``x``."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def get_inputs(self) -> list[Any]:
        return [SimpleNamespace(name="x")]

    def run(self, outputs: Any, feed: dict[str, Any]) -> list[Any]:
        assert set(feed) == {"x"}, "extra feeds must be filtered out"
        self.log.append(self.name)
        return [feed["x"]]


@pytest.mark.parametrize(
    ("plan", "probe", "models", "runs"),
    [
        (RunPlan(2.0, 10, 3000, "fastest"), [0.010, 0.004, 0.020], 3, 500),  # ceil(2 / 0.004): the fastest gets 2 s
        (RunPlan(2.0, 10, 3000, "fastest"), [1.0], 1, 10),  # at least min_runs
        (RunPlan(1e6, 10, 3000, "fastest"), [0.001], 1, 3000),  # at most max_runs
        (RunPlan(90.0, 30, 1000, "round"), [0.5, 0.25, 0.75], 3, 60),  # one round of all models (1.5 s) fits 90 s
        (RunPlan(25.0, 30, 200, "share"), [0.05], 5, 100),  # the models share 25 s: 25 / (0.05 * 5)
        (RunPlan(25.0, 30, 200, "share"), [0.0], 5, 200),  # an instantaneous probe gets max_runs
        (RunPlan(25.0, 30, 200, "share", fixed=7), [], 5, 7),  # --runs
    ],
)
def test_run_plan_rules(plan: RunPlan, probe: list[float], models: int, runs: int) -> None:
    assert plan.runs(probe, models) == runs


def test_run_plan_refuses_unknown_rules() -> None:
    with pytest.raises(ValueError, match="fastest, round, share"):
        RunPlan(1.0, 1, 10, rule="slowest")


def test_probe_runs_per_rule() -> None:
    log: list[str] = []
    sessions = [FakeSession("a", log), FakeSession("b", log)]
    feed = {"x": 1, "label": "ignored"}
    assert len(RunPlan(1, 1, 10, "fastest").probe(sessions, feed)) == 2 and log == ["a"] * 4 + ["b"] * 4  # 1 warm + 3 timed
    log.clear()
    assert len(RunPlan(1, 1, 10, "round").probe(sessions, feed)) == 2 and log == ["a", "a", "b", "b"]  # 1 warm + 1 timed
    log.clear()
    assert len(RunPlan(1, 1, 10, "share").probe(sessions, feed)) == 1 and log == ["a"]  # the first model, once
    log.clear()
    assert RunPlan(1, 1, 10, fixed=3).probe(sessions, feed) == [] and log == []


def test_interleaved_rotates_the_starting_model_each_round() -> None:
    log: list[str] = []
    sessions = {n: FakeSession(n, log) for n in ("fp32", "ort", "onnxq")}
    result = timing.interleaved(sessions, {"x": 1}, RunPlan(0, 1, 10, fixed=3), warmup=1)
    # warm-up: one round in order; then round r starts at model r (mod 3)
    assert log == ["fp32", "ort", "onnxq", "fp32", "ort", "onnxq", "ort", "onnxq", "fp32", "onnxq", "fp32", "ort"]
    assert list(result) == ["fp32", "ort", "onnxq"]
    assert all(r["runs"] == 3 and r["median_ms"] >= 0 for r in result.values())


def test_drift_pct() -> None:
    assert timing.drift_pct([1.0, 1.0, 1.1, 1.1], 1.05) == pytest.approx(9.52, abs=0.01)
    assert timing.drift_pct([1.0, 2.0, 3.0], 2.0) is None  # fewer than two runs per half


def test_time_contenders_reuses_or_opens_sessions_and_keeps_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    opened: list[tuple[str, int]] = []

    def make_session(model: Any, *, threads: int = 1, where: str | None = None) -> FakeSession:
        if threads == 4:
            raise RuntimeError("no such thread count")
        opened.append((model, threads))
        return FakeSession(f"{model}@{threads}", log)

    monkeypatch.setattr(onnxq_api, "make_session", make_session)
    reused = {"a": FakeSession("a@1", log), "b": FakeSession("b@1", log)}
    spec = TimingSpec([1, 2, 4], RunPlan(0, 1, 10, fixed=2), warmup=0, reuse_sessions=True)
    latency, errors = timing.time_contenders({"a": "a.onnx", "b": "b.onnx"}, {"x": 1}, spec, sessions=reused, session_threads=1)
    assert opened == [("a.onnx", 2), ("b.onnx", 2)]  # 1 thread reused the evaluation's sessions
    assert reused == {}  # handed over, freed after their thread count
    assert set(latency["a"]) == {"1", "2"} and latency["b"]["2"]["runs"] == 2
    assert errors == {"4": "no such thread count"}


def test_load_ms_opens_round_robin_and_takes_the_median(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round opens every model once, starting one model later than the round before; the figure is
    the median of the per-opening wall times (the fake clock makes 'b' cost 5 ms except one 50 ms outlier)."""
    log: list[str] = []
    costs = {"a": [1.0, 1.0, 1.0], "b": [5.0, 50.0, 5.0]}
    now = [0.0]

    def opener(name: str) -> Any:
        def open_model() -> str:
            log.append(name)
            now[0] += costs[name][sum(n == name for n in log) - 1] / 1e3
            return name

        return open_model

    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    result = timing.load_ms({"a": opener("a"), "b": opener("b")}, repeats=3)
    assert log == ["a", "b", "b", "a", "a", "b"]
    assert result == pytest.approx({"a": 1.0, "b": 5.0})
