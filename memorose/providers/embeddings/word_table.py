"""The local model's vectors of its own whole-word vocabulary, computed once.

Query expansion (retrieval/lexicon.py) needs the vector of every content word of a query
and of a tenant's memories: one model run per new query (~3 ms of a LoCoMo question's ~21
ms) and thousands of words per new tenant, taken from the cores consolidation needs. A
word that is one token of the tokenizer's vocabulary (96 % of LoCoMo's query words) has
one vector, the model's output for ``[CLS] word [SEP]``: the same input ``embed([word])``
runs. So those vectors are computed once, by ``memorose prepare-model`` (``make`` runs it;
~30 s on one core), into the cache dir beside the int8 model, and read from a memory map.
A word outside the vocabulary, or a node without the table, goes through the model as
before: the table changes the cost, not the vectors (cosine > .999: the int8 path's
rounding differs slightly between a batch and a text alone).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memorose.providers.embeddings.int8_graph import file_sha256, write_atomically

log = logging.getLogger(__name__)

#: Part of the files' names: a change to what the table holds gets new files.
TABLE_VERSION = 1
#: The words query expansion asks for (lexicon.content_words: lowercase, 3+ letters).
TABLE_WORD = re.compile(r"[a-z]{3,}")
#: Words per model call while building.
BUILD_BATCH = 512


def table_paths(cache_dir: Path, model_sha256: str) -> tuple[Path, Path, Path]:
    """The vectors (float16 .npy), the words (one per line) and their recorded SHA-256."""
    stem = f"words-{model_sha256[:16]}-v{TABLE_VERSION}"
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.txt", cache_dir / f"{stem}.sha256"


def _digest(vectors: Path, words: Path) -> str:
    return f"{file_sha256(vectors)} {file_sha256(words)}"


@dataclass(frozen=True)
class WordTable:
    index: dict[str, int]
    vectors: np.ndarray  # (words, dim) float16, unit rows, memory-mapped

    @classmethod
    def load(cls, cache_dir: Path, model_sha256: str) -> WordTable | None:
        """The table if it was built for this model and its files match their recorded
        hashes; None otherwise (the caller embeds every word with the model)."""
        vectors_path, words_path, digest_path = table_paths(cache_dir, model_sha256)
        if not digest_path.is_file():
            return None
        try:
            if digest_path.read_text().strip() != _digest(vectors_path, words_path):
                log.warning("word table in %s does not match its recorded hash: not used", cache_dir)
                return None
            words = words_path.read_text().split("\n")
            vectors = np.load(vectors_path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            log.warning("word table in %s cannot be read (%s): not used", cache_dir, exc)
            return None
        if vectors.ndim != 2 or len(vectors) != len(words):
            log.warning("word table in %s is inconsistent: not used", cache_dir)
            return None
        return cls({w: i for i, w in enumerate(words)}, vectors)

    def rows(self, words: list[str]) -> np.ndarray:
        """Row of each word, -1 where it is not in the table."""
        get = self.index.get
        return np.fromiter((get(w, -1) for w in words), dtype=np.int64, count=len(words))


def vocabulary_words(vocabulary: dict[str, int], limit: int | None = None) -> list[str]:
    """The vocabulary's whole words that query expansion can ask for, sorted."""
    words = sorted(w for w in vocabulary if TABLE_WORD.fullmatch(w))
    return words if limit is None else words[:limit]


def write_table(cache_dir: Path, model_sha256: str, words: list[str], vectors: np.ndarray) -> Path:
    """Write the table's files (each atomically), the hash record last: a reader sees the
    previous complete table or the new one, never half of one."""
    vectors_path, words_path, digest_path = table_paths(cache_dir, model_sha256)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staged = vectors_path.with_name(vectors_path.name + ".staged.npy")
    np.save(staged, np.ascontiguousarray(vectors, dtype=np.float16))
    write_atomically(vectors_path, staged.read_bytes())
    staged.unlink()
    write_atomically(words_path, "\n".join(words).encode())
    write_atomically(digest_path, _digest(vectors_path, words_path).encode())
    return vectors_path
