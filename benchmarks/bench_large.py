"""Models past 2 GB, end to end: every onnxq command on a generated ~2.5 GB decoder, time and peak RSS.

    python benchmarks/bench_large.py [--layers 10] [--hidden 2048] [--ffn 5632] [--vocab 32000]
                                     [--out benchmarks/out/large] [--json results.json]

The model (``write_decoder``) is decoder-shaped: an embedding ``Gather``, ``layers`` blocks of
LayerNorm → Q/K/V/O projections around a single-head causal attention → LayerNorm → SiLU-gated MLP,
a final LayerNorm and the LM head; random float32 weights (std 1/sqrt(fan_in)), written tensor by
tensor straight into an external-data file, so generating it never holds the model in memory. It is
cached in the output folder (``benchmarks/out/`` is ignored by git) and reused while the sizes match.

Each command runs the real CLI in a fresh subprocess (``_harness.isolate.run_isolated``: peak RSS
is the child's own ``VmHWM``). Every output is then loaded by onnxruntime from its path and run on
one input, in another subprocess. The table shows wall and CPU seconds (CPU time does not grow when
other processes share the machine), peak RSS in GB, RSS over the weights' size (the goal: at most
about 1.5x), the output's size on disk (``.onnx`` plus data file) and the cosine of its logits with
the fp32 model's.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "large"
#: Offsets in the generated data file are page-aligned (mappable, like onnxq's own files).
ALIGN = 4096
#: Tokens per input (static: synthetic calibration data needs no --dim).
SEQ = 16


class _Writer:
    """Appends float32 tensors to one external-data file and returns their TensorProto headers."""

    def __init__(self, f: Any, location: str, rng: np.random.Generator) -> None:
        self.f, self.location, self.rng, self.offset = f, location, rng, 0
        self.initializers: list[Any] = []

    def weight(self, name: str, shape: tuple[int, ...], scale: float | None = None, fill: float | None = None) -> str:
        import onnx

        if fill is not None:
            values = np.full(shape, fill, np.float32)
        else:
            values = self.rng.standard_normal(shape, dtype=np.float32)
            values *= np.float32(scale if scale is not None else 1.0 / math.sqrt(shape[0]))
        pad = (-self.offset) % ALIGN
        self.f.write(b"\0" * pad)
        self.offset += pad
        self.f.write(values.tobytes())
        tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(shape))
        for key, value in (("location", self.location), ("offset", self.offset), ("length", values.nbytes)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        self.offset += values.nbytes
        self.initializers.append(tensor)
        return name


def _block(w: _Writer, nodes: list[Any], h: str, i: int, hidden: int, ffn: int) -> str:
    """One decoder block; returns its output tensor name."""
    from onnx import helper

    p = f"layers.{i}"

    def n(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{p}/{out}"], name=f"{p}/{out}", **attrs))
        return f"{p}/{out}"

    x = n("LayerNormalization", [h, w.weight(f"{p}.ln1.weight", (hidden,), fill=1.0), w.weight(f"{p}.ln1.bias", (hidden,), fill=0.0)], "ln1", axis=-1)
    q, k, v = (n("MatMul", [x, w.weight(f"{p}.attn.{c}_proj", (hidden, hidden))], c) for c in "qkv")
    kt = n("Transpose", [k], "k_t", perm=[0, 2, 1])
    scores = n("MatMul", [q, kt], "scores")
    scaled = n("Mul", [scores, "attn_scale"], "scaled")
    probs = n("Softmax", [n("Add", [scaled, "causal_mask"], "masked")], "probs", axis=-1)
    attn = n("MatMul", [n("MatMul", [probs, v], "context"), w.weight(f"{p}.attn.o_proj", (hidden, hidden))], "attn_out")
    h = n("Add", [h, attn], "residual1")
    x = n("LayerNormalization", [h, w.weight(f"{p}.ln2.weight", (hidden,), fill=1.0), w.weight(f"{p}.ln2.bias", (hidden,), fill=0.0)], "ln2", axis=-1)
    gate = n("MatMul", [x, w.weight(f"{p}.mlp.gate_proj", (hidden, ffn))], "gate")
    up = n("MatMul", [x, w.weight(f"{p}.mlp.up_proj", (hidden, ffn))], "up")
    act = n("Mul", [n("Mul", [gate, n("Sigmoid", [gate], "gate_sigmoid")], "silu"), up], "gated")
    down = n("MatMul", [act, w.weight(f"{p}.mlp.down_proj", (ffn, hidden))], "down")
    return n("Add", [h, down], "residual2")


def write_decoder(path: str | os.PathLike[str], *, layers: int, hidden: int, ffn: int, vocab: int, seed: int = 0) -> Path:
    """Write a decoder-style model with external data (``<name>.data``) to ``path``; see the module docstring."""
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    location = path.name + ".data"
    nodes: list[Any] = []
    with open(path.parent / location, "wb") as f:
        w = _Writer(f, location, np.random.default_rng(seed))
        embed = w.weight("embed_tokens", (vocab, hidden), scale=0.02)
        nodes.append(helper.make_node("Gather", [embed, "input_ids"], ["embeddings"], name="embed", axis=0))
        h = "embeddings"
        for i in range(layers):
            h = _block(w, nodes, h, i, hidden, ffn)
        lnf = [w.weight("norm.weight", (hidden,), fill=1.0), w.weight("norm.bias", (hidden,), fill=0.0)]
        nodes.append(helper.make_node("LayerNormalization", [h, *lnf], ["final_norm"], name="norm", axis=-1))
        nodes.append(helper.make_node("MatMul", ["final_norm", w.weight("lm_head", (hidden, vocab))], ["logits"], name="lm_head"))
        inits = w.initializers
    mask = np.triu(np.full((SEQ, SEQ), -1e4, np.float32), k=1)[None]
    inits += [numpy_helper.from_array(mask, "causal_mask"), numpy_helper.from_array(np.array(1 / math.sqrt(hidden), np.float32), "attn_scale")]
    graph = helper.make_graph(
        nodes,
        "decoder",
        [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, SEQ])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, SEQ, vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_large")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


# ---- the benchmark ------------------------------------------------------------------------------

#: (label, CLI arguments after the input model; ``{out}`` is the output path).
COMMANDS: list[tuple[str, list[str]]] = [
    ("inspect", ["inspect", "{model}"]),
    ("optimize", ["optimize", "{model}", "-o", "{out}"]),
    ("convert weight-only (int4)", ["convert", "{model}", "-o", "{out}", "--mode", "weight-only"]),
    # The default above searches each block's clipping range (20 candidates): most of its time.
    ("convert weight-only (int4, no search)", ["convert", "{model}", "-o", "{out}", "--mode", "weight-only", "--scale-search", "none"]),
    ("convert dynamic (int8)", ["convert", "{model}", "-o", "{out}", "--mode", "dynamic"]),
    ("convert fp16", ["convert", "{model}", "-o", "{out}", "--mode", "fp16"]),
    ("convert static (synthetic:2)", ["convert", "{model}", "-o", "{out}", "--data", "synthetic:2", "--no-tune"]),
    ("prune magnitude 0.5", ["prune", "{model}", "-o", "{out}", "--method", "magnitude", "--sparsity", "0.5"]),
]


def run_cli(args: list[str], large_bytes: int | None = None) -> dict[str, Any]:
    """Child: run ``onnxq ARGS`` in this process (as the console script does); wall and CPU seconds.

    CPU seconds (user + system, all threads) are reported too: unlike wall time they do not grow
    when other processes share the machine.
    """
    import io
    import resource
    from contextlib import redirect_stdout

    if large_bytes:
        from onnxq.ir import _external

        _external.LARGE_MODEL_BYTES = large_bytes  # exercise the large path on a smaller model
    from onnxq.cli import cli

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    start, cpu_start = time.perf_counter(), cpu()
    printed = io.StringIO()
    with redirect_stdout(printed):
        cli.main(args=args, prog_name="onnxq", standalone_mode=False)
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu() - cpu_start, "last_line": lines[-1] if lines else ""}


def _feeds() -> dict[str, np.ndarray]:
    return {"input_ids": (np.arange(SEQ, dtype=np.int64) * 7919 % 1000).reshape(1, SEQ)}


def run_output(path: str, reference: str | None = None) -> dict[str, Any]:
    """Child: load ``path`` in onnxruntime from its path, run one input; cosine with ``reference`` (.npy)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, _feeds())[0].astype(np.float64).ravel()
    out: dict[str, Any] = {"shape": list(session.get_outputs()[0].shape), "finite": bool(np.isfinite(logits).all())}
    if reference is None:
        return out
    ref = np.load(reference).astype(np.float64).ravel()
    out["cosine"] = float(ref @ logits / (np.linalg.norm(ref) * np.linalg.norm(logits) + 1e-30))
    return out


