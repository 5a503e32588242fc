"""Determinism: every mode writes a byte-identical file run after run, whatever the thread count.

Each case converts a small builder model three times: twice with one onnxruntime thread and once
with two (``threads`` for the pipeline's timing and onnxruntime-backed passes, and calibration's
own ``threads``), and the saved files must be equal byte for byte. A last test repeats every case
in a fresh interpreter with another ``PYTHONHASHSEED``: set and dict orders of strings change
there, so any output that depends on them shows.

Outside the guarantee, by design: decisions made from timings (``tune-latency``, dynamic mode's
latency guard) and searches stopped by a time budget. The cases turn those off (``tune=False``,
``guard_latency=False``); their decisions can be replayed (``replay``) for a reproducible file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import onnxq
from models import build
from onnxq import PassManager, ir, make_pass

_DIMS = {"seq": 16, "batch": 1}


def _static(name: str, data: str, **options: Any) -> Callable[[int], ir.Model]:
    def run(threads: int) -> ir.Model:
        pass_options = {"calibrate": {"threads": threads}}
        return onnxq.convert(build(name), data, mode="static", tune=False, threads=threads, pass_options=pass_options, **options).model

    return run


def _passes(name: str, *steps: tuple[str, dict[str, Any]]) -> Callable[[int], ir.Model]:
    def run(threads: int) -> ir.Model:  # these passes run no onnxruntime session: threads do not apply
        return PassManager([make_pass(p, o) for p, o in steps], check=True).run(onnxq.load(build(name))).model

    return run


def _mode(name: str, data: str | None = None, **options: Any) -> Callable[[int], ir.Model]:
    def run(threads: int) -> ir.Model:
        return onnxq.convert(build(name), data, **options).model

    return run


def _dynamic(threads: int) -> ir.Model:
    no_guard = {"quantize-dynamic": {"guard_latency": False}}
    return onnxq.convert(build("transformer"), "synthetic:8", mode="dynamic", threads=threads, dims=_DIMS, pass_options=no_guard).model


_CLEANUP = ("cleanup", {})

#: case → conversion given the onnxruntime thread count.
CASES: dict[str, Callable[[int], ir.Model]] = {
    "static-qdq": _static("cnn", "synthetic:8"),
    "static-qdq-budget": _static("cnn", "synthetic:4", max_memory_mb=0.05),  # many calibration groups
    "static-qoperator": _static("cnn", "synthetic:8", format="qoperator"),
    "static-minmax-transformer": _static("transformer", "synthetic:8", method="minmax", dims=_DIMS),  # in-graph summaries
    "dynamic": _dynamic,
    "weight-only-int4": _mode("mlp", mode="weight-only", weight_bits=4),
    "weight-only-int4-gptq": _mode("mlp", "synthetic:8", mode="weight-only", algorithm="gptq"),
    "weight-only-int4-awq": _mode("mlp", "synthetic:8", mode="weight-only", algorithm="awq"),
    "fp16": _mode("cnn", mode="fp16"),
    "bf16": _mode("cnn", mode="bf16"),
    "prune-magnitude": _passes("transformer", _CLEANUP, ("prune-magnitude", {"global_sparsity": 0.5})),
    "prune-nm": _passes("cnn", _CLEANUP, ("prune-nm", {})),
    "prune-channels": _passes("cnn", _CLEANUP, ("prune-channels", {})),
    "factorize-lowrank": _passes("transformer", _CLEANUP, ("factorize-lowrank", {"energy": 0.9})),
    "cluster-weights": _passes("cnn", _CLEANUP, ("cluster-weights", {})),
    "optimize": _passes("transformer", _CLEANUP),
}


def saved_bytes(model: ir.Model, folder: Path, name: str) -> bytes:
    """The bytes ``ir.save`` writes for ``model`` (with any data file beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = ir.save(model, folder / f"{name}.onnx")
    files = sorted(p for p in folder.iterdir() if p.name.startswith(name))
    assert files and Path(path) in files
    return b"".join(p.name.encode() + p.read_bytes() for p in files)


def digest(case: str, folder: Path) -> str:
    """SHA-256 of ``case`` converted with one thread and saved in ``folder``."""
    return hashlib.sha256(saved_bytes(CASES[case](1), folder, case)).hexdigest()


_DIGESTS: dict[str, str] = {}


@pytest.mark.parametrize("case", list(CASES))
def test_same_bytes_twice_and_across_thread_counts(case: str, tmp_path: Path) -> None:
    first = saved_bytes(CASES[case](1), tmp_path / "a", case)
    again = saved_bytes(CASES[case](1), tmp_path / "b", case)
    two = saved_bytes(CASES[case](2), tmp_path / "c", case)
    assert first == again, f"{case}: two runs with 1 thread wrote different files"
    assert first == two, f"{case}: 1 and 2 onnxruntime threads wrote different files"
    _DIGESTS[case] = hashlib.sha256(first).hexdigest()


_CHILD = """
import json, sys
from pathlib import Path
from tests.test_determinism import CASES, digest
print(json.dumps({case: digest(case, Path(sys.argv[1]) / case) for case in CASES}))
"""


def test_same_bytes_under_another_hash_seed(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    seed = "12345" if os.environ.get("PYTHONHASHSEED") != "12345" else "54321"
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "child")], cwd=root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    here = {case: _DIGESTS.get(case) or digest(case, tmp_path / "here" / case) for case in CASES}
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    there = json.loads(out.strip().splitlines()[-1])
    differ = sorted(c for c in CASES if here[c] != there[c])
    assert not differ, f"different files under PYTHONHASHSEED={seed}: {differ}"
