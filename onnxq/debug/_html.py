"""``write_html``: one self-contained HTML file for a layer report and/or a conversion's decisions.

Everything is inline — CSS, a few lines of JavaScript (sortable table), SVG and PNG plots — so the
page opens offline from a file or an attachment and references nothing outside itself. Sections:

- *Conversion* (``onnxq convert --report-html``, from ``ConversionReport.to_dict()``): what the
  conversion did, the nodes left float with their reasons, the tuner's steps with their latencies,
  the accuracy guards, and (when given) a per-node profile's categories.
- *Layer-wise error* (from a :class:`~._report.LayerReport`): SQNR per tensor along the graph
  (accumulated and local), where error jumps first, the layers to blame, histograms of float values
  with the clip range for the worst tensors, their error maps, and a table of every compared tensor
  (one ``<tr>`` per tensor in ``#tensors``) and of every tensor that could not be matched.

The file is written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ._plots import error_map_plot, histogram_plot, require_matplotlib, sqnr_plot
from ._report import LayerReport, TensorStats

__all__ = ["write_html", "render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:34px 0 10px;border-bottom:2px solid #dde2e8;padding-bottom:4px}
h3{font-size:15px;margin:22px 0 8px}.sub{color:#5b6673;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:20px}.card span{color:#5b6673;font-size:12px}
.bad b{color:#c0262d}.grid{display:flex;flex-wrap:wrap;gap:12px}.fig{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:8px}
.fig figcaption{font-size:12px;color:#5b6673;max-width:420px}svg.plot,img.plot{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;background:#fff;width:100%;font-size:12.5px}
th,td{border-bottom:1px solid #e6e9ee;padding:4px 7px;text-align:left;vertical-align:top}
th{background:#eef1f5;position:sticky;top:0;cursor:pointer;user-select:none}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.jump td{background:#fdecec}code{font-size:12px;word-break:break-all}.note{color:#5b6673;font-size:12.5px}
ol.blame li{margin:3px 0}.wrap{overflow-x:auto;max-width:100%}td{overflow-wrap:anywhere}
"""

