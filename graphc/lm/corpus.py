"""The character corpus: by default the Python standard library's own documentation
(``pydoc_data.topics``, ~465 k characters, on every machine with Python), or any UTF-8
text file.

Split by position, never shuffled (neighbouring windows overlap, so a random split
would leak test text into training): the first 90 % of the characters train, the next
5 % validate, the last 5 % test.  The vocabulary is the corpus's own distinct
characters (sorted, so ids are stable for a given text); the trainer stores it in the
checkpoint so sampling encodes prompts the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import GraphcError

SPLIT = (0.90, 0.05, 0.05)


def default_text() -> str:
    from pydoc_data.topics import topics
    return "".join(topics[k] for k in sorted(topics))


def load_corpus(path: str | None = None) -> "Corpus":
    if path is None:
        return Corpus(default_text(), "pydoc_data.topics")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise GraphcError(f"--text {path}: not UTF-8 text ({e.reason} at byte {e.start})") \
            from None
    return Corpus(text, path)


@dataclass
class Corpus:
    text: str
    name: str

    def __post_init__(self):
        if len(self.text) < 2000:
            raise GraphcError(f"{self.name}: {len(self.text)} characters is too little text "
                              "for a language model (need at least 2000)")
        self.vocab = sorted(set(self.text))
        self.index = {c: i for i, c in enumerate(self.vocab)}
        ids = self.encode(self.text)
        n = len(ids)
        a, b = int(n * SPLIT[0]), int(n * (SPLIT[0] + SPLIT[1]))
        self.train, self.val, self.test = ids[:a], ids[a:b], ids[b:]

    def encode(self, s: str) -> np.ndarray:
        try:
            return np.array([self.index[c] for c in s], np.int32)
        except KeyError as e:
            raise GraphcError(f"character {e.args[0]!r} is not in the vocabulary of "
                              f"{self.name}") from None

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def unigram_nats(train: np.ndarray, test: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/char) of ``test`` under ``train``'s character frequencies
    (add-one smoothed): the baseline a model that ignores context reaches."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[test].mean())
