"""``--target openvino``: a clear message naming the extra when OpenVINO is missing, and, where it is
installed, int8 kernels that really ran (OpenVINO's PERF_COUNT) with outputs close to fp32."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import onnx
import pytest

from models import build
from onnxq.errors import ConfigError
from onnxq.lint import lint
from onnxq.runtime.openvino import OPENVINO_EXTRA, require_openvino
from tests.helpers import cosine, invoke, random_feeds, run
from tests.targets._util import converted, summarize

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed (pip install 'onnxq[openvino]')")


@pytest.fixture()
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import openvino`` raises ImportError (a None entry in sys.modules does that)."""
    monkeypatch.setitem(sys.modules, "openvino", None)


def test_missing_openvino_names_the_extra(no_openvino: None) -> None:
    with pytest.raises(ConfigError) as err:
        require_openvino()
    assert "onnxq[openvino]" in str(err.value) and OPENVINO_EXTRA in str(err.value)


def test_convert_for_openvino_without_it_is_one_line_before_any_work(no_openvino: None, tmp_path: Path) -> None:
    onnx.save(build("cnn"), str(tmp_path / "cnn.onnx"))
    out = tmp_path / "q.onnx"
    code, stdout, err = invoke("convert", str(tmp_path / "cnn.onnx"), "-o", str(out), "--data", "synthetic:2", "--dim", "N=1", "--target", "openvino")
    assert code == 2 and stdout == ""  # refused before the pipeline ran (no pass table)
    assert err.strip().count("\n") == 0 and "OpenVINO is not installed" in err and "onnxq[openvino]" in err
    assert not out.exists()


def test_lint_for_openvino_without_it_notes_the_skipped_rule(no_openvino: None) -> None:
    model, _, _ = converted("generic", tune=False)
    report = lint(model, "openvino")
    assert any("unsupported-op not checked" in n and "onnxq[openvino]" in n for n in report.notes)
    assert report.exit_code == 0  # the other rules still ran on a clean model


@needs_openvino
def test_openvino_target_runs_int8_kernels_within_the_guard() -> None:
    model, report, _ = converted("openvino", tune=False)
    validation = report["target"]["validation"]
    checks = {c["check"]: c for c in validation["checks"]}
    assert checks["int8 kernels executed"]["passed"] and checks["matches fp32 within the accuracy guard"]["passed"]
    executed = validation["details"]["executed"]
    assert sum(n for key, n in executed.items() if key.endswith((":i8", ":u8"))) > 0
    s = summarize(model)
    assert s.activation_dtypes == {"uint8"} and s.weight_dtypes == {"int8"} and set(s.weight_zero_points) == {0}
    onnx.checker.check_model(model, full_check=True)


@needs_openvino
def test_openvino_int8_count_and_accuracy_measured_independently() -> None:
    """Our own OpenVINO session: PERF_COUNT shows 8-bit convolutions; cosine vs onnxruntime fp32 >= 0.99."""
    from onnxq.runtime.openvino import OpenVINOSession, int8_nodes

    model, _, _ = converted("openvino", tune=False)
    sess = OpenVINOSession(model, threads=1, perf_counters=True)
    fp32 = build("cnn")
    for seed in (31, 32):
        feeds = random_feeds(fp32, seed=seed, dims={"N": 1})
        got = sess.run(None, feeds)[0]
        assert cosine(run(fp32, feeds)[0], got) >= 0.99
    int8, other = int8_nodes(sess)
    assert len(int8) > 0 and len(int8) >= len(other)


@needs_openvino
def test_openvino_finds_no_unsupported_op_in_a_standard_model() -> None:
    from onnxq.runtime.openvino import openvino_unsupported_ops

    model, _, _ = converted("generic", tune=False)
    from onnxq import ir

    assert openvino_unsupported_ops(ir.load(model)) == {}
