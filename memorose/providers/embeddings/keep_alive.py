"""A model loaded on first use and released after ``keep_alive`` idle seconds.

An idle node should not hold a model it is not using: the local embedder's session is
most of the RSS of an empty node. Ollama does the same (its ``keep_alive``, 5 minutes by
default). Loading again costs about 0.1 s (docs/retrieval.md), paid by the first embedding
after an idle spell. One daemon thread per process releases what has been idle long enough.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from memorose.runtime import release_free_heap

T = TypeVar("T")

#: How often the releasing thread looks, at most (seconds).
MAX_CHECK_INTERVAL_S = 10.0


class KeptModel(Generic[T]):
    """``load()``'s result while in use or used in the last ``keep_alive`` seconds (0: kept
    for the life of the process)."""

    def __init__(self, load: Callable[[], T], keep_alive: float) -> None:
        self._load = load
        self.keep_alive = keep_alive
        self._lock = threading.Lock()
        self._model: T | None = None
        self._in_use = 0
        self._last_used = time.monotonic()
        #: How many times the model was loaded (a test and /metrics-style count).
        self.loads = 0
        if keep_alive > 0:
            _REAPER.watch(self)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @contextmanager
    def use(self) -> Iterator[T]:
        """The model, loaded if it is not (under the lock: concurrent first users wait for
        one load); it cannot be released while a ``use`` is open."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
                self.loads += 1
            model = self._model
            self._in_use += 1
        try:
            yield model
        finally:
            with self._lock:
                self._in_use -= 1
                self._last_used = time.monotonic()

    def release_if_idle(self, now: float | None = None) -> bool:
        """Drop the model if nobody uses it and it has been idle ``keep_alive`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = self._model is not None and self._in_use == 0 and now - self._last_used >= self.keep_alive
            if idle:
                self._model = None
        return idle


class _Reaper:
    """The process's one releasing thread, started with the first model that needs it."""

    def __init__(self) -> None:
        self._models: weakref.WeakSet[KeptModel[object]] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, model: KeptModel[T]) -> None:
        with self._lock:
            self._models.add(model)  # type: ignore[arg-type]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="model-keep-alive", daemon=True)
                self._thread.start()

    def _interval(self) -> float:
        with self._lock:
            shortest = min((m.keep_alive for m in self._models), default=MAX_CHECK_INTERVAL_S)
        return min(max(shortest / 2, 0.05), MAX_CHECK_INTERVAL_S)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval())
            with self._lock:
                models = list(self._models)
            if any([m.release_if_idle() for m in models]):
                release_free_heap()  # the session's memory back to the system now


_REAPER = _Reaper()
