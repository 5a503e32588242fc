"""Run one function in its own memory-capped subprocess and measure it.

::

    r = run_isolated("bench_x:child", {"n": 64}, mem_cap_gb=12, timeout_s=900)
    r.status        # "ok" | "oom" | "timeout" | "error"
    r.value         # what bench_x.child(n=64) returned (JSON-serialisable), None unless ok
    r.peak_rss_mb   # the child's own peak resident set size
    r.wall_s        # wall time of the whole child process (interpreter start included)
    r.describe()    # "ok" / "out of memory at the 12 GB cap" / "timed out after 900 s" / "failed: ..."
    r.as_dict()     # for JSON reports

``target`` is ``"module:function"``; the child puts the folder of the parent's ``__main__`` script,
``benchmarks/`` and the repository root on ``sys.path`` before importing it, so a benchmark script can
name its own functions (keep its top level import-light and guarded by ``__main__``).

How the numbers are taken:

* Peak RSS is the child's ``VmHWM`` (``/proc/<pid>/status``): read by the child itself just before it
  exits and polled by the parent every ``poll_s`` seconds (so a child that is killed still has a
  figure). ``ru_maxrss`` from ``wait4``/``RUSAGE_CHILDREN`` is *not* used: on Linux it carries the
  parent's resident size over ``fork``/``exec``, so a child of a 800 MB parent reports >= 800 MB.
* The memory cap is ``RLIMIT_AS`` (address space), set by the child on itself before importing
  anything. Hitting it shows up as ``MemoryError``, a failed allocation in a native library
  (``bad_alloc``, "Failed to allocate", a thread that cannot start) or a crash; the child reports
  the first two and the parent classifies crashes whose virtual size came within 10% of the cap.
  Either way the status is ``"oom"`` and nothing beyond the cap is ever allocated.
* The timeout kills the child's process group (it runs in a session of its own) with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._child import OOM_PATTERNS, status_mb

__all__ = ["RunResult", "run_isolated"]

_CHILD = Path(__file__).resolve().with_name("_child.py")
_BENCHMARKS = Path(__file__).resolve().parents[1]


@dataclass
class RunResult:
    """Outcome of one :func:`run_isolated` call."""

    target: str
    status: str  # "ok" | "oom" | "timeout" | "error"
    value: Any = None
    peak_rss_mb: float | None = None
    peak_vm_mb: float | None = None
    wall_s: float = 0.0
    message: str = ""
    returncode: int | None = None
    mem_cap_gb: float | None = None
    timeout_s: float | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One line for a table or a log: what happened, without a traceback."""
        if self.status == "ok":
            return "ok"
        if self.status == "oom":
            return f"out of memory at the {_gb(self.mem_cap_gb)} GB cap"
        if self.status == "timeout":
            return f"timed out after {self.timeout_s:g} s"
        return f"failed: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status,
            "outcome": self.describe(),
            "peak_rss_mb": _round(self.peak_rss_mb),
            "peak_vm_mb": _round(self.peak_vm_mb),
            "wall_s": round(self.wall_s, 3),
            "returncode": self.returncode,
            "mem_cap_gb": self.mem_cap_gb,
            "timeout_s": self.timeout_s,
            "message": self.message,
            "value": self.value,
            "log_tail": self.log_tail,
        }


def _gb(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _max(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _tail(path: Path, lines: int = 20) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _search_path() -> list[str]:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    path = [str(Path(main_file).resolve().parent)] if main_file else []
    return path + [str(_BENCHMARKS), str(_BENCHMARKS.parent)]


@dataclass
class _Watch:
    """What the parent saw of a child while it ran."""

    status: int = 0
    hwm: float | None = None
    vm: float | None = None
    timed_out: bool = False


def _watch(proc: subprocess.Popen, start: float, timeout_s: float | None, poll_s: float) -> _Watch:
    """Poll the child's memory figures until it exits; kill its process group at the timeout."""
    seen = _Watch()
    while True:
        pid, seen.status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return seen
        seen.hwm = _max(seen.hwm, status_mb(proc.pid, "VmHWM"))
        seen.vm = _max(seen.vm, status_mb(proc.pid, "VmPeak"))
        if timeout_s is not None and time.perf_counter() - start > timeout_s:
            seen.timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # our child's own session: it and its children
            except ProcessLookupError:
                pass
            _, seen.status, _ = os.wait4(proc.pid, 0)
            return seen
        time.sleep(poll_s)


def _classify(result: RunResult, reported: Mapping[str, Any], timed_out: bool) -> None:
    """Status and message from the child's own report, or from how it died."""
    if timed_out:
        result.status, result.message = "timeout", f"killed after {result.timeout_s:g} s"
        return
    if reported.get("status") in ("ok", "oom", "error"):
        result.status = reported["status"]
        result.value = reported.get("value")
        result.message = reported.get("message", "")
        return
    # Died without reporting: a signal or a native abort.
    code, cap = result.returncode, result.mem_cap_gb
    why = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    near_cap = cap is not None and result.peak_vm_mb is not None and result.peak_vm_mb >= 0.9 * cap * 1024
    if OOM_PATTERNS.search("\n".join(result.log_tail)) or near_cap:
        result.status = "oom"
    elif code == -signal.SIGKILL:
        result.status = "oom"  # the kernel's OOM killer is the usual sender
        why += " (likely the kernel OOM killer)"
    result.message = f"{why}; last output: {result.log_tail[-1] if result.log_tail else '(none)'}"


def run_isolated(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    mem_cap_gb: float | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    poll_s: float = 0.1,
) -> RunResult:
    """Call ``target(**kwargs)`` in a fresh Python subprocess; see the module docstring.

    Args:
        target: ``"module:function"``; the function's return value must be JSON-serialisable.
        kwargs: JSON-serialisable keyword arguments.
        mem_cap_gb: address-space cap (RLIMIT_AS) for the child, None for none.
        timeout_s: wall-clock limit, None for none.
        env: extra environment variables for the child.
        poll_s: how often the parent samples the child's ``/proc`` memory figures.
    """
    result = RunResult(target, "error", mem_cap_gb=mem_cap_gb, timeout_s=timeout_s)
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        tmpdir = Path(tmp)
        args_path, result_path, log_path = tmpdir / "args.json", tmpdir / "result.json", tmpdir / "log.txt"
        args_path.write_text(json.dumps({"target": target, "kwargs": dict(kwargs or {}), "path": _search_path()}))
        cap = "0" if mem_cap_gb is None else str(int(mem_cap_gb * 2**30))
        cmd = [sys.executable, str(_CHILD), str(args_path), str(result_path), cap]
        child_env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
        seen = _watch(proc, start, timeout_s, poll_s)
        result.wall_s = time.perf_counter() - start
        proc.returncode = result.returncode = os.waitstatus_to_exitcode(seen.status)  # reaped by wait4
        result.log_tail = _tail(log_path)
        reported: dict[str, Any] = {}
        if result_path.exists():
            try:
                reported = json.loads(result_path.read_text())
            except (OSError, ValueError):
                reported = {}
    result.peak_rss_mb = _max(seen.hwm, reported.get("vm_hwm_mb"))
    result.peak_vm_mb = _max(seen.vm, reported.get("vm_peak_mb"))
    _classify(result, reported, seen.timed_out)
    return result
