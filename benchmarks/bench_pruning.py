"""Pruning and weight compression on ONNX graphs: size, FLOPs, latency and agreement.

Models
  cnn   ResNet-style builder (``build("cnn")``, random weights), default width 64, 2 blocks per stage,
        128x128 input, 1000 classes: about 10-50 ms per fp32 run at 1 thread.
  det   real PP-OCRv4 detector (``models.zoo.fetch("ppocr-det")``) on rendered pages
        (``benchmarks/ocr_data.py det_samples``) at ``--det-size`` (default 640).
  tfm   BERT-style builder (hidden 384, 12 heads, 6 layers, vocab 30522), sequence 128 (low-rank only).

Sections (``--sections``, default all)
  channel    prune-channels 10/30/50 % (criterion l1; on the CNN also mean-activation from
             collect_channel_stats, and l1 with round_to=8): FLOPs, params, file size, 1-thread latency
             (every variant of a model timed interleaved in one run; ratio vs unpruned), agreement.
  magnitude  prune-magnitude 50 % / 80 %: weight sparsity, file size, deflate size, agreement.
  nm         prune-nm 2:4: the same, plus the layers that were skipped and why.
  lowrank    factorize-lowrank energy 0.9 / flop_ratio 0.5 on tfm: FLOPs, latency, cosine.
  cluster    cluster-weights 4 / 8 bits: file size, deflate size, agreement.
  combo      fp32, pruned fp32 (prune-channels 30 % l1), int8 (static QDQ) and pruned+int8 (ONE
             pipeline: upgrade-opset, cleanup, prune-channels, calibrate, annotate, tune-latency,
             insert-qdq) timed side by side; agreement of each vs fp32.

Agreement is always against the unpruned fp32 model on the same inputs (the CNN and transformer
have random weights, so these are not task accuracies): cosine and SQNR (dB) of the output, top-1
agreement of the CNN's logits, mean mask IoU of the detector's binarised (thresh 0.3) text maps.

Goals (computed from the measurements): 30 % l1 channel pruning gives >= 1.3x lower latency on the
CNN; the pruned+int8 pipeline runs and is faster than both pruned fp32 and int8 (each model).

    python benchmarks/bench_pruning.py [--quick] [--json out.json] [--sections channel,combo] [--det-size 640]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _bench_util import print_table, run_isolated  # noqa: E402

SECTIONS = ("channel", "magnitude", "nm", "lowrank", "cluster", "combo")
CNN_GOAL_SPEEDUP = 1.3

HEADER = (
    "NOTE: the CNN and transformer builders have random (untrained) weights, and no model is fine-tuned\n"
    "after pruning: every accuracy column is AGREEMENT WITH THE UNPRUNED fp32 MODEL on the same inputs\n"
    "(cosine, SQNR dB, top-1 agreement; det: mean IoU of the binarised text mask), not task accuracy.\n"
    "Latency: onnxruntime CPU, 1 thread, median of interleaved runs; 'x' = unpruned median / this median."
)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _err(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:400]}"


def _proto_bytes(model: Any) -> bytes:
    from onnxq import ir

    return ir.to_proto(model).SerializeToString()


def _sizes(model: Any) -> dict[str, int]:
    data = _proto_bytes(model)
    return {"file_bytes": len(data), "deflate_bytes": len(zlib.compress(data, 6))}


def _params(model: Any) -> int:
    from onnxq.inspect import summarize

    return int(summarize(model, flops=False)["parameters"]["count"])


def _flops(model: Any, shapes: dict[str, list[int]], feeds: dict[str, np.ndarray] | None = None) -> int | None:
    """``onnxq.inspect.model_flops``; where its shape inference leaves compute nodes unknown (the
    transformer: onnx cannot follow Shape -> Slice of position_ids) and ``feeds`` are given, the
    shapes are read from one onnxruntime run instead (:func:`_runtime_flops`)."""
    from onnxq.inspect import model_flops

    try:
        res = model_flops(model, shapes)
        if res.get("nodes_with_unknown_shapes") and feeds is not None:
            return _runtime_flops(model, feeds)
        return int(res["total"])
    except Exception:  # noqa: BLE001 - a FLOP count is informative, never fatal
        return None


def _runtime_flops(model: Any, feeds: dict[str, np.ndarray]) -> int:
    """FLOPs (2 per multiply-add) of Conv / ConvTranspose / Gemm / MatMul from the shapes seen in one run."""
    import onnx

    from onnxq import ir
    from onnxq.runtime.session import make_session, run_session

    proto = ir.to_proto(model)
    graph = proto.graph
    consts = {t.name: list(t.dims) for t in graph.initializer}
    compute = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    known = {o.name for o in graph.output} | {i.name for i in graph.input}
    wanted = []
    for n in compute:
        for t in (n.input[0], n.output[0], n.input[1]):
            if t not in consts and t not in known and t not in wanted:
                wanted.append(t)
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in wanted)
    sess = make_session(proto, threads=1, where="flop count")
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, (np.shape(v) for v in run_session(sess, feeds))))
    got.update({k: np.shape(v) for k, v in feeds.items()})
    got.update(consts)
    total = 0
    for n in compute:
        x, w, y = got.get(n.input[0]), got.get(n.input[1]), got.get(n.output[0])
        if x is None or w is None or y is None:
            continue
        if n.op_type == "Conv":
            total += 2 * int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            total += 2 * int(np.prod(x)) * int(np.prod(w[1:]))
        else:
            trans_a = any(a.name == "transA" and a.i for a in n.attribute)
            total += 2 * int(np.prod(y)) * int(x[0] if trans_a else x[-1])
    return total


def _sparsity(model: Any) -> float:
    from onnxq.inspect import weight_sparsity

    return float(weight_sparsity(model)["overall"])


def _run_passes(model: Any, steps: Sequence[tuple[str, dict[str, Any]]], ctx: Any = None) -> tuple[Any, dict[str, Any]]:
    """Run ``steps`` on a clone of ``model``; returns the result and the last pass's stats."""
    from onnxq import PassManager, ir, make_pass

    result = PassManager([make_pass(name, dict(opts)) for name, opts in steps]).run(ir.clone(model), ctx)
    return result.model, dict(result.records[-1].stats) if result.records else {}


