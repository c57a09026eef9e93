"""Token bookkeeping for Prompt-to-Prompt: which tokens a word owns, how target tokens align to source
tokens (Refine), the word-swap matrix (Replace), the re-weighting vector (equalizer) and the per-step,
per-token cross-attention replacement weights.

Semantics follow google/prompt-to-prompt ``seq_aligner.py`` / ``ptp_utils.py`` (as vendored by PIE-Bench),
re-implemented here with the token count taken from the tokenizer instead of a hard-coded 77. Deliberate
differences, all only in corner cases:

* a word's tokens are found by tokenizing each whitespace-separated word on its own (CLIP's
  pre-tokenizer never merges across whitespace, so this equals the sentence tokenization) instead of
  summing the lengths of decoded tokens, which drifts on words that ftfy/lower-casing changes;
* the Replace mapper keeps the running source position after a replaced word whose token count
  changed (the reference then maps target position j to source position j, one token off);
* ``match="lenient"`` (the default of ``word_token_indices``): when the exact whitespace-split match
  finds nothing, retry ignoring case and punctuation (the reference finds nothing for ``cat`` in
  ``a cat, ...``). ``match="exact"`` is the reference's rule; the PIE-Bench P2P editors use it.
"""
from __future__ import annotations

import re
import string
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from pie_bench.core.errors import ConfigError

StepBounds = Union[float, tuple[float, float]]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def token_ids(tokenizer, text: str, max_length: int) -> list[int]:
    """Token ids with BOS/EOS, truncated like the text encoder's input (no padding)."""
    return list(tokenizer(text, truncation=True, max_length=max_length).input_ids)


def word_spans(tokenizer, text: str, max_length: int) -> list[tuple[str, list[int]]]:
    """``[(word, [token positions])]`` for each whitespace-separated word; positions count BOS as 0.
    Tokens cut off by truncation are dropped (a word past the limit owns no positions)."""
    spans, pos = [], 1
    last = max_length - 1  # the EOS slot of a truncated prompt
    for word in text.split():
        n = len(tokenizer(word, add_special_tokens=False).input_ids)
        spans.append((word, [p for p in range(pos, pos + n) if p < last]))
        pos += n
    return spans


def _norm(word: str) -> str:
    return _PUNCT.sub("", word).lower()


MATCHES = ("lenient", "exact")


def word_token_indices(tokenizer, text: str, word: Union[str, int], max_length: int,
                       match: str = "lenient") -> list[int]:
    """Token positions of ``word`` (every occurrence) in ``text``; an int selects the word by index.

    Matching is exact on whitespace-split words as in the reference; with ``match="lenient"``, when that
    finds nothing we retry ignoring case and punctuation (PIE prompts write ``cat,`` while the blended
    word is ``cat``). ``match="exact"`` stops there, as the reference does."""
    if match not in MATCHES:
        raise ConfigError(f"word match {match!r}: expected one of {', '.join(MATCHES)}")
    spans = word_spans(tokenizer, text, max_length)
    if isinstance(word, int):
        return list(spans[word][1]) if 0 <= word < len(spans) else []
    hits = [i for w, idx in spans if w == word for i in idx]
    if not hits and match == "lenient":
        key = _norm(word)
        if key:
            ids = token_ids(tokenizer, text, max_length)
            # the word's own tokens only: the attention of a trailing "," would blur LocalBlend's map
            hits = [i for w, idx in spans if _norm(w) == key for i in idx
                    if _norm(tokenizer.decode([ids[i]]))]
    return hits


# ---------------------------------------------------------------------------------------------
# Refine: global alignment of token sequences


