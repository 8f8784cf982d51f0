"""The query's embedding, computed on a helper thread while the retriever's lexical stage runs.

A short query through the local model costs ~4-5 ms of onnxruntime, which releases the GIL;
BM25, the tail, the records of the BM25 hits, the tenant's statistics and the query
expansion (together a few milliseconds of Python) need no vector. Overlapped, a query costs
the longer of the two instead of their sum when a second core is free (docs/retrieval.md,
"Small-tenant read cost"). The vector is the same either way; only when it is computed
changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Generic, TypeVar

import numpy as np

from memorose.providers.embeddings.base import Embedder

#: Helper threads for query embeddings (process-wide). A query whose embedding has not
#: started when it is needed (all helpers busy with other queries) embeds it itself, so
#: a burst of queries never waits in this pool's queue.
HELPERS = 2

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _helpers() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=HELPERS, thread_name_prefix="memorose-query-embed")
        return _pool


class QueryVector:
    """``embedder.embed_one(text)``, started now and read with ``result()`` (None for a
    blank query). Computed inline when overlapping cannot pay: the embedder holds the GIL
    (hashing: tens of microseconds), or it has the text's vector already."""

    def __init__(self, embedder: Embedder, text: str) -> None:
        self._value: np.ndarray | None = None
        self._background: Background[np.ndarray] | None = None
        if not text.strip():
            return
        known = embedder.recent(text)
        if known is not None:
            self._value = known
        elif embedder.releases_gil:
            self._background = Background(partial(embedder.embed_one, text))
        else:
            self._value = embedder.embed_one(text)

    @property
    def ready(self) -> bool:
        """Whether ``result()`` returns at once (computed inline, or known already)."""
        return self._background is None

    @property
    def overlapped(self) -> bool:
        """Whether the embedding was handed to a helper thread (tests)."""
        return self._background is not None

    def result(self) -> np.ndarray | None:
        return self._value if self._background is None else self._background.result()


class Background(Generic[T]):
    """``work()`` started on a helper thread now, read with ``result()``; run by the caller
    instead if no helper has taken it by then (all busy with other queries). For work that
    releases the GIL (a large tenant's int8 scan), so it overlaps the caller's Python."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._work = work
        self._future = _helpers().submit(work)

    def result(self) -> T:
        if self._future.cancel():
            return self._work()
        return self._future.result()
