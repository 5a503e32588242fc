"""Seeded word-like random text for the rendered OCR samples (see :func:`random_text`); imported
through ``ocr_data``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

_PUNCT_TAIL = ",.;:!?"
_WRAPS = ("()", "[]", '""', "''", "{}", "<>")
_NUMBER_SEPS = ".,:/-"
_PREFIXES = "$#@+-~*&%="


def _pick(rng: np.random.Generator, pool: Sequence[str], k: int) -> str:
    return "".join(pool[int(i)] for i in rng.integers(0, len(pool), size=k))


def _token(rng: np.random.Generator, solid: list[str], lower: list[str], upper: list[str], digits: list[str]) -> str:
    """One word-like token: a lowercase / Capitalised / UPPER word, a number, or a mixed code."""
    kind = rng.choice(5, p=[0.42, 0.2, 0.08, 0.2, 0.1])
    if kind == 3 and digits:  # number, maybe with one separator
        text = _pick(rng, digits, int(rng.integers(1, 5)))
        seps = [c for c in _NUMBER_SEPS if c in solid]
        if seps and rng.random() < 0.4:
            text += seps[int(rng.integers(len(seps)))] + _pick(rng, digits, int(rng.integers(1, 4)))
        return text
    if kind == 4:  # a mixed code such as A7X2 or k9
        return _pick(rng, solid if rng.random() < 0.3 else (upper + digits or solid), int(rng.integers(2, 6)))
    letters = upper if kind == 2 else lower
    letters = letters or lower or upper or digits
    text = _pick(rng, letters, int(rng.integers(2 if kind == 2 else 1, 6 if kind == 2 else 9)))
    if kind == 1 and upper:
        text = _pick(rng, upper, 1) + text[1:]
    return text


def _decorate(rng: np.random.Generator, text: str, solid: list[str]) -> str:
    """``text``, sometimes with trailing punctuation, wrapped in brackets/quotes or with a prefix."""
    roll = rng.random()
    tails = [c for c in _PUNCT_TAIL if c in solid]
    wraps = [w for w in _WRAPS if w[0] in solid and w[1] in solid]
    prefixes = [c for c in _PREFIXES if c in solid]
    if roll < 0.25 and tails:
        return text + tails[int(rng.integers(len(tails)))]
    if roll < 0.33 and wraps:
        w = wraps[int(rng.integers(len(wraps)))]
        return w[0] + text + w[1]
    if roll < 0.40 and prefixes:
        return prefixes[int(rng.integers(len(prefixes)))] + text
    return text


def random_text(rng: np.random.Generator, charset: str, min_len: int, max_len: int, words: bool = True) -> str:
    """``min_len..max_len`` characters from ``charset`` (the space is always allowed between words).

    ``words=True`` (default) builds word-like text, as OCR sees it: lowercase, Capitalised and
    UPPER words, numbers such as ``12.50`` or ``2024-05``, some punctuation attached to words,
    single spaces between tokens. Case and digit runs give the recogniser the context real text
    has (``0``/``O``, ``l``/``I``/``1`` are ambiguous as isolated glyphs). ``words=False`` draws
    characters uniformly (a space in ``charset`` then never starts/ends the text nor doubles).
    """
    if not charset or min_len < 1 or max_len < min_len:
        raise ValueError(f"need a non-empty charset and 1 <= min_len <= max_len, got {min_len}, {max_len}")
    solid = [c for c in dict.fromkeys(charset) if c != " "]
    if not solid:
        raise ValueError("charset holds only spaces")
    length = int(rng.integers(min_len, max_len + 1))
    lower = [c for c in solid if c in string.ascii_lowercase]
    upper = [c for c in solid if c in string.ascii_uppercase]
    digits = [c for c in solid if c in string.digits]
    if not words or not (lower or upper or digits):
        chars = solid + ([" "] if " " in charset else [])
        out: list[str] = []
        for i in range(length):
            pool = solid if (i == 0 or i == length - 1 or out[-1] == " ") else chars
            out.append(pool[int(rng.integers(len(pool)))])
        return "".join(out)
    text = _decorate(rng, _token(rng, solid, lower, upper, digits), solid)[:length]
    while len(text) < length:
        nxt = _decorate(rng, _token(rng, solid, lower, upper, digits), solid)
        if len(text) + 1 + len(nxt) > length:
            break
        text += " " + nxt
    return text if len(text) >= min_len else text + _pick(rng, lower or solid, min_len - len(text))