def _reasons(skipped: dict[str, str], limit: int = 4) -> str:
    """``{layer: reason}`` summarised as 'count x reason' for the most common reasons."""
    counts: dict[str, int] = {}
    for reason in skipped.values():
        key = reason if len(reason) < 140 else reason[:137] + "..."
        counts[key] = counts.get(key, 0) + 1
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    text = "; ".join(f"{n}x {r}" for r, n in items[:limit])
    return text + (f"; +{len(items) - limit} other reasons" if len(items) > limit else "")


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    try:
        if spec == "x":
            return f"{value:.2f}x"
        if spec == "mb":
            return f"{value / 1e6:.2f}"
        if spec == "m":
            return f"{value / 1e6:.3f}"
        if spec == "g":
            return f"{value / 1e9:.3f}"
        if spec == "%":
            return f"{100 * value:.1f}%"
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def render_table(table: dict[str, Any]) -> None:
    """Print one table: ``columns`` are (key, header, format); a row with ``error`` prints FAILED.

    Cells are formatted here (units, %, x) and right-aligned per column, then laid out by
    ``_bench_util.print_table``."""
    title, columns, rows = table["title"], table["columns"], table["rows"]
    print(f"\n## {title}")
    ok_rows = [r for r in rows if not r.get("error")]
    cells = [[_fmt(r.get(k), spec) for k, _, spec in columns] for r in ok_rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    headers = [h if i == 0 else h.rjust(w) for i, ((_, h, _), w) in enumerate(zip(columns, widths))]
    body = [[v if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))] for c in cells]
    print_table(headers, body)
    for r in rows:
        if r.get("error"):
            print(f"{r.get(columns[0][0])}: FAILED: {r['error']}")
    for r in rows:
        if r.get("note"):
            print(f"  * {r.get(columns[0][0])}: {r['note']}")


