"""Offline embedder: signed feature hashing of stemmed unigrams, bigrams and character
trigrams. No model weights, deterministic across processes (crc32, not Python's hash),
and good enough to find paraphrases that share word stems."""

from __future__ import annotations

import itertools
import math
import zlib
from collections import Counter

import numpy as np

from memorose.providers.embeddings.base import Embedder, normalise
from memorose.retrieval.text import STOPWORDS, stem, words


class HashingEmbedder(Embedder):
    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.model = f"hashing-v1-{dim}"

    def _features(self, text: str) -> Counter[str]:
        tokens = [stem(w) for w in words(text) if w not in STOPWORDS]
        feats: Counter[str] = Counter(tokens)
        feats.update(f"{a} {b}" for a, b in itertools.pairwise(tokens))
        for tok in tokens:
            padded = f"#{tok}#"
            feats.update(f"~{padded[i : i + 3]}" for i in range(len(padded) - 2))
        return feats

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat, count in self._features(text).items():
                h = zlib.crc32(feat.encode())
                weight = (1.0 + math.log(count)) * (0.35 if feat.startswith("~") else 1.0)
                out[row, h % self.dim] += weight if (h >> 31) & 1 else -weight
        return normalise(out)
