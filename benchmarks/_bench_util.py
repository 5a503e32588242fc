"""Shared benchmark helpers: run a function in its own memory-capped subprocess, print tables.

API (small on purpose)::

    from _bench_util import run_isolated, print_table

    r = run_isolated("bench_x:child", {"n": 64}, mem_cap_gb=12, timeout_s=900)
    r.status        # "ok" | "oom" | "timeout" | "error"
    r.value         # what bench_x.child(n=64) returned (JSON-serialisable), None unless ok
    r.peak_rss_mb   # the child's own peak resident set size
    r.wall_s        # wall time of the whole child process (interpreter start included)
    r.describe()    # "ok" / "out of memory at the 12 GB cap" / "timed out after 900 s" / "failed: ..."
    r.as_dict()     # for JSON reports

    print_table(["model", "s"], [["rec", 1.5]])   # right-aligns numbers, formats floats

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

import dataclasses
import importlib
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["RunResult", "fmt", "json_default", "latency_median", "one_line", "print_table", "ratio", "run_isolated"]

ROOT = Path(__file__).resolve().parents[1]
_OOM_PATTERNS = re.compile(
    r"MemoryError|bad_alloc|Unable to allocate|Failed to allocate|Cannot allocate memory|out of memory"
    r"|can't start new thread|pthread_create|std::system_error|ENOMEM",
    re.IGNORECASE,
)


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


def _status_mb(pid: int | str, key: str) -> float | None:
    """``VmHWM``/``VmPeak``/... of a process in MB, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _max(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _tail(path: Path, lines: int = 20) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


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
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    search_path = [str(Path(main_file).resolve().parent)] if main_file else []
    search_path += [str(Path(__file__).resolve().parent), str(ROOT)]
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        tmpdir = Path(tmp)
        args_path, result_path, log_path = tmpdir / "args.json", tmpdir / "result.json", tmpdir / "log.txt"
        args_path.write_text(json.dumps({"target": target, "kwargs": dict(kwargs or {}), "path": search_path}))
        cap = "0" if mem_cap_gb is None else str(int(mem_cap_gb * 2**30))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(args_path), str(result_path), cap]
        child_env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
        hwm = vm = None
        timed_out = False
        status = 0
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = _max(hwm, _status_mb(proc.pid, "VmHWM"))
            vm = _max(vm, _status_mb(proc.pid, "VmPeak"))
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # our child's own session: it and its children
                except ProcessLookupError:
                    pass
                _, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(poll_s)
        result.wall_s = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
        result.returncode = proc.returncode
        result.log_tail = _tail(log_path)
        reported: dict[str, Any] = {}
        if result_path.exists():
            try:
                reported = json.loads(result_path.read_text())
            except (OSError, ValueError):
                reported = {}
    result.peak_rss_mb = _max(hwm, reported.get("vm_hwm_mb"))
    result.peak_vm_mb = _max(vm, reported.get("vm_peak_mb"))
    if timed_out:
        result.status, result.message = "timeout", f"killed after {timeout_s:g} s"
    elif reported.get("status") in ("ok", "oom", "error"):
        result.status = reported["status"]
        result.value = reported.get("value")
        result.message = reported.get("message", "")
    else:  # died without reporting: a signal or a native abort
        code = result.returncode
        why = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        log = "\n".join(result.log_tail)
        near_cap = mem_cap_gb is not None and result.peak_vm_mb is not None and result.peak_vm_mb >= 0.9 * mem_cap_gb * 1024
        if _OOM_PATTERNS.search(log) or near_cap:
            result.status = "oom"
        elif code == -signal.SIGKILL:
            result.status = "oom"  # the kernel's OOM killer is the usual sender
            why += " (likely the kernel OOM killer)"
        result.message = f"{why}; last output: {result.log_tail[-1] if result.log_tail else '(none)'}"
    return result


def _child(args_path: str, result_path: str, cap_bytes: str) -> int:
    cap = int(cap_bytes)
    if cap > 0:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    spec = json.loads(Path(args_path).read_text())
    for p in reversed(spec["path"]):
        if p not in sys.path:
            sys.path.insert(0, p)
    out: dict[str, Any]
    try:
        module, _, name = spec["target"].partition(":")
        func = getattr(importlib.import_module(module), name)
        out = {"status": "ok", "value": func(**spec["kwargs"])}
    except BaseException as e:  # noqa: BLE001 - reported to the parent, traceback to the log
        message = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        oom = isinstance(e, MemoryError) or bool(_OOM_PATTERNS.search(message))
        out = {"status": "oom" if oom else "error", "message": message}
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001 - printing can itself fail without memory
            pass
    out["vm_hwm_mb"] = _status_mb("self", "VmHWM")
    out["vm_peak_mb"] = _status_mb("self", "VmPeak")
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(out, default=json_default))
    os.replace(tmp, result_path)
    return {"ok": 0, "oom": 3}.get(out["status"], 1)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for benchmark results: numpy values, paths and dataclasses."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# ---- small formatting helpers shared by the bench_* scripts -------------------------------------


def one_line(text: Any, limit: int = 160) -> str:
    """``text`` with its whitespace collapsed, cut to ``limit`` characters (for error cells)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt(value: Any, spec: str = ".3f", none: str = "-") -> str:
    """``format(value, spec)``; ``none`` for a missing figure, ``inf``/``nan`` spelled out."""
    if value is None:
        return none
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    return format(value, spec)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either figure is missing (or ``den`` is zero)."""
    return num / den if num is not None and den else None


def latency_median(variant: Mapping[str, Any] | None, threads: int = 1) -> float | None:
    """Median latency (ms) at ``threads`` from a variant result ``{"latency": {"1": {"median_ms"}}}``."""
    return (((variant or {}).get("latency") or {}).get(str(threads)) or {}).get("median_ms")


# ---- tables -------------------------------------------------------------------------------------


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 10 ** -digits):
            return f"{value:.{max(digits, 1)}g}"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 2, file: TextIO | None = None
) -> None:
    """Print ``rows`` under ``headers`` in aligned columns (numbers right-aligned, None as ``-``)."""
    cells = [[_cell(v, digits) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) if rows else False
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(line(list(headers)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells:
        print(line(r), file=file)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        sys.exit(_child(*sys.argv[2:]))
    print(__doc__)
