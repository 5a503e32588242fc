"""Goal evaluation: the harness's :class:`Goal` / ``check`` and the scripts' goals on synthetic results."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks._harness import goals as g
from benchmarks._harness.goals import Goal


def test_goal_verdicts_lines_and_json() -> None:
    assert [Goal("a", ok, "d").verdict for ok in (True, False, None)] == ["PASS", "FAIL", "SKIP"]
    assert Goal("cnn onnxq >= 2x", True, "2.31x").line() == "PASS  cnn onnxq >= 2x: 2.31x"
    goal = Goal("x", None, "not run")
    assert Goal.from_dict(goal.as_dict()) == goal and goal.as_dict() == {"goal": "x", "pass": None, "detail": "not run"}


def test_check() -> None:
    at_least_2 = lambda s: s >= 2.0  # noqa: E731
    assert g.check("speed", 2.5, at_least_2, "{:.2f}x") == Goal("speed", True, "2.50x")
    assert g.check("speed", 1.5, at_least_2, "{:.2f}x") == Goal("speed", False, "1.50x")
    assert g.check("speed", None, at_least_2, "{:.2f}x", failed="onnxq failed: oom") == Goal("speed", False, "onnxq failed: oom")
    assert g.check("speed", 2.5, at_least_2, "{:.2f}x", not_run="cnn not run") == Goal("speed", None, "cnn not run")


def test_print_goals_and_losses(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [Goal("m: onnxq latency <= ort", False, "+5%"), Goal("m: accuracy", True, "ok"), Goal("fp16 size", False, "0.6x")]
    g.print_goals(lines)
    g.print_losses(lines, ": onnxq", "where onnxq loses")
    g.print_goals([], "# goals", empty="(none)")
    assert capsys.readouterr().out.splitlines() == [
        "", "=== goals", "FAIL  m: onnxq latency <= ort: +5%", "PASS  m: accuracy: ok", "FAIL  fp16 size: 0.6x",
        "", "=== where onnxq loses", "  m: onnxq latency <= ort: +5%",
        "", "# goals", "(none)",
    ]


# ---- the scripts' goals on hand-made results --------------------------------------------------
def _variant(ms: float, acc: float, seconds: float = 1.0, ok: bool = True, **extra: Any) -> dict[str, Any]:
    return {"ok": ok, "seconds": seconds, "latency": {"1": {"median_ms": ms}}, "accuracy": {"task": {"value": acc}}, **extra}


def test_static_goals_onnxq_against_each_incumbent() -> None:
    bench_static = pytest.importorskip("benchmarks.bench_static")
    results = [
        {"model": "cnn", "metric": "top1", "variants": {
            "fp32": _variant(10.0, 1.0),
            "ort-minmax": _variant(5.0, 0.99, seconds=2.0),
            "ort-percentile": _variant(4.0, 0.99, ok=False, error="out of memory"),
            "onnxq": _variant(5.05, 1.0, seconds=3.0),
        }},
        {"model": "ppocr-rec", "metric": "rec", "skipped": "no zoo"},
    ]
    lines = {x.goal: x for x in bench_static.goals(results, tolerance=0.02)}
    assert lines["cnn onnxq >= 2x fp32 at 1 thread"].ok is False  # 10 / 5.05 = 1.98x
    # The scripts import the harness as ``_harness`` (benchmarks/ on sys.path), so compare values, not classes.
    assert lines["ppocr-rec onnxq >= 1.5x fp32 at 1 thread"].as_dict() == Goal("ppocr-rec onnxq >= 1.5x fp32 at 1 thread", None, "ppocr-rec not run").as_dict()
    tie = lines["cnn: onnxq latency <= ort-minmax"]
    assert tie.ok is True and tie.detail.endswith("(a tie within --latency-tolerance)")
    assert lines["cnn: onnxq top-1 agree >= ort-minmax"].ok is True
    assert lines["cnn: onnxq conversion faster than ort-minmax"].ok is False
    assert lines["cnn: onnxq vs ort-percentile"].as_dict() == Goal("cnn: onnxq vs ort-percentile", True, "incumbent failed: out of memory").as_dict()


def test_dynamic_goals_skip_what_was_not_asked_for() -> None:
    bench_dynamic = pytest.importorskip("benchmarks.bench_dynamic")

    def v(ms: float, cos: float, size: int, family: str = "int8-dyn") -> dict[str, Any]:
        return {"ok": True, "family": family, "bytes": size, "latency": {"1": {"median_ms": ms}},
                "accuracy": {"cos_mean": cos, "cos_min": cos - 0.001}}

    results = [{"model": "mlp", "minilm": False, "variants": {
        "fp32": v(1.0, 1.0, 1000, "fp32"), "onnxq-dyn": v(1.02, 0.999, 260),
        "onnxq-int4-b32-mse": v(0.9, 0.99, 170, "int4"), "ort-int4-b32": {"ok": False, "family": "int4", "error": "no onnx_ir"},
    }}]
    lines = {x.goal: x for x in bench_dynamic.goals(results)}
    assert lines["mlp onnxq-dyn not slower than fp32 at 1 thread (<= +3% noise band)"].ok is True  # within the band
    assert "mlp onnxq-dyn+smooth not slower than fp32 at 1 thread (<= +3% noise band)" not in lines  # not run: no line
    assert lines["minilm onnxq-dyn: >= 2.5x fp32 at 1 thread, cosine mean >= 0.995, min >= 0.99"].ok is None
    int4 = lines["mlp onnxq-int4-b32-mse: file <= 0.2x fp32 and cosine mean >= ort-int4-b32 (RTN)"]
    assert int4.ok is None and int4.detail == "size 0.170x; RTN baseline no onnx_ir"  # size met, accuracy undecided
