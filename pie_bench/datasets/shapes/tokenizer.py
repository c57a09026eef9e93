"""A word-level CLIP tokenizer for the ShapesEdit vocabulary, as the standard vocab.json/merges.txt
pair that ``CLIPTokenizer`` reads: every vocabulary word is one token, any other word falls back to
its letters, so the tiny text encoder's embedding table is a few hundred rows instead of 49408."""
from __future__ import annotations

import json
import string
from pathlib import Path

from pie_bench.datasets.shapes.scenes import VOCABULARY

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77  # SD's context length: editors and P2P's word alignment assume it


def _bpe(word: str, ranks: dict) -> list[str]:
    """CLIP's BPE on one word: repeatedly merge the lowest-ranked adjacent pair."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def _merges_and_vocab(words) -> tuple[list[tuple[str, str]], list[str]]:
    letters = list(string.ascii_lowercase)
    vocab = letters + [c + "</w>" for c in letters]
    merges: list[tuple[str, str]] = []
    ranks: dict = {}
    # a merge learnt for one word can split another word's chain early ("remove" takes r+e before
    # "green" gets g+r); then chain on from the split the BPE actually produces, until every word is whole
    for _ in range(10):
        whole = True
        for word in words:
            parts = _bpe(word, ranks)
            if len(parts) == 1:
                continue
            whole = False
            left = parts[0]
            for right in parts[1:]:
                if (left, right) not in ranks:
                    ranks[(left, right)] = len(merges)
                    merges.append((left, right))
                left = left + right
                if left not in vocab:
                    vocab.append(left)
        if whole:
            break
    return merges, vocab + [BOS, EOS]


def write_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges, vocab = _merges_and_vocab(VOCABULARY)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_LENGTH,
                        pad_token=EOS, bos_token=BOS, eos_token=EOS, unk_token=EOS)
    for w in VOCABULARY:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:  # the merge order above should make this impossible
            raise RuntimeError(f"shapes tokenizer splits {w!r} into {ids}")
    tok.save_pretrained(folder)
    return tok