# ---------------------------------------------------------------------------------------------
# subjects: a model, its inputs and how agreement is measured
# ---------------------------------------------------------------------------------------------
@dataclass
class Subject:
    name: str
    raw: Any  # as loaded (for the one-pipeline quantization, which runs its own cleanup)
    base: Any  # after cleanup: the unpruned fp32 reference
    shapes: dict[str, list[int]]
    bench_feeds: dict[str, np.ndarray]
    eval_samples: list[dict[str, np.ndarray]]
    calib_samples: list[dict[str, np.ndarray]]
    kind: str  # "cnn" | "det" | "tfm"
    _ref_outputs: list[list[np.ndarray]] | None = field(default=None, repr=False)
    _output_names: list[str] | None = field(default=None, repr=False)

    def reference_outputs(self) -> tuple[list[str], list[list[np.ndarray]]]:
        if self._ref_outputs is None:
            from onnxq.runtime.session import make_session, run_session

            sess = make_session(self.base, threads=1, where=f"{self.name} fp32")
            self._output_names = [o.name for o in sess.get_outputs()]
            self._ref_outputs = [run_session(sess, f) for f in self.eval_samples]
        assert self._output_names is not None
        return self._output_names, self._ref_outputs

    def agreement(self, session: Any) -> dict[str, Any]:
        """Metrics of a candidate session against the unpruned fp32 outputs."""
        from onnxq.runtime.evaluate import compare_outputs
        from onnxq.runtime.session import run_session

        names, refs = self.reference_outputs()
        cands = [run_session(session, f) for f in self.eval_samples]
        res = compare_outputs(names, [(r, c, None) for r, c in zip(refs, cands)])
        out = res.output()
        metrics: dict[str, Any] = {"cosine": out.cosine, "sqnr_db": out.sqnr_db}
        if self.kind == "cnn":
            metrics["top1"] = out.top1_agreement
        if self.kind == "det":
            from ocr_data import det_mask, mask_iou

            ious = [mask_iou(det_mask(r[0]), det_mask(c[0])) for r, c in zip(refs, cands)]
            metrics["mask_iou"] = float(np.mean(ious))
            metrics["mask_iou_min"] = float(np.min(ious))
        return metrics