def save_reference(path: str, target: str) -> dict[str, Any]:
    """Child: the fp32 model's logits on the benchmark input, saved as .npy."""
    import onnxruntime as ort

    np.save(target, ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, _feeds())[0])
    return {}


def _stored(path: Path) -> int:
    from onnxq import ir

    return ir.stored_size(path)


def _measure(label: str, args: list[str], model: Path, out: Path, reference: Path, weights: int, opts: argparse.Namespace) -> dict[str, Any]:
    from _harness.isolate import run_isolated
    from _harness.report import progress

    argv = [a.format(model=model, out=out) for a in args]
    progress(f"onnxq {' '.join(argv)}")
    r = run_isolated("bench_large:run_cli", {"args": argv, "large_bytes": opts.large_bytes}, mem_cap_gb=opts.mem_cap_gb, timeout_s=opts.timeout)
    rss_gb = (r.peak_rss_mb or 0) / 1024
    rec: dict[str, Any] = {"command": label, "args": argv, "status": r.describe(), "seconds": r.value["seconds"] if r.ok else r.wall_s}
    rec["cpu_seconds"] = r.value["cpu_seconds"] if r.ok else None
    rec.update({"wall_s": r.wall_s, "peak_rss_gb": rss_gb, "rss_over_weights": rss_gb * 2**30 / weights})
    if not r.ok:
        rec["error"] = r.describe()
        return rec
    if "-o" in argv:
        rec["output_gb"] = _stored(out) / 2**30
        check = run_isolated("bench_large:run_output", {"path": str(out), "reference": str(reference)}, timeout_s=opts.timeout)
        if not check.ok or not check.value["finite"]:
            rec["error"] = f"output does not run in onnxruntime: {check.describe() if not check.ok else 'non-finite logits'}"
        else:
            rec["cosine"] = check.value["cosine"]
    progress(f"  {rec['seconds']:.1f} s ({rec['cpu_seconds']:.1f} s CPU), peak RSS {rss_gb:.2f} GB ({rec['rss_over_weights']:.2f}x weights)")
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="model cache and outputs (default benchmarks/out/large, git-ignored)")
    ap.add_argument("--only", help="comma list of command labels' first words / indexes to run (default all)")
    ap.add_argument("--large-bytes", type=int, help="treat models above this many bytes of weights as large (default: onnxq's 2 GiB limit)")
    ap.add_argument("--mem-cap-gb", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--json", dest="json_out", help="write the measurements here")
    opts = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness.isolate import run_isolated
    from _harness.report import Column, print_records, progress, write_json

    folder = Path(opts.out)
    sizes = {"layers": opts.layers, "hidden": opts.hidden, "ffn": opts.ffn, "vocab": opts.vocab}
    tag = "decoder-" + "-".join(f"{k[0]}{v}" for k, v in sizes.items())
    model = folder / f"{tag}.onnx"
    if not model.exists():
        start = time.perf_counter()
        write_decoder(model, **sizes)
        progress(f"generated {model} in {time.perf_counter() - start:.1f} s")
    weights = _stored(model)
    reference = folder / f"{tag}.logits.npy"
    if not reference.exists():
        ref = run_isolated("bench_large:save_reference", {"path": str(model), "target": str(reference)}, timeout_s=opts.timeout)
        if not ref.ok:
            raise SystemExit(f"the fp32 model does not run: {ref.describe()}")
    progress(f"model {model}: {weights / 2**30:.2f} GiB of weights ({weights / 1e9:.2f} GB)")
    chosen = [c for i, c in enumerate(COMMANDS) if not opts.only or str(i) in opts.only.split(",") or c[0].split()[0] in opts.only.split(",")]
    records = []
    for i, (label, args) in enumerate(chosen):
        out = folder / f"out-{label.split()[0]}-{i}.onnx"
        records.append(_measure(label, args, model, out, reference, weights, opts))
    columns = [
        Column("command", "command"),
        Column("seconds", "seconds", ".1f"),
        Column("cpu_seconds", "CPU s", ".1f"),
        Column("peak_rss_gb", "peak RSS GB", ".2f"),
        Column("rss_over_weights", "RSS / weights", ".2f"),
        Column("output_gb", "output GB", ".3f"),
        Column("cosine", "cosine vs fp32", ".4f"),
    ]
    print_records(f"{model.name}: {weights / 1e9:.2f} GB of weights ({opts.layers} layers, hidden {opts.hidden})", columns, records)
    if opts.json_out:
        write_json(opts.json_out, {"model": str(model), "weights_bytes": weights, "sizes": sizes, "records": records})
    return 1 if any(r.get("error") for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
