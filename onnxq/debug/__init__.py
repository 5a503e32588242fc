"""Layer-wise error analysis of a quantized model against its float original (``onnxq debug``).

- :func:`match_tensors` (:mod:`._match`): which float tensor each quantized activation of QUANT
  stands for, through Q/DQ pairs, QLinear ops and folded or renamed nodes; what has no twin, why.
- :func:`compare_layers` (:mod:`._compare`): both models run side by side on the same samples,
  streamed in memory-bounded groups, every matched tensor measured (SQNR, cosine, errors, range used
  vs observed, saturation), each layer also run on float inputs (:mod:`._local`) to split the error it
  adds from the error it inherits; the result is a :class:`LayerReport` (:mod:`._report`) with the
  first jumps and the blame ranking.
- :func:`write_html` (:mod:`._html`): a self-contained HTML page of a report (plots inline, no
  network), optionally with a conversion report's decisions (``onnxq convert --report-html``).

This package is part of the framework: it never imports the pass library or the application layer.
"""

from __future__ import annotations

from ._compare import DEFAULT_JUMP_DB, NothingQuantizedError, check_correspondence, compare_layers
from ._html import render_html, write_html
from ._match import MatchResult, TensorMatch, Unmatched, match_tensors
from ._plots import require_matplotlib
from ._qparams import QuantParams
from ._report import EXACT_INPUT_DB, LayerReport, TensorStats

__all__ = [
    "DEFAULT_JUMP_DB",
    "EXACT_INPUT_DB",
    "LayerReport",
    "MatchResult",
    "NothingQuantizedError",
    "QuantParams",
    "TensorMatch",
    "TensorStats",
    "Unmatched",
    "check_correspondence",
    "compare_layers",
    "match_tensors",
    "render_html",
    "require_matplotlib",
    "write_html",
]
