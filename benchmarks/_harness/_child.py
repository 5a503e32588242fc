"""Child side of :func:`_harness.isolate.run_isolated`, run as a script before anything heavy loads.

    python _child.py ARGS.json RESULT.json CAP_BYTES

It caps its own address space (``RLIMIT_AS``, 0 = no cap), puts the parent's search path in front,
imports ``module:function`` from ``ARGS.json``, calls it with the JSON keyword arguments and writes
``{"status": "ok" | "oom" | "error", "value" | "message", "vm_hwm_mb", "vm_peak_mb"}`` atomically.
A ``MemoryError`` or a failed native allocation is ``"oom"``; the traceback goes to the log.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

#: What a failed allocation looks like in a message or a log (Python, numpy, onnxruntime, threads).
OOM_PATTERNS = re.compile(
    r"MemoryError|bad_alloc|Unable to allocate|Failed to allocate|Cannot allocate memory|out of memory"
    r"|can't start new thread|pthread_create|std::system_error|ENOMEM",
    re.IGNORECASE,
)


def status_mb(pid: int | str, key: str) -> float | None:
    """``VmHWM``/``VmPeak``/... of a process in MB from ``/proc/<pid>/status``, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for benchmark results: numpy values, paths and dataclasses."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def main(args_path: str, result_path: str, cap_bytes: str) -> int:
    """Run the target described in ``args_path``; the exit code is 0 ok, 3 out of memory, 1 error."""
    cap = int(cap_bytes)
    if cap > 0:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    here = str(Path(__file__).resolve().parent)
    if sys.path and sys.path[0] == here:  # the script's folder would shadow top-level modules
        sys.path.pop(0)
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
        oom = isinstance(e, MemoryError) or bool(OOM_PATTERNS.search(message))
        out = {"status": "oom" if oom else "error", "message": message}
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001 - printing can itself fail without memory
            pass
    out["vm_hwm_mb"] = status_mb("self", "VmHWM")
    out["vm_peak_mb"] = status_mb("self", "VmPeak")
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(out, default=json_default))
    os.replace(tmp, result_path)
    return {"ok": 0, "oom": 3}.get(out["status"], 1)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
