"""A comparison as data, and the side-by-side runner every benchmark script configures.

A :class:`Comparison` says how to get one model (``load``), its inputs (``data``: calibration and
held-out feeds), who competes (``contenders``: fp32 first, then the incumbent's and onnxq's
configurations, each a named converter with options) and the task metric. :func:`run_comparison`
then does the same for every script:

1. write the calibration feeds to an ``.npz`` folder and convert with every contender, each in its
   own memory-capped subprocess (``isolate.run_isolated``: peak RSS and wall time of that child; a
   crash, timeout or exception is recorded as the contender's ``error``);
2. :func:`side_by_side`: open a session per contender, evaluate all of them against fp32 on the
   same held-out feeds (``evaluate``), then time them interleaved at each thread count (``timing``).

Scripts whose contenders are built in-process (bench_pruning) call :func:`side_by_side` directly.
Each contender's result is one dict: ``ok``, ``error``, the converter's figures (``seconds``,
``notes``, ...), ``peak_rss_mb``, ``wall_s``, ``path``, ``bytes``, ``accuracy`` (the metric's
result) and ``latency`` (``{"1": {"median_ms", "p90_ms", "runs", "drift_pct", ...}}``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cli
from .data import Skip, save_feeds
from .evaluate import evaluate, open_session
from .isolate import RunResult, run_isolated
from .metrics import Metric
from .report import one_line, progress
from .timing import TimingSpec, time_contenders

__all__ = ["Comparison", "Contender", "Feeds", "Settings", "Skip", "conversion_record", "run_all", "run_comparison", "side_by_side", "flat_rows"]

Feed = dict[str, Any]


@dataclass(frozen=True)
class Contender:
    """One side of the comparison.

    ``converter`` names an entry of ``convert.CONVERTERS`` run with ``options`` (None: the fp32
    file itself, the reference); ``data``: the converter gets the calibration folder; ``info`` is
    copied into the result (tool, family, ...); ``skip`` is why it does not run here.
    """

    name: str
    converter: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    data: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)
    skip: str | None = None


@dataclass
class Feeds:
    """A model's inputs: calibration and held-out feeds (never the same), labels per held-out feed,
    the feed timed (default: the first held-out one) and how to describe their shapes."""

    calibration: list[Feed]
    held_out: list[Feed]
    labels: list[Any] | None = None
    timed: Feed | None = None
    shapes: Any = None


@dataclass(frozen=True)
class Comparison:
    """Everything a script declares about one model; the first contender is the fp32 reference."""

    name: str
    description: str
    load: Callable[[Path], Path]  # workdir -> the fp32 file (raises Skip when it cannot be had)
    data: Callable[[Path], Feeds]  # fp32 file -> feeds
    contenders: Sequence[Contender]
    metric: Callable[[Path], Metric]  # fp32 file -> the task metric
    outputs: str = "all"  # compared outputs: "all", "first" or one output's name
    extra: Mapping[str, Any] = field(default_factory=dict)  # copied into the model's result


@dataclass(frozen=True)
class Settings:
    """How a script measures: conversion limits, the evaluation's thread count, the timing."""

    mem_cap_gb: float | None
    timeout_s: float | None
    eval_threads: int
    timing: TimingSpec | None


def conversion_record(r: RunResult, output: Path) -> dict[str, Any]:
    """A contender's result from its conversion child: what the converter returned plus the child's
    figures; ``error`` when it failed or wrote no file."""
    record = dict(r.value) if r.ok and isinstance(r.value, dict) else {"notes": []}
    record.update(ok=r.ok, peak_rss_mb=r.peak_rss_mb, wall_s=r.wall_s)
    if not r.ok:
        record["error"] = one_line(r.describe().removeprefix("failed: "))
    elif not output.is_file():
        record.update(ok=False, error="converter wrote no file")
    return record


def _convert_all(c: Comparison, reference: Path, feeds: Feeds, workdir: Path, s: Settings) -> list[tuple[str, dict[str, Any], Path | None]]:
    """Every contender's conversion, one isolated child each, before anything is evaluated."""
    calib = workdir / "calib"
    save_feeds(feeds.calibration, calib)
    made: list[tuple[str, dict[str, Any], Path | None]] = []
    try:
        for k in c.contenders:
            output = reference if k.converter is None else workdir / f"{k.name}.onnx"
            if k.converter is None:
                record: dict[str, Any] = {"ok": True, "seconds": None, "peak_rss_mb": None, "notes": []}
            elif k.skip:
                record = {"ok": False, "skipped": True, "error": k.skip}
            else:
                progress(f"  converting {k.name} ...")
                job = {"converter": k.converter, "source": str(reference.resolve()), "output": str(output.resolve()),
                       "options": dict(k.options), "calib": str(calib.resolve()) if k.data else None}
                r = run_isolated("_harness.convert:run_job", job, mem_cap_gb=s.mem_cap_gb, timeout_s=s.timeout_s)
                record = conversion_record(r, output)
            record = {**k.info, **record}
            if not record.get("skipped"):
                record["path"] = str(output)
                record["bytes"] = output.stat().st_size if output.is_file() else None
            made.append((k.name, record, output if record["ok"] else None))
    finally:
        shutil.rmtree(calib, ignore_errors=True)
        for leftover in workdir.glob(".*.work"):  # onnxruntime's intermediates of a killed conversion
            shutil.rmtree(leftover, ignore_errors=True)
    return made


