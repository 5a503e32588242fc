"""Run mypy on onnxq as it is installed: ``passes/`` is ``onnxq.passes`` and ``models/`` is ``onnxq.models``.

setuptools maps those folders into the package (``[tool.setuptools.package-dir]``); mypy has no
such mapping, so run on the source tree it would see ``passes`` as a top-level package and every
``onnxq.passes`` import as missing (silently, with ``ignore_missing_imports``). This builds the
installed layout as a tree of symlinks under ``build/typecheck`` and checks that, printing paths
as they are in the repository. Exit code: mypy's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"
MAPPED = {"passes": ROOT / "passes", "models": ROOT / "models"}


def build_tree() -> Path:
    """``build/typecheck/onnxq`` with onnxq's entries, plus ``passes`` and ``models``, as symlinks."""
    if TREE.exists():
        shutil.rmtree(TREE)
    package = TREE / "onnxq"
    package.mkdir(parents=True)
    for entry in (ROOT / "onnxq").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, target in MAPPED.items():
        (package / name).symlink_to(target)
    return package


def main() -> int:
    package = build_tree()
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(package)],
        cwd=TREE,
        capture_output=True,
        text=True,
    )
    prefix = f"onnxq{os.sep}"
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(prefix + "passes" + os.sep) or line.startswith(prefix + "models" + os.sep):
            line = line[len(prefix) :]
        print(line)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
