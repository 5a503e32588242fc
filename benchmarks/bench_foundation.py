"""Scaling benchmark for the foundation: load → cleanup → save on ~10k and ~20k node models.

Each size runs in a fresh subprocess (``_harness.isolate.run_isolated``) so peak RSS is that size's
own. Prints wall time and peak RSS per stage, and the time ratio between the two sizes (goal: 10k
nodes < 10 s end to end, and 2x nodes <= 2.3x time).

    python benchmarks/bench_foundation.py [--nodes 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from _harness import onnxq_api
from _harness.isolate import run_isolated
from _harness.report import write_json


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(nodes: int, kind: str) -> dict:
    """Build a model of about ``nodes`` nodes, then time load / cleanup / save in this process."""
    import onnx

    from models import build, deep_cnn_blocks_for

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "deep.onnx"
        if kind == "cnn":
            proto = build("deep-cnn", blocks=deep_cnn_blocks_for(nodes))
        else:
            layers = max(1, nodes // 34)
            proto = build("transformer", layers=layers, hidden=32, heads=2, vocab=100)
        onnx.save(proto, str(src))
        total_nodes = len(proto.graph.node)
        del proto
        stages = {}
        t0 = time.perf_counter()
        model = onnxq_api.load(src)
        stages["load"] = (time.perf_counter() - t0, _rss_mb())
        t1 = time.perf_counter()
        cleaned = onnxq_api.cleanup(model, copy=False, check=False)
        stages["cleanup"] = (time.perf_counter() - t1, _rss_mb())
        t2 = time.perf_counter()
        onnxq_api.save(cleaned, Path(tmp) / "out.onnx")
        stages["save"] = (time.perf_counter() - t2, _rss_mb())
        total = time.perf_counter() - t0
        nodes_after = onnxq_api.node_count(cleaned)
    return {
        "kind": kind,
        "nodes": total_nodes,
        "nodes_after": nodes_after,
        "total_s": total,
        "stages": {k: {"seconds": v[0], "peak_rss_mb": v[1]} for k, v in stages.items()},
    }


def _isolated(nodes: int, kind: str) -> dict:
    r = run_isolated("bench_foundation:run_one", {"nodes": nodes, "kind": kind})
    if not r.ok:
        raise RuntimeError(f"{kind} at {nodes} nodes: {r.describe()}; log: {' | '.join(r.log_tail[-3:])}")
    return r.value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--kinds", default="cnn,transformer")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--child", nargs=2, metavar=("NODES", "KIND"), help=argparse.SUPPRESS)  # one size in this process
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(int(args.child[0]), args.child[1])))
        return
    rows = [_isolated(n, kind) for kind in args.kinds.split(",") for n in (args.nodes, 2 * args.nodes)]
    print(f"{'model':<12} {'nodes':>7} {'after':>7} {'load s':>8} {'cleanup s':>10} {'save s':>8} {'total s':>8} {'peak RSS MB':>12}")
    for r in rows:
        s = r["stages"]
        print(
            f"{r['kind']:<12} {r['nodes']:>7} {r['nodes_after']:>7} {s['load']['seconds']:>8.2f} {s['cleanup']['seconds']:>10.2f} "
            f"{s['save']['seconds']:>8.2f} {r['total_s']:>8.2f} {s['save']['peak_rss_mb']:>12.0f}"
        )
    for kind in args.kinds.split(","):
        small, big = [r for r in rows if r["kind"] == kind]
        print(f"{kind}: 2x nodes ({small['nodes']} → {big['nodes']}) took {big['total_s'] / small['total_s']:.2f}x the time")
    if args.json_out:
        write_json(args.json_out, rows)


if __name__ == "__main__":
    main()