def _global_align(x: Sequence[int], y: Sequence[int]) -> np.ndarray:
    """Needleman-Wunsch with gap 0, match +1, mismatch -1. Returns the traceback matrix
    (1 = left/insertion in y, 2 = up/deletion from x, 3 = diagonal), ties broken left > up > diag
    exactly as the reference, which decides which of two equally good alignments is used."""
    n, m = len(x), len(y)
    score = np.zeros((n + 1, m + 1), dtype=np.int64)
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    trace[0, 1:], trace[1:, 0] = 1, 2
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left, up = score[i, j - 1], score[i - 1, j]
            diag = score[i - 1, j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            best = max(left, up, diag)
            score[i, j] = best
            trace[i, j] = 1 if best == left else 2 if best == up else 3
    return trace


def refinement_mapper(tokenizer, source: str, target: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target token position, the aligned source position and whether one exists.

    Returns ``(mapper int64[T], alphas float[T])``: alphas 0 marks a target token with no source
    counterpart (its own attention is kept); positions past the prompt map to themselves."""
    x, y = token_ids(tokenizer, source, max_length), token_ids(tokenizer, target, max_length)
    trace = _global_align(x, y)
    pairs: list[tuple[int, int]] = []
    i, j = len(x), len(y)
    while i > 0 or j > 0:
        move = trace[i, j]
        if move == 3:
            i, j = i - 1, j - 1
            pairs.append((j, i))
        elif move == 1:
            j -= 1
            pairs.append((j, -1))
        else:
            i -= 1
    pairs.reverse()
    mapper = torch.arange(max_length, dtype=torch.int64)
    alphas = torch.ones(max_length)
    for j, src in pairs:
        mapper[j] = max(src, 0)  # -1 would index the last token; its alpha is 0 so the value is unused
        alphas[j] = float(src >= 0)
    return mapper, alphas


# ---------------------------------------------------------------------------------------------
# Replace: word swap between prompts with the same number of words


def same_word_count(source: str, target: str) -> bool:
    return len(source.split()) == len(target.split())


def choose_mode(source: str, target: str) -> str:
    """P2P's rule (also iCD's): Replace for prompts with the same number of words, else Refine."""
    return "replace" if same_word_count(source, target) else "refine"


def replacement_mapper(tokenizer, source: str, target: str, max_length: int) -> torch.Tensor:
    """``M float[T, T]`` with target attention = source attention @ M. Changed words map their source
    tokens onto their target tokens (1-to-1 when the token counts match, else spread evenly)."""
    sx, sy = word_spans(tokenizer, source, max_length), word_spans(tokenizer, target, max_length)
    if len(sx) != len(sy):
        raise ConfigError(f"P2P Replace needs prompts with the same number of words; {source!r} has {len(sx)} "
                          f"and {target!r} has {len(sy)} - use controller=refine (or auto)")
    mapper = torch.zeros(max_length, max_length)
    mapper[0, 0] = 1.0  # BOS
    i = j = 1
    for (wx, ix), (wy, iy) in zip(sx, sy):
        if not ix or not iy:  # truncated away
            break
        if wx == wy or len(ix) == len(iy):
            mapper[ix, iy] = 1.0
        else:
            for t in iy:
                mapper[ix, t] = 1.0 / len(iy)
        i, j = ix[-1] + 1, iy[-1] + 1
    while i < max_length and j < max_length:  # EOS and padding keep their order
        mapper[i, j] = 1.0
        i, j = i + 1, j + 1
    return mapper


# ---------------------------------------------------------------------------------------------
# re-weighting and time schedule


def equalizer(tokenizer, text: str, weights: Optional[Mapping[str, float]], max_length: int,
              match: str = "lenient") -> Optional[torch.Tensor]:
    """``float[T]`` of ones with ``weights[word]`` at the word's tokens in ``text`` (P2P's AttentionReweight)."""
    if not weights:
        return None
    eq = torch.ones(max_length)
    for word, value in weights.items():
        idx = word_token_indices(tokenizer, text, word, max_length, match)
        if idx:
            eq[idx] = float(value)
    return eq


def _bounds(value: StepBounds) -> tuple[float, float]:
    return (0.0, float(value)) if isinstance(value, (int, float)) else (float(value[0]), float(value[1]))


def time_word_alphas(tokenizer, target: str, num_steps: int,
                     cross_replace_steps: Union[StepBounds, Mapping[str, StepBounds]], max_length: int,
                     match: str = "lenient") -> torch.Tensor:
    """``float[num_steps + 1, T]``: 1 where the target's cross-attention is taken from the source.

    ``cross_replace_steps`` is a fraction (steps ``[0, int(f * (num_steps + 1)))``, as the reference
    counts), a (start, end) pair, or ``{"default_": f, word: f, ...}`` for per-word schedules."""
    table = dict(cross_replace_steps) if isinstance(cross_replace_steps, Mapping) else {"default_": cross_replace_steps}
    table.setdefault("default_", (0.0, 1.0))
    rows = num_steps + 1
    alphas = torch.zeros(rows, max_length)

    def fill(bounds, idx):
        start, end = _bounds(bounds)
        s, e = int(start * rows), int(end * rows)
        alphas[:, idx] = 0.0
        alphas[s:e, idx] = 1.0

    fill(table["default_"], slice(None))
    for word, bounds in table.items():
        if word != "default_":
            idx = word_token_indices(tokenizer, target, word, max_length, match)
            if idx:
                fill(bounds, idx)
    return alphas


def step_range(self_replace_steps: StepBounds, num_steps: int) -> tuple[int, int]:
    """Self-attention injection steps ``[start, end)``, counted as the reference: ``int(f * num_steps)``."""
    start, end = _bounds(self_replace_steps)
    return int(num_steps * start), int(num_steps * end)
