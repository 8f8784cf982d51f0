"""The embedding interface. Embeddings are computed on the leader before proposing, so a
provider may be slow or non-deterministic without affecting replica consistency."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Embedder(ABC):
    #: Recorded with every memory so that a model change is detectable.
    model: str
    dim: int
    #: Whether recently embedded texts are answered from memory (consolidation embeds a
    #: coming batch ahead of time only then).
    caches_recent: bool = False
    #: Whether its work runs without the GIL (native inference, network I/O), so a query's
    #: embedding can overlap the retriever's other work (retrieval/query_vector.py).
    releases_gil: bool = False

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """An (n, dim) float32 array of L2-normalised vectors."""

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def recent(self, text: str) -> np.ndarray | None:
        """The vector of ``text`` if it is at hand without computing it (a cache), else None."""
        return None

    def embed_words(self, words: list[str]) -> np.ndarray:
        """Vectors of single words (query expansion's); a provider may have them without
        running its model (the local model's word table)."""
        return self.embed(words)

    def stored_word_vectors(self, words: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """The vectors of ``words`` this provider keeps without running its model, as (a
        boolean mask of the words it keeps, their float16 rows in order), or None if it
        keeps none. Those need no cache of their own (retrieval/lexicon.py, ``WordVectors``)."""
        return None


def cosines(vector: np.ndarray, others: list[np.ndarray | None]) -> np.ndarray:
    """``vector`` against each of ``others`` (unit vectors) in one product; 0 for one that is
    missing or of another size (another model's space): retrieval's cosine feature and
    arbitration's similarity both need this, per candidate."""
    rows = _full_matrix(vector, others)
    if rows is not None:
        return (rows @ vector).astype(np.float64)
    out = np.zeros(len(others))
    same = [(i, other) for i, other in enumerate(others) if other is not None and other.shape == vector.shape]
    if same:
        rows = np.stack([other for _, other in same])
        if rows.dtype != np.float32:  # stored float16 rows: widened once, for the whole matrix
            rows = rows.astype(np.float32)
        out[[i for i, _ in same]] = (rows @ vector).astype(np.float64)
    return out


def _full_matrix(vector: np.ndarray, others: list[np.ndarray | None]) -> np.ndarray | None:
    """``others`` as one float32 matrix, built by one C call, when every one is there and of
    ``vector``'s size (float16 rows widened: the matrix the general path stacks); else None."""
    if vector.dtype != np.float32 or vector.ndim != 1 or not others:
        return None
    try:
        rows = np.array(others)
    except (TypeError, ValueError):  # ragged: another model's vector among them
        return None
    if rows.ndim != 2 or rows.shape[1] != vector.shape[0] or rows.dtype not in (np.float32, np.float16):
        return None
    return rows.astype(np.float32, copy=False)


def normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)
