"""The report's plots, drawn with matplotlib into strings the HTML page inlines (no files, no network).

matplotlib because it renders offline into self-contained SVG (line plots and histograms stay
vector and small: text is kept as text, ``svg.fonttype = none``) and PNG (heatmaps), is maintained,
packaged for every platform, and needs no JavaScript at view time; plotly would embed about 3 MB
of JavaScript into every page to draw the same three kinds of plots. It is an optional extra
(``pip install 'onnxq[report]'``), imported only when a page is drawn; figures are built with the
object API (``Figure``), never pyplot's global state, and the Agg/SVG backends, so nothing opens a
window.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._report import TensorStats

__all__ = ["require_matplotlib", "sqnr_plot", "histogram_plot", "error_map_plot"]

_ACCUMULATED, _LOCAL, _JUMP, _CLIP = "#1f5fa8", "#e07b00", "#c0262d", "#7a7a7a"
_STYLE: Any = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}


def require_matplotlib() -> Any:
    """``matplotlib.figure.Figure``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ConfigError("the HTML report draws its plots with matplotlib: pip install 'onnxq[report]' (or pip install matplotlib)") from e
    return Figure


@contextmanager
def _figure(figsize: tuple[float, float]) -> Iterator[tuple[Any, Any]]:
    """A new ``Figure`` of ``figsize`` inches and its one axes, drawn under the report's style."""
    import matplotlib

    Figure = require_matplotlib()
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=figsize)
        yield fig, fig.add_subplot()


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = re.sub(r"^.*?(<svg\b)", r"\1", text, flags=re.S)  # drop the XML prolog and DOCTYPE
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # creation date and tool: noise in a report
    return text.replace("<svg ", '<svg class="plot" role="img" ', 1)


def _png(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{_escape(alt)}" src="data:image/png;base64,{data}">'


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _finite(values: Sequence[float | None], cap: float) -> np.ndarray:
    """SQNR values for plotting: None as NaN (a gap), +inf (no error) drawn at ``cap``."""
    out = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.where(np.isposinf(out), cap, out)


def sqnr_plot(tensors: Sequence[TensorStats], jump_db: float) -> str:
    """SQNR of every compared tensor along QUANT's topological order: accumulated and local, jumps marked."""
    with _figure((11, 3.6)) as (fig, ax):
        x = np.arange(len(tensors))
        known = [v for t in tensors for v in (t.sqnr, t.local_sqnr) if v is not None and math.isfinite(v)]
        cap = (max(known) + 5) if known else 60.0
        ax.plot(x, _finite([t.sqnr for t in tensors], cap), color=_ACCUMULATED, lw=1.4, marker=".", ms=4, label="accumulated (QUANT as it runs)")
        ax.plot(x, _finite([t.local_sqnr for t in tensors], cap), color=_LOCAL, lw=1.0, ls="--", marker=".", ms=3, label="local (layer fed float inputs)")
        jumps = [i for i, t in enumerate(tensors) if t.first_jump]
        if jumps:
            ax.scatter(jumps, _finite([tensors[i].sqnr for i in jumps], cap), s=60, facecolors="none", edgecolors=_JUMP, lw=1.6, zorder=5,
                       label=f"first jump (> {jump_db:g} dB below its inputs)")
        ax.set_xlabel("compared tensor (# in the table, QUANT's topological order)")
        ax.set_ylabel("SQNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, ncol=3)
        return _svg(fig)


def histogram_plot(t: TensorStats) -> str:
    """Float values of one tensor with the range its scale and zero point represent drawn on them."""
    with _figure((4.6, 2.6)) as (fig, ax):
        if t.histogram is not None:
            edges, counts = t.histogram
            ax.stairs(np.maximum(counts, 0.8), edges, fill=True, color=_ACCUMULATED, alpha=0.75)
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.8)
            if t.range_used is not None:
                lo, hi = t.range_used
                ax.axvspan(edges[0], lo, color=_JUMP, alpha=0.08)
                ax.axvspan(hi, edges[-1], color=_JUMP, alpha=0.08)
                ax.axvline(lo, color=_JUMP, lw=1.2)
                ax.axvline(hi, color=_JUMP, lw=1.2, label="clip range (scale, zero point)")
                ax.legend(loc="best", frameon=False, fontsize=7)
        sat = f", {t.saturation * 100:.3g}% clipped" if t.saturation is not None else ""
        ax.set_title(_short(t.tensor) + sat, fontsize=8.5)
        ax.set_xlabel("float value")
        ax.set_ylabel("count (sampled)")
        return _svg(fig)


def error_map_plot(t: TensorStats) -> str:
    """|float - quantized| on one 2-D slice of the first sample (max-pooled), as a heatmap."""
    with _figure((3.6, 3.0)) as (fig, ax):
        if t.error_map is not None:
            image = ax.imshow(t.error_map, cmap="magma", aspect="auto", interpolation="nearest")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="|error|")
        ax.set_title(_short(t.tensor), fontsize=8.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(t.map_caption, fontsize=7.5)
        return _png(fig, f"error map of {t.tensor}")


def _short(name: str, width: int = 46) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]