def make_cnn(cfg: argparse.Namespace) -> Subject:
    from models import build
    from onnxq import PassManager, ir, make_pass

    s = cfg.cnn_size
    raw = ir.load(build("cnn", width=cfg.cnn_width, input_size=s, blocks=cfg.cnn_blocks, num_classes=1000))
    base = PassManager([make_pass("cleanup")]).run(ir.clone(raw)).model
    rng = np.random.default_rng(0)
    # Inputs: smooth random images (normalised like ImageNet preprocessing output), not white noise.
    def image() -> dict[str, np.ndarray]:
        low = rng.standard_normal((1, 3, s // 8, s // 8)).astype(np.float32)
        img = np.repeat(np.repeat(low, 8, axis=2), 8, axis=3) + 0.3 * rng.standard_normal((1, 3, s, s)).astype(np.float32)
        return {"input": img.astype(np.float32)}

    evals = [image() for _ in range(cfg.eval_n)]
    calib = [image() for _ in range(cfg.calib_n)]
    return Subject(f"cnn w{cfg.cnn_width} {s}x{s} b{cfg.cnn_blocks}", raw, base, {"input": [1, 3, s, s]}, evals[0], evals, calib, "cnn")


def make_det(cfg: argparse.Namespace) -> Subject:
    from ocr_data import det_samples

    from models import zoo
    from onnxq import PassManager, ir, make_pass

    s = cfg.det_size
    raw = ir.load(zoo.fetch("ppocr-det"))
    base = PassManager([make_pass("cleanup")]).run(ir.clone(raw)).model
    evals, _ = det_samples(cfg.det_eval_n, seed=0, size=s)
    calib, _ = det_samples(cfg.det_calib_n, seed=1, size=s)
    ev = [{"x": x} for x in evals]
    return Subject(f"ppocr-det {s}x{s}", raw, base, {"x": [1, 3, s, s]}, ev[0], ev, [{"x": x} for x in calib], "det")


def make_tfm(cfg: argparse.Namespace) -> Subject:
    from models import build
    from onnxq import PassManager, ir, make_pass

    h, layers, vocab, seq = cfg.tfm_hidden, cfg.tfm_layers, cfg.tfm_vocab, cfg.tfm_seq
    raw = ir.load(build("transformer", hidden=h, heads=cfg.tfm_heads, layers=layers, vocab=vocab, max_seq=max(seq, 128)))
    base = PassManager([make_pass("cleanup")]).run(ir.clone(raw)).model
    rng = np.random.default_rng(0)

    def sample() -> dict[str, np.ndarray]:
        mask = np.ones((1, seq), dtype=np.int64)
        mask[0, int(seq * 0.9):] = 0  # some padding, as in a real batch
        return {"input_ids": rng.integers(0, vocab, (1, seq), dtype=np.int64), "attention_mask": mask}

    evals = [sample() for _ in range(cfg.tfm_eval_n)]
    shapes = {"input_ids": [1, seq], "attention_mask": [1, seq]}
    return Subject(f"transformer h{h} L{layers} seq{seq}", raw, base, shapes, evals[0], evals, evals, "tfm")


# ---------------------------------------------------------------------------------------------
# measuring a set of variants of one subject
# ---------------------------------------------------------------------------------------------
@dataclass
class Variant:
    label: str
    build: Callable[[], tuple[Any, dict[str, Any]]]  # -> (model, pass stats)


def measure(subject: Subject, variants: Sequence[Variant], cfg: argparse.Namespace, *, latency: bool, describe: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Build every variant (a failure is a row with ``error``), measure static figures and agreement,
    then time the ones that load, interleaved in one run. Row 0 is the unpruned reference."""
    from onnxq.runtime.bench import auto_runs, bench_sessions
    from onnxq.runtime.session import make_session

    rows: list[dict[str, Any]] = []
    sessions: list[tuple[int, Any]] = []
    for v in [Variant("fp32 (unpruned)", lambda: (subject.base, {})), *variants]:
        row: dict[str, Any] = {"model": subject.name, "variant": v.label}
        rows.append(row)
        t0 = time.perf_counter()
        try:
            model, stats = v.build()
        except Exception as e:  # noqa: BLE001 - a pass failing or refusing is a result
            row["error"] = f"pass failed: {_err(e)}"
            print(f"  [{subject.name}] {v.label}: {row['error']}", flush=True)
            continue
        row["build_s"] = round(time.perf_counter() - t0, 2)
        row.update(_sizes(model))
        row["params"] = _params(model)
        row["flops"] = _flops(model, subject.shapes, subject.bench_feeds)
        row["sparsity"] = _sparsity(model)
        if describe is not None:
            row.update(describe(model, stats))
        try:
            sess = make_session(model, threads=1, where=f"{subject.name} {v.label}")
            row.update(subject.agreement(sess))
        except Exception as e:  # noqa: BLE001 - a model onnxruntime rejects is a result too
            row["error"] = f"onnxruntime failed: {_err(e)}"
            print(f"  [{subject.name}] {v.label}: {row['error']}", flush=True)
            continue
        sessions.append((len(rows) - 1, sess))
        print(f"  [{subject.name}] {v.label}: built in {row['build_s']} s", flush=True)
    base = rows[0]
    for r in rows[1:]:
        if r.get("error"):
            continue
        if base.get("flops") and r.get("flops"):
            r["flops_ratio"] = base["flops"] / r["flops"]
        r["file_ratio"] = base["file_bytes"] / r["file_bytes"]
        r["deflate_ratio"] = base["deflate_bytes"] / r["deflate_bytes"]
    if not base.get("error"):
        base.update(flops_ratio=1.0, file_ratio=1.0, deflate_ratio=1.0)
    if latency and sessions:
        if cfg.runs:
            runs = cfg.runs
        else:
            s0 = sessions[0][1]
            t0 = time.perf_counter()
            s0.run(None, subject.bench_feeds)
            runs = auto_runs(time.perf_counter() - t0, cfg.bench_budget_s, models=len(sessions), minimum=cfg.min_runs)
        timings = bench_sessions([s for _, s in sessions], [subject.bench_feeds], runs=runs, warmup=cfg.warmup)
        for (i, _), t in zip(sessions, timings):
            rows[i]["latency_ms"] = t.median_ms
            rows[i]["latency_p90_ms"] = t.p90_ms
            rows[i]["runs"] = t.runs
        if "latency_ms" in base:
            for r in rows:
                if "latency_ms" in r:
                    r["speedup"] = base["latency_ms"] / r["latency_ms"]
    return rows


def agreement_columns(kind: str) -> list[tuple[str, str, str]]:
    cols = [("cosine", "cosine", ".5f"), ("sqnr_db", "SQNR dB", ".1f")]
    if kind == "cnn":
        cols.append(("top1", "top-1 agr", "%"))
    if kind == "det":
        cols += [("mask_iou", "mask IoU", ".4f"), ("mask_iou_min", "IoU min", ".4f")]
    return cols


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def _channel_stats_for(subject: Subject) -> dict[str, Any]:
    from onnxq.passes.pruning import channel_stat_tensors, collect_channel_stats

    return collect_channel_stats(subject.base, subject.calib_samples, channel_stat_tensors(subject.base))


def section_channel(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    from onnxq.pass_base import PassContext

    def describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
        if not st:
            return {}
        d = {"groups_pruned": st.get("pruned_groups"), "channels_removed": st.get("channels_removed")}
        if st.get("skipped"):
            d["note"] = f"{len(st['skipped'])} group(s) left unpruned: {_reasons(st['skipped'])}"
        return d

    ratios = (0.1, 0.3, 0.5)
    for key in ("cnn", "det"):
        if key not in subjects:
            continue
        sub = subjects[key]
        variants = [Variant(f"l1 {int(r * 100)}%", lambda r=r: _run_passes(sub.base, [("prune-channels", {"ratio": r, "criterion": "l1"})])) for r in ratios]
        if key == "cnn":
            stats_holder: dict[str, Any] = {}

            def data_driven(r: float) -> tuple[Any, dict[str, Any]]:
                if "stats" not in stats_holder:
                    stats_holder["stats"] = _channel_stats_for(sub)
                ctx = PassContext()
                ctx.artifacts["channel_stats"] = stats_holder["stats"]
                return _run_passes(sub.base, [("prune-channels", {"ratio": r, "criterion": cfg.data_criterion})], ctx)

            variants += [Variant(f"{cfg.data_criterion} {int(r * 100)}%", lambda r=r: data_driven(r)) for r in ratios]
            variants += [Variant(f"l1 {int(r * 100)}% round_to=8", lambda r=r: _run_passes(sub.base, [("prune-channels", {"ratio": r, "round_to": 8})])) for r in ratios]
        rows = measure(sub, variants, cfg, latency=True, describe=describe)
        cols = [
            ("variant", "variant", "s"),
            ("flops", "GFLOPs", "g"),
            ("flops_ratio", "FLOPs x", "x"),
            ("params", "params M", "m"),
            ("file_bytes", "file MB", "mb"),
            ("latency_ms", "ms", ".2f"),
            ("speedup", "latency x", "x"),
            *agreement_columns(sub.kind),
        ]
        out["tables"].append({"title": f"channel pruning - {sub.name}", "columns": cols, "rows": rows})
        if key == "cnn":
            row = next((r for r in rows if r["variant"] == "l1 30%"), None)
            sp = row.get("speedup") if row else None
            ok = sp is not None and sp >= CNN_GOAL_SPEEDUP
            detail = f"measured {sp:.2f}x" if sp is not None else f"no measurement ({row.get('error') if row else 'row missing'})"
            r8 = next((r for r in rows if r["variant"] == "l1 30% round_to=8"), {})
            extra = f" [informative: l1 30% with round_to=8 gives {r8['speedup']:.2f}x]" if r8.get("speedup") else ""
            goal(out, "cnn_channel30_latency", ok, f"30% l1 channel pruning gives >= {CNN_GOAL_SPEEDUP}x lower latency on the CNN: {detail}{extra}")


def _sparse_section(name: str, label_steps: Sequence[tuple[str, list[tuple[str, dict[str, Any]]]]], subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    def describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
        if not st:
            return {}
        layers = st.get("pruned_layers", st.get("clustered", st.get("factorized")))
        d: dict[str, Any] = {"layers": layers, "layers_skipped": len(st.get("skipped") or {})}
        if "bytes_after" in st:
            d["weight_bytes_ratio"] = st["bytes_before"] / max(st["bytes_after"], 1)
        if st.get("skipped"):
            d["note"] = f"{len(st['skipped'])} layer(s) skipped: {_reasons(st['skipped'])}"
        return d

    for key in ("cnn", "det"):
        if key not in subjects:
            continue
        sub = subjects[key]
        variants = [Variant(label, lambda steps=steps: _run_passes(sub.base, steps)) for label, steps in label_steps]
        rows = measure(sub, variants, cfg, latency=False, describe=describe)
        cols = [
            ("variant", "variant", "s"),
            ("sparsity", "sparsity", "%"),
            ("layers", "layers", "d"),
            ("layers_skipped", "skipped", "d"),
            ("file_bytes", "file MB", "mb"),
            ("file_ratio", "file x", "x"),
            ("deflate_bytes", "deflate MB", "mb"),
            ("deflate_ratio", "deflate x", "x"),
            *agreement_columns(sub.kind),
        ]
        out["tables"].append({"title": f"{name} - {sub.name}", "columns": cols, "rows": rows})


def section_magnitude(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    _sparse_section("magnitude", [(f"magnitude {int(s * 100)}%", [("prune-magnitude", {"sparsity": s})]) for s in (0.5, 0.8)], subjects, cfg, out)


def section_nm(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    _sparse_section("nm", [("2:4", [("prune-nm", {"n": 2, "m": 4})])], subjects, cfg, out)


def section_cluster(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    _sparse_section("cluster", [(f"cluster {b}-bit", [("cluster-weights", {"bits": b})]) for b in (4, 8)], subjects, cfg, out)


def section_lowrank(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    sub = subjects["tfm"]

    def describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
        if not st:
            return {}
        layers = st.get("layers") or {}
        d: dict[str, Any] = {"layers": st.get("factorized"), "layers_skipped": len(st.get("skipped") or {})}
        if layers:
            d["mean_rel_error"] = float(np.mean([v.get("relative_error", np.nan) for v in layers.values()]))
        if st.get("skipped"):
            d["note"] = f"{len(st['skipped'])} layer(s) not factorized: {_reasons(st['skipped'], 2)}"
        return d

    variants = [
        Variant("energy 0.9", lambda: _run_passes(sub.base, [("factorize-lowrank", {"energy": 0.9})])),
        Variant("flop_ratio 0.5", lambda: _run_passes(sub.base, [("factorize-lowrank", {"flop_ratio": 0.5})])),
    ]
    rows = measure(sub, variants, cfg, latency=True, describe=describe)
    cols = [
        ("variant", "variant", "s"),
        ("layers", "factorized", "d"),
        ("layers_skipped", "kept", "d"),
        ("mean_rel_error", "W rel err", ".3f"),
        ("flops", "GFLOPs", "g"),
        ("flops_ratio", "FLOPs x", "x"),
        ("params", "params M", "m"),
        ("latency_ms", "ms", ".2f"),
        ("speedup", "latency x", "x"),
        ("cosine", "cosine", ".5f"),
        ("sqnr_db", "SQNR dB", ".1f"),
    ]
    out["tables"].append({"title": f"low-rank factorization - {sub.name} (cosine of last_hidden_state)", "columns": cols, "rows": rows})


def _int8_steps(cfg: argparse.Namespace, prune_ratio: float | None, round_to: int = 1) -> list[dict[str, Any]]:
    from onnxq.quantize import static_pipeline

    steps = static_pipeline(tune=cfg.tune_budget_s > 0, tune_threads=1, tune_budget_s=max(cfg.tune_budget_s, 1.0))
    if prune_ratio is not None:  # after cleanup (BN folded), before calibration: one pipeline
        at = next(i for i, s in enumerate(steps) if s["pass"] == "cleanup") + 1
        steps.insert(at, {"pass": "prune-channels", "ratio": prune_ratio, "criterion": "l1", "round_to": round_to})
    return steps


def section_combo(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    from onnxq import ir
    from onnxq.quantize import run_conversion

    def convert(sub: Subject, ratio: float | None, round_to: int = 1) -> tuple[Any, dict[str, Any]]:
        res = run_conversion(ir.clone(sub.raw), _int8_steps(cfg, ratio, round_to), data=list(sub.calib_samples))  # it modifies its input
        rep = res.report
        return res.model, {"quantized_nodes": rep.get("quantized_nodes"), "float_nodes": len(rep.get("float_nodes") or []), "pipeline": [s["pass"] for s in rep.get("pipeline", [])]}

    def describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in st.items() if k in ("quantized_nodes", "float_nodes", "pipeline")}

    for key in ("cnn", "det"):
        if key not in subjects:
            continue
        sub = subjects[key]
        variants = [
            Variant("pruned 30% fp32", lambda: _run_passes(sub.base, [("prune-channels", {"ratio": 0.3, "criterion": "l1"})])),
            Variant("int8", lambda: convert(sub, None)),
            Variant("pruned 30% + int8 (one pipeline)", lambda: convert(sub, 0.3)),
            # The same with kept channel counts rounded up to multiples of 8 (kernel-friendly widths).
            Variant("pruned 30% round_to=8 fp32", lambda: _run_passes(sub.base, [("prune-channels", {"ratio": 0.3, "round_to": 8})])),
            Variant("pruned 30% round_to=8 + int8", lambda: convert(sub, 0.3, 8)),
        ]
        rows = measure(sub, variants, cfg, latency=True, describe=describe)
        cols = [
            ("variant", "variant", "s"),
            ("flops", "GFLOPs", "g"),
            ("file_bytes", "file MB", "mb"),
            ("quantized_nodes", "int8 nodes", "d"),
            ("latency_ms", "ms", ".2f"),
            ("speedup", "latency x", "x"),
            *agreement_columns(sub.kind),
        ]
        out["tables"].append({"title": f"pruning + int8 (one pipeline) - {sub.name}", "columns": cols, "rows": rows})
        by = {r["variant"]: r for r in rows}
        both, pruned, int8 = by["pruned 30% + int8 (one pipeline)"], by["pruned 30% fp32"], by["int8"]
        if both.get("error") or "latency_ms" not in both:
            goal(out, f"combo_{key}", False, f"pruning + int8 in one pipeline on {sub.name}: did not run ({both.get('error')})")
            continue
        others = {n: r["latency_ms"] for n, r in (("pruned fp32", pruned), ("int8", int8)) if "latency_ms" in r}
        ok = bool(others) and all(both["latency_ms"] < v for v in others.values())
        detail = ", ".join(f"{n} {v:.2f} ms" for n, v in others.items())
        r8, r8q = by["pruned 30% round_to=8 fp32"], by["pruned 30% round_to=8 + int8"]
        extra = ""
        if "latency_ms" in r8q:
            beats = "beats" if all(r8q["latency_ms"] < v for v in (r8.get("latency_ms", np.inf), int8.get("latency_ms", np.inf))) else "does not beat"
            extra = (f" [informative, round_to=8: pruned+int8 {r8q['latency_ms']:.2f} ms {beats} pruned fp32 {_fmt(r8.get('latency_ms'), '.2f')} ms"
                     f" and int8 {_fmt(int8.get('latency_ms'), '.2f')} ms]")
        goal(out, f"combo_{key}", ok, f"pruning + int8 in one pipeline runs and beats either alone on {sub.name}: {both['latency_ms']:.2f} ms vs {detail}{extra}")


def goal(out: dict[str, Any], key: str, ok: bool, text: str) -> None:
    out.setdefault("goals", {})[key] = {"pass": bool(ok), "text": text}


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small CNN/transformer, det at 320, few samples and runs")
    ap.add_argument("--json", dest="json_out", help="write every measurement to this file")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--det-size", type=int, default=None, help="detector input side (multiple of 32; default 640, 320 with --quick)")
    ap.add_argument("--no-det", action="store_true", help="skip the real PP-OCR detector")
    ap.add_argument("--data-criterion", default="mean-activation", choices=("mean-activation", "apoz"))
    ap.add_argument("--runs", type=int, default=0, help="timed runs per model (default: from --bench-budget)")
    ap.add_argument("--bench-budget", dest="bench_budget_s", type=float, default=None, help="seconds per latency table")
    ap.add_argument("--tune-budget", dest="tune_budget_s", type=float, default=None, help="tune-latency budget in s (0: no tuning)")
    ap.add_argument("--no-isolate", action="store_true", help="run the sections in this process (debugging)")
    ap.add_argument("--mem-cap-gb", type=float, default=12.0, help="address-space cap of each section's subprocess")
    ap.add_argument("--section-timeout", dest="section_timeout_s", type=float, default=None, help="seconds per section (default 3600, 600 with --quick)")
    ap.add_argument("--cnn-width", type=int, default=None)
    ap.add_argument("--cnn-size", type=int, default=None)
    ap.add_argument("--cnn-blocks", type=int, default=None)
    args = ap.parse_args(argv)
    q = args.quick
    pick = lambda v, full, quick: v if v is not None else (quick if q else full)  # noqa: E731
    args.det_size = pick(args.det_size, 640, 320)
    if args.det_size % 32:
        ap.error("--det-size must be a multiple of 32")
    args.cnn_width = pick(args.cnn_width, 64, 32)
    args.cnn_size = pick(args.cnn_size, 128, 64)
    args.cnn_blocks = pick(args.cnn_blocks, 2, 1)
    args.bench_budget_s = pick(args.bench_budget_s, 25.0, 2.0)
    args.tune_budget_s = pick(args.tune_budget_s, 30.0, 3.0)
    args.section_timeout_s = pick(args.section_timeout_s, 3600.0, 600.0)
    args.min_runs = 5 if q else 30
    args.warmup = 1 if q else 5
    args.eval_n = 4 if q else 64
    args.calib_n = 4 if q else 32
    args.det_eval_n = 2 if q else 16
    args.det_calib_n = 2 if q else 16
    if q:
        args.tfm_hidden, args.tfm_heads, args.tfm_layers, args.tfm_vocab, args.tfm_seq, args.tfm_eval_n = 128, 4, 2, 1000, 32, 2
    else:
        args.tfm_hidden, args.tfm_heads, args.tfm_layers, args.tfm_vocab, args.tfm_seq, args.tfm_eval_n = 384, 12, 6, 30522, 128, 8
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = sorted(set(args.sections) - set(SECTIONS))
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; valid: {', '.join(SECTIONS)}")
    return args


SECTION_FUNCS: dict[str, Callable[[dict[str, Subject], argparse.Namespace, dict[str, Any]], None]] = {
    "channel": section_channel,
    "magnitude": section_magnitude,
    "nm": section_nm,
    "lowrank": section_lowrank,
    "cluster": section_cluster,
    "combo": section_combo,
}


def run_section(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One section with its own models (the subprocess entry point): tables, goals, errors."""
    ns = argparse.Namespace(**cfg)
    out: dict[str, Any] = {"tables": [], "goals": {}, "errors": {}, "models": {}}
    makers = [("tfm", make_tfm)] if name == "lowrank" else [("cnn", make_cnn)] + ([] if ns.no_det else [("det", make_det)])
    subjects: dict[str, Subject] = {}
    for key, maker in makers:
        t0 = time.perf_counter()
        try:
            sub = subjects[key] = maker(ns)
        except Exception as e:  # noqa: BLE001 - e.g. the zoo package or the font is missing
            out["errors"][f"model {key}"] = f"skipped: {_err(e)}"
            continue
        out["models"][key] = (
            f"{sub.name}: {len(sub.base.graph.nodes)} nodes after cleanup, {_params(sub.base) / 1e6:.2f} M params, "
            f"{_fmt(_flops(sub.base, sub.shapes, sub.bench_feeds), 'g')} GFLOPs, prepared in {time.perf_counter() - t0:.1f} s"
        )
    if not subjects or name == "lowrank" and "tfm" not in subjects:
        out["errors"][name] = "skipped: its models could not be prepared"
        return out
    try:
        SECTION_FUNCS[name](subjects, ns, out)
    except Exception as e:  # noqa: BLE001 - report what was measured before the failure
        out["errors"][name] = f"{_err(e)} | {traceback.format_exc(limit=3).splitlines()[-3:]}"
    return out


def _run_section_isolated(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """``run_section`` in a fresh, memory-capped subprocess (``_bench_util.run_isolated``), so that
    an onnxruntime crash on one pruned model or a runaway allocation ends that section only."""
    r = run_isolated("bench_pruning:run_section", {"name": name, "cfg": cfg}, mem_cap_gb=cfg["mem_cap_gb"], timeout_s=cfg["section_timeout_s"])
    if r.ok:
        out = dict(r.value)
        out["peak_rss_mb"], out["wall_s"] = r.peak_rss_mb, round(r.wall_s, 1)
        return out
    tail = " | ".join(r.log_tail[-3:])
    return {"tables": [], "goals": {}, "models": {}, "errors": {name: f"section {r.describe()}; log: {tail}"}, "wall_s": round(r.wall_s, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    import onnxruntime

    smoke = "  [--quick: SMOKE RUN - small models, few samples and runs; figures are not meaningful]" if cfg.quick else ""
    print("# onnxq pruning / compression benchmark" + smoke)
    print(HEADER)
    where = "in this process" if cfg.no_isolate else f"each in its own subprocess ({cfg.mem_cap_gb:g} GB cap, {cfg.section_timeout_s:g} s timeout)"
    print(f"onnxruntime {onnxruntime.__version__}; sections {','.join(cfg.sections)}, {where}")
    child_cfg = {k: v for k, v in vars(cfg).items() if k != "json_out"}
    report: dict[str, Any] = {"config": child_cfg, "sections": {}, "goals": {}, "errors": {}}
    seen_models: set[str] = set()
    for name in cfg.sections:
        print(f"\n# section {name}", flush=True)
        t0 = time.perf_counter()
        res = run_section(name, child_cfg) if cfg.no_isolate else _run_section_isolated(name, child_cfg)
        res.setdefault("wall_s", round(time.perf_counter() - t0, 1))
        report["sections"][name] = res
        for line in res.get("models", {}).values():
            if line.split(":")[0] not in seen_models:
                seen_models.add(line.split(":")[0])
                print(f"model {line}")
        for table in res.get("tables", []):
            render_table(table)
        for where, msg in res.get("errors", {}).items():
            report["errors"][f"{name}/{where}" if where != name else name] = msg
            print(f"ERROR in {where}: {msg}")
        report["goals"].update(res.get("goals", {}))
        rss = f", peak RSS {res['peak_rss_mb']:.0f} MB" if res.get("peak_rss_mb") else ""
        print(f"(section {name}: {res.get('wall_s', '-')} s{rss})", flush=True)

    print("\n# goals" + (" (SMOKE RUN: small models, few runs - not the real verdict)" if cfg.quick else ""))
    for g in report["goals"].values():
        print(f"{'PASS' if g['pass'] else 'FAIL'}: {g['text']}")
    if not report["goals"]:
        print("(no goal measured by the selected sections)")
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
        print(f"wrote {cfg.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