_JS = """
window.onerror=function(m){document.documentElement.setAttribute('data-js-errors',String(m));};
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=th.dataset.asc!=='1';
      rows.sort(function(a,b){
        var x=a.cells[col].dataset.v,y=b.cells[col].dataset.v;
        var p=parseFloat(x),q=parseFloat(y);
        var r=(isNaN(p)||isNaN(q))?String(x).localeCompare(String(y)):p-q;return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});th.dataset.asc=asc?'1':'0';});});});
document.documentElement.setAttribute('data-rendered','1');
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.{digits}g}"
    return str(value)


def _pct(share: float) -> str:
    """A share as a percentage with three significant digits (0.0008% stays visible)."""
    return f"{share * 100:.3g}%"


def _sort_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "1e308" if value > 0 else "-1e308"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, table_id: str = "", numeric: Sequence[bool] = (), classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            num = j < len(numeric) and numeric[j]
            cells.append(f'<td class="{"n" if num else ""}" data-v="{_e(_sort_value(v))}">{_e(_fmt(v)) if num or v is None else _e(v)}</td>')
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f'<div class="wrap"><table class="sortable"{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _cards(items: Sequence[tuple[str, Any, bool]]) -> str:
    cards = "".join(f'<div class="card{" bad" if bad else ""}"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v, bad in items)
    return f'<div class="cards">{cards}</div>'


def _conversion_section(conv: Mapping[str, Any], profile: Mapping[str, Any] | None) -> str:
    out = ["<h2>Conversion</h2>"]
    before, after = conv.get("bytes_before") or 0, conv.get("bytes_after") or 0
    out.append(_cards([
        ("mode", conv.get("mode", "?"), False),
        ("quantized nodes", conv.get("quantized_nodes", "–"), False),
        ("nodes left float", len(conv.get("float_nodes") or []), False),
        ("size", f"{before / 2**20:.2f} → {after / 2**20:.2f} MiB" if before else "–", False),
        ("seconds", _fmt(conv.get("seconds")), False),
    ]))
    out.append(f'<p class="sub">{_e(conv.get("model", ""))} → {_e(conv.get("output") or "(not saved)")}</p>')
    for note in conv.get("notes") or []:
        out.append(f'<p class="note">note: {_e(note)}</p>')
    floats = conv.get("float_nodes") or []
    out.append(f"<h3>What stayed float, and why ({len(floats)})</h3>")
    rows = [[f.get("node"), f.get("op"), f.get("reason"), f.get("pass")] for f in floats]
    out.append(_table(["node", "op", "reason", "decided by"], rows) if floats else '<p class="note">nothing: every quantizable node is int8.</p>')
    latency = conv.get("latency") or {}
    steps = latency.get("steps") or []
    out.append(f"<h3>Tuner steps ({len(steps)}{', ' + str(latency.get('threads')) + ' thread(s)' if latency.get('threads') else ''})</h3>")
    if steps:
        order = ("step", "nodes", "float_ms", "int8_ms", "with_ms", "without_ms", "speedup", "accepted", "agreement", "cosine", "meets_targets")
        keys = [k for k in order if any(k in s for s in steps)]
        keys += sorted({k for s in steps for k in s} - set(keys) - {"guards"})  # guards: in their own table
        out.append(_table(keys, [[s.get(k) if isinstance(s.get(k), (int, float, str, type(None))) else str(s.get(k)) for k in keys] for s in steps],
                          numeric=[k.endswith("_ms") or k in ("agreement", "cosine", "speedup", "nodes") for k in keys]))
    else:
        out.append('<p class="note">the tuner did not run (--no-tune, or a mode without tuning).</p>')
    guards = conv.get("accuracy_guards") or []
    if guards:
        out.append("<h3>Accuracy guards</h3>")
        keys = ["output", "metric", "threshold", "value", "meets", "why"]
        out.append(_table(keys, [[g.get(k) for k in keys] for g in guards], numeric=[False, False, True, True, False, False]))
    if profile:
        out.append(_profile_section(profile))
    return "\n".join(out)


def _profile_section(profile: Mapping[str, Any]) -> str:
    models = profile.get("models") or []
    rows = []
    for m in models:
        cats = m.get("categories") or {}
        rows.append([m.get("model"), m.get("run_ms"), *((cats.get(k) or {}).get("ms") for k in sorted(cats))])
    cats = sorted({k for m in models for k in (m.get("categories") or {})})
    return "<h3>Latency by category (onnxruntime profile, ms)</h3>" + _table(["model", "run ms", *cats], rows, numeric=[False, True, *[True] * len(cats)])


def _tensor_rows(report: LayerReport) -> tuple[list[list[Any]], list[str]]:
    rows, classes = [], []
    for i, t in enumerate(report.tensors):
        used = t.range_used
        rows.append([
            i, t.tensor, t.layer, t.op, t.sqnr, t.local_sqnr, t.cosine, t.max_abs,
            (t.quantization or {}).get("scale") if t.quantization and not isinstance(t.quantization.get("scale"), list) else None,
            (t.quantization or {}).get("zero_point") if t.quantization and not isinstance(t.quantization.get("zero_point"), list) else None,
            f"[{_fmt(used[0])}, {_fmt(used[1])}]" if used else "float", f"[{_fmt(t.observed[0])}, {_fmt(t.observed[1])}]" if t.observed else "–",
            t.saturation * 100 if t.saturation is not None else None, t.jump, t.matched_by,
        ])
        classes.append("jump" if t.first_jump else "")
    return rows, classes


_TENSOR_HEADERS = [
    "#", "tensor", "layer", "op", "SQNR dB", "local SQNR dB", "cosine", "max |err|", "scale", "zero point", "range used", "range observed", "clipped %",
    "jump dB", "matched by",
]  # fmt: skip
_TENSOR_NUMERIC = [True, False, False, False, True, True, True, True, True, True, False, False, True, True, False]


def _debug_section(report: LayerReport, top: int) -> str:
    worst = report.worst(top)
    jumps = report.first_jumps
    out = ["<h2>Layer-wise error</h2>", f'<p class="sub">FLOAT {_e(report.float_model)} vs QUANT {_e(report.quant_model)}, {report.samples} sample(s)</p>']
    out.append(_cards([
        ("tensors compared", len(report.tensors), False),
        ("quantized tensors", report.quantized, False),
        ("not matched", len(report.unmatched), bool(report.unmatched)),
        ("first jumps", len(jumps), bool(jumps)),
        ("worst local SQNR", f"{_fmt(worst[0].local_sqnr)} dB" if worst else "–", bool(worst and worst[0].local_sqnr is not None and worst[0].local_sqnr < 20)),
    ]))
    caption = ("Accumulated SQNR is what QUANT computes; local SQNR is each layer run on the float model's inputs, so a layer that is low only in "
               "the accumulated curve inherited its error.")
    out.append(f'<figure class="fig" id="sqnr-plot">{sqnr_plot(report.tensors, report.jump_db)}<figcaption>{caption}</figcaption></figure>')
    out.append("<h3>Blame: layers adding the most error (lowest local SQNR)</h3><ol class=\"blame\">")
    out += [f"<li><code>{_e(t.layer)}</code> ({_e(t.op)}) → <code>{_e(t.tensor)}</code>: local {_fmt(t.local_sqnr)} dB, accumulated {_fmt(t.sqnr)} dB"
            f"{', ' + _pct(t.saturation) + ' clipped' if t.saturation else ''}</li>" for t in worst]
    out.append("</ol>")
    if jumps:
        out.append("<h3>Where error jumps first</h3><ol>")
        out += [f"<li><code>{_e(t.tensor)}</code> at <code>{_e(t.layer)}</code>: {_fmt(t.input_sqnr)} → {_fmt(t.sqnr)} dB</li>" for t in jumps]
        out.append("</ol>")
    out.append(_figures("Float values and the clip range (worst tensors)", worst, histogram_plot, "histograms"))
    out.append(_figures("Error maps (worst tensors, first sample)", [t for t in worst if t.error_map is not None], error_map_plot, "error-maps"))
    rows, classes = _tensor_rows(report)
    out.append(f"<h3>Every compared tensor ({len(rows)}; click a header to sort; first jumps highlighted)</h3>")
    out.append(_table(_TENSOR_HEADERS, rows, table_id="tensors", numeric=_TENSOR_NUMERIC, classes=classes))
    out.append(f"<h3>Not matched ({len(report.unmatched)})</h3>")
    out.append(_table(["QUANT tensor", "op", "why"], [[u.tensor, u.op, u.reason] for u in report.unmatched], table_id="unmatched") if report.unmatched
               else '<p class="note">every quantized tensor has a float twin.</p>')
    return "\n".join(out)


def _figures(title: str, tensors: Sequence[TensorStats], draw: Any, ident: str) -> str:
    figs = "".join(f'<figure class="fig">{draw(t)}<figcaption>{_e(t.layer)}</figcaption></figure>' for t in tensors)
    return f'<h3>{_e(title)}</h3><div class="grid" id="{ident}">{figs}</div>'


def render_html(report: LayerReport | None = None, *, conversion: Mapping[str, Any] | None = None, profile: Mapping[str, Any] | None = None,
                title: str | None = None, top: int = 6) -> str:
    """The page as a string (see the module docstring); ``top``: how many worst tensors get plots."""
    require_matplotlib()
    name = title or ("onnxq conversion report" if conversion is not None else "onnxq layer-wise error report")
    parts = [f"<h1>{_e(name)}</h1>", f'<p class="sub">written by onnxq {_e(__version__)}</p>']
    if conversion is not None:
        parts.append(_conversion_section(conversion, profile))
    if report is not None:
        parts.append(_debug_section(report, top))
    elif conversion is not None:
        parts.append('<p class="note">No layer-wise section: the conversion had no data to compare on.</p>')
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(name)}</title><style>{_CSS}</style></head><body><main>{body}</main><script>{_JS}</script></body></html>\n")


def write_html(path: str | os.PathLike[str], report: LayerReport | None = None, *, conversion: Mapping[str, Any] | None = None,
               profile: Mapping[str, Any] | None = None, title: str | None = None, top: int = 6) -> Path:
    """Write the page to ``path`` atomically and return the path.

    Args:
        report: a :func:`~onnxq.debug.compare_layers` result (the layer-wise section).
        conversion: ``ConversionReport.to_dict()`` (the conversion section).
        profile: ``ProfileReport.as_dict()`` of :func:`onnxq.runtime.profile_models` (latency categories).
        top: how many of the worst tensors get a histogram and an error map.

    Raises:
        ConfigError: matplotlib is not installed (``pip install 'onnxq[report]'``).
    """
    text = render_html(report, conversion=conversion, profile=profile, title=title, top=top)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a page to share: the permissions open() would give, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
