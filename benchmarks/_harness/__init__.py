"""The side-by-side benchmark harness every ``benchmarks/bench_*.py`` configures.

A benchmark script declares *what* is compared (models, contenders, task metric, goals); the
harness does the measuring the same way for all of them:

================  ===================================================================================
module            what it holds
================  ===================================================================================
``comparison``    the declarative description (:class:`~comparison.Comparison`, ``Contender``,
                  ``Feeds``) and the runner: isolated conversions → evaluation against fp32 →
                  interleaved timing, one result dict per contender (:func:`~comparison.side_by_side`)
``isolate``       ``run_isolated``: a function in a fresh, memory-capped subprocess (peak RSS, time)
``_child``        the child side of ``run_isolated`` (run as a script; imports nothing heavy)
``convert``       the registry of named converters the isolated conversion children run
``incumbent``     every call into ``onnxruntime.quantization`` (the incumbent's configurations)
``onnxq_api``     every call into ``onnxq`` (the one adapter to update when its entry points move)
``timing``        run plans (how many interleaved runs) and interleaved medians per thread count
``metrics``       task metrics against fp32's outputs (agreement, top-1, char accuracy, IoU, rows)
``evaluate``      sessions for every contender and the one evaluation loop over held-out feeds
``data``          model sources (builders, zoo, MiniLM), seeded feeds, ``.npz`` folders
``report``        cell formatting, the one table printer (aligned text and Markdown), JSON output
``goals``         :class:`~goals.Goal` (PASS / FAIL / SKIP with the measured detail) and its printer
``cli``           the per-model loop, work folders and the argument parsing the scripts share
================  ===================================================================================

Importing the package puts ``benchmarks/`` and the repository root on ``sys.path`` (the scripts
import ``ocr_data`` and ``models``; the isolated children import the scripts by name).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
