"""The models bench_dynamic compares on, and their data: transformer / MatMul-dominated / LSTM / MLP
builders (full and ``--quick`` sizes) and the MiniLM export on real sentences.

Calibration and held-out feeds never overlap: separate seeds for the builders, and for MiniLM the
``CALIB_SENTENCES`` below against ``models.minilm.SENTENCES``. ``SPECS`` maps a name to its :class:`ModelSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _harness import data
from _harness.comparison import Feeds

CALIB_SEED = 1001  # calibration and held-out data never share a seed
EVAL_SEED = 2002
MINILM_BATCH = 8
MINILM_SEQ = 64

#: MiniLM calibration sentences (for smoothing): written for this benchmark, none is in SENTENCES.
CALIB_SENTENCES: tuple[str, ...] = (
    "The orchestra rehearsed the symphony late into the evening.",
    "Farmers are harvesting wheat before the storm arrives.",
    "The airline cancelled dozens of flights because of fog.",
    "A new study links sleep quality to memory performance.",
    "The city council approved a budget for new bike lanes.",
    "She planted tomatoes and basil in her small garden.",
    "The printer keeps jamming whenever I use thick paper.",
    "Astronomers detected water vapour on a distant exoplanet.",
    "The hiking trail was muddy after a week of rain.",
    "Our internet connection drops every evening around nine.",
    "The detective found a hidden letter inside the old desk.",
    "Prices at the grocery store rose again this month.",
    "He practised the piano for three hours every day.",
    "The glacier has retreated several kilometres in a century.",
    "Students protested against the increase in tuition fees.",
    "The startup raised fifty million dollars in new funding.",
    "A lighthouse guided the fishing boats back to the harbour.",
    "The vaccine trial enrolled thousands of volunteers.",
    "Traffic was backed up for miles after the accident.",
    "The novel was translated into more than forty languages.",
    "My grandmother knits scarves for the whole family.",
    "The referee showed a red card in the final minute.",
    "Engineers tested the rocket engine in the desert.",
    "The coffee shop on the corner closes at six.",
)


@dataclass
class ModelSpec:
    """``make(workdir, quick)`` writes/returns the fp32 file; ``data(path, quick, n_eval)`` the feeds."""

    name: str
    make: Callable[[Path, bool], Path]
    data: Callable[[Path, bool, int | None], Feeds]
    description: Callable[[bool], str]
    output: str | None = None  # the output compared (None: the first)
    matmul_dominated: bool = False  # the int4 size goal applies
    has_gather: bool = False  # the +gather variant applies
    minilm: bool = False


TEXT_INPUTS = ("input_ids", "attention_mask")


def _transformer_spec(name: str, full: dict[str, Any], quick: dict[str, Any], seq: tuple[int, int], what: str,
                      **flags: Any) -> ModelSpec:
    def kw(q: bool) -> dict[str, Any]:
        return quick if q else full

    def feeds(path: Path, q: bool, n_eval: int | None) -> Feeds:
        s = seq[1] if q else seq[0]
        calib = data.text_feeds(TEXT_INPUTS, 4 if q else 16, CALIB_SEED, s, kw(q)["vocab"])
        held = data.text_feeds(TEXT_INPUTS, n_eval or (4 if q else 32), EVAL_SEED, s, kw(q)["vocab"])
        return Feeds(calib, held, timed=held[0], shapes=f"input_ids/attention_mask [1, {s}]")

    def describe(q: bool) -> str:
        k = kw(q)
        return (f"{what}: builder transformer vocab {k['vocab']}, hidden {k['hidden']}, heads {k['heads']}, "
                f"{k['layers']} layers, max_seq {k['max_seq']}; seq {seq[1] if q else seq[0]} (padded tail), batch 1")

    return ModelSpec(name, lambda w, q: data.builder_file(w, "transformer", kw(q)), feeds, describe, has_gather=True, **flags)


def _float_spec(name: str, builder: str, full: tuple[dict[str, Any], tuple[int, ...]], quick: tuple[dict[str, Any], tuple[int, ...]],
                what: str, n_eval: tuple[int, int], **flags: Any) -> ModelSpec:
    def feeds(path: Path, q: bool, n: int | None) -> Feeds:
        shape = (quick if q else full)[1]
        calib = [{"input": np.random.default_rng(CALIB_SEED + i).standard_normal(shape).astype(np.float32)} for i in range(4)]
        held = [{"input": np.random.default_rng(EVAL_SEED + i).standard_normal(shape).astype(np.float32)}
                for i in range(n or (n_eval[1] if q else n_eval[0]))]
        return Feeds(calib, held, timed=held[0], shapes=f"input {list(shape)}")

    def describe(q: bool) -> str:
        k, shape = quick if q else full
        return f"{what}: builder {builder} {', '.join(f'{a}={b}' for a, b in k.items())}; input {list(shape)}"

    return ModelSpec(name, lambda w, q: data.builder_file(w, builder, (quick if q else full)[0]), feeds, describe, **flags)


def _minilm_batches(sentences: Sequence[str]) -> list[dict[str, np.ndarray]]:
    tokenize = data.minilm_module().tokenize
    return [tokenize(sentences[i:i + MINILM_BATCH], MINILM_SEQ) for i in range(0, len(sentences), MINILM_BATCH)]


def _minilm_sentences(quick: bool, n_eval: int | None) -> list[str]:
    sentences = data.minilm_module().SENTENCES
    n = n_eval or (16 if quick else len(sentences))
    n = max(2, min(n, len(sentences)) // 2 * 2)  # whole paraphrase pairs
    return list(sentences[:n])


def _minilm_data(path: Path, quick: bool, n_eval: int | None) -> Feeds:
    overlap = set(CALIB_SENTENCES) & set(data.minilm_module().SENTENCES)
    assert not overlap, f"calibration sentences overlap the held-out ones: {overlap}"
    held = _minilm_batches(_minilm_sentences(quick, n_eval))
    return Feeds(_minilm_batches(CALIB_SENTENCES), held, timed=held[0], shapes=f"{MINILM_BATCH} sentences x {MINILM_SEQ} tokens per batch")


def _minilm_describe(quick: bool) -> str:
    n = len(_minilm_sentences(quick, None))
    return (f"all-MiniLM-L6-v2 export (models/minilm.py), batches of {MINILM_BATCH} x {MINILM_SEQ} tokens; "
            f"{n} held-out sentences (SENTENCES), {len(CALIB_SENTENCES)} calibration sentences (disjoint)")


SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    _transformer_spec("transformer", {"vocab": 30522, "hidden": 384, "heads": 12, "layers": 6, "max_seq": 512},
                      {"vocab": 30522, "hidden": 128, "heads": 4, "layers": 2, "max_seq": 128}, (128, 64), "MiniLM-sized"),
    ModelSpec("minilm", lambda w, q: data.minilm_file(), _minilm_data, _minilm_describe, output="sentence_embedding",
              has_gather=True, minilm=True),
    _float_spec("lstm", "lstm", ({"input_size": 128, "hidden": 512}, (50, 4, 128)), ({"input_size": 64, "hidden": 128}, (20, 4, 64)),
                "LSTM classifier", (16, 4)),
    _transformer_spec("matmul", {"vocab": 1000, "hidden": 384, "heads": 12, "layers": 6, "max_seq": 128},
                      {"vocab": 1000, "hidden": 256, "heads": 4, "layers": 2, "max_seq": 64}, (128, 64),
                      "MatMul-dominated (small vocab)", matmul_dominated=True),
    _float_spec("mlp", "mlp", ({"in_features": 784, "hidden": (1024, 1024, 1024)}, (256, 784)),
                ({"in_features": 784, "hidden": (512, 512)}, (32, 784)), "MLP", (4, 4), matmul_dominated=True),
)}