def run_comparison(c: Comparison, s: Settings, workroot: Path) -> dict[str, Any]:
    """Convert, evaluate and time every contender of ``c``; the model's result dict (see the module docstring)."""
    out: dict[str, Any] = {"model": c.name, "description": c.description, **c.extra}
    workdir = workroot / c.name
    workdir.mkdir(parents=True, exist_ok=True)
    source = c.load(workdir)
    reference = workdir / "fp32.onnx"
    if source.resolve() != reference.resolve():
        shutil.copyfile(source, reference)
    start = time.perf_counter()
    feeds = c.data(reference)
    out["data"] = {"calibration": len(feeds.calibration), "held_out": len(feeds.held_out),
                   "seconds": round(time.perf_counter() - start, 1),
                   "shapes": feeds.shapes if feeds.shapes is not None else {k: list(v.shape) for k, v in feeds.held_out[0].items()}}
    metric = c.metric(reference)
    made = _convert_all(c, reference, feeds, workdir, s)
    feeds.calibration = []  # written and converted with: not needed in this process any more
    progress(f"  evaluating {len(feeds.held_out)} held-out samples ...")
    out.update(side_by_side(made, reference=c.contenders[0].name, feeds=feeds.held_out, labels=feeds.labels,
                            metric=metric, settings=s, timed_feed=feeds.timed, outputs=c.outputs))
    return out


def run_all(comparisons: Sequence[Comparison], settings: Settings, *, keep: str | None, prefix: str,
            show: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """:func:`run_comparison` for every comparison in one work folder (``keep``, or a temporary one);
    a model that cannot be had (``Skip``) or fails is a result saying so (see ``cli.run_models``)."""
    by_name = {c.name: c for c in comparisons}
    with cli.work_folder(keep, prefix) as workroot:
        return cli.run_models(
            list(by_name),
            lambda name: run_comparison(by_name[name], settings, workroot),
            lambda name: {"model": name, "description": by_name[name].description, **by_name[name].extra},
            show,
        )


def _output_names(session: Any, outputs: str) -> list[str] | None:
    if outputs == "all":
        return None
    return [session.get_outputs()[0].name if outputs == "first" else outputs]


def flat_rows(result: Mapping[str, Any], threads: int = 1) -> list[dict[str, Any]]:
    """One flat row per contender of a :func:`side_by_side` result: its record, its accuracy figures
    and ``latency_ms`` (the median at ``threads``), in contender order."""
    rows = []
    for record in result["variants"].values():
        row = {k: v for k, v in record.items() if k not in ("ok", "accuracy", "latency")}
        row.update(record.get("accuracy") or {})
        lat = (record.get("latency") or {}).get(str(threads))
        if lat:
            row["latency_ms"] = lat["median_ms"]
        rows.append(row)
    return rows


def side_by_side(
    made: Iterable[tuple[str, dict[str, Any], Any]],
    *,
    reference: str,
    feeds: Sequence[Feed],
    metric: Metric,
    settings: Settings,
    labels: Sequence[Any] | None = None,
    timed_feed: Feed | None = None,
    outputs: str = "all",
    where: str = "",
) -> dict[str, Any]:
    """Evaluate and time contenders that already exist.

    Args:
        made: ``(name, record, model)`` per contender, the reference first; ``model`` is a path or an
            in-memory model (None: the record says why there is none). A session is opened as each
            arrives, so an in-memory model can be dropped by the producer right after.
        reference: the fp32 contender's name.
        feeds / labels: held-out feeds (and labels) every contender is evaluated on.
        timed_feed: the input timed (default ``feeds[0]``).
        outputs: ``"all"``, ``"first"`` or an output name (the names compared are returned as ``output``).
        where: prefix of the contenders' names in messages.

    Returns:
        ``{"variants": name -> record, "output": ..., "timing_errors": ...}`` (the last two when they apply).
    """
    results, models, sessions = _open_all(made, settings.eval_threads, where)
    if reference not in sessions:
        raise RuntimeError(f"fp32 model does not run: {results.get(reference, {}).get('error')}")
    names = _output_names(sessions[reference], outputs)
    scores, errors = evaluate(sessions, reference, feeds, metric, labels=labels, outputs=names)
    for name, why in errors.items():
        results[name].update(ok=False, error=why)
        progress(f"  {where}{name}: {why}")
    for name, score in scores.items():
        results[name]["accuracy"] = score
    out: dict[str, Any] = {"variants": results}
    if names:
        out["output"] = names[0]
    if settings.timing is not None:
        runnable = {n: models[n] for n in sessions}
        if not settings.timing.reuse_sessions:
            sessions.clear()  # the evaluation's sessions are freed before timing opens its own
        latency, timing_errors = time_contenders(runnable, timed_feed if timed_feed is not None else feeds[0], settings.timing,
                                                 sessions=sessions, session_threads=settings.eval_threads)
        for name, entry in latency.items():
            if entry:
                results[name]["latency"] = entry
        if timing_errors:
            out["timing_errors"] = timing_errors
    return out


def _open_all(made: Iterable[tuple[str, dict[str, Any], Any]], threads: int, where: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Records, models (paths, or None for in-memory ones) and sessions of every contender that loads."""
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    sessions: dict[str, Any] = {}
    for name, record, model in made:
        results[name] = record
        if model is None:
            record["ok"] = False
            continue
        session, why = open_session(model, threads, f"{where}{name}")
        if why:
            record.update(ok=False, error=why)
            progress(f"  {where}{name}: {why}")
            continue
        record.setdefault("ok", True)
        sessions[name] = session
        models[name] = model if isinstance(model, (str, Path)) else None
    return results, models, sessions
