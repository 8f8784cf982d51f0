"""The query's embedding on a helper thread (memorose/retrieval/query_vector.py): the same
vector as computed inline, and never a wait behind other queries' embeddings."""

from __future__ import annotations

import threading

import numpy as np

from memorose.providers.embeddings.hashing import HashingEmbedder
from memorose.retrieval import query_vector
from memorose.retrieval.query_vector import QueryVector


class GateEmbedder(HashingEmbedder):
    """The hashing embedder, declared GIL-free; while ``gate`` is closed, embedding a text
    that starts with "hold" blocks (the helper threads look busy)."""

    releases_gil = True

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.gate = threading.Event()
        self.threads: dict[str, str] = {}  # text -> the thread that embedded it
        self.started = threading.Event()  # an embedding began (on whichever thread)
        self.holding = threading.Semaphore(0)  # released by each "hold" embedding as it blocks

    def embed(self, texts: list[str]) -> np.ndarray:
        self.threads[texts[0]] = threading.current_thread().name
        self.started.set()
        if texts and texts[0].startswith("hold"):
            self.holding.release()
            assert self.gate.wait(30)
        return super().embed(texts)


def test_overlapped_vector_is_the_inline_one() -> None:
    embedder = GateEmbedder()
    embedder.gate.set()
    pending = QueryVector(embedder, "What exercises has John done?")
    assert pending.overlapped
    # A helper that has not picked the job up by ``result()`` is skipped by design (the
    # query embeds inline instead): wait until one has, so the thread is known.
    assert embedder.started.wait(30)
    vector = pending.result()
    assert vector is not None
    assert np.array_equal(vector, HashingEmbedder(dim=64).embed_one("What exercises has John done?"))
    assert embedder.threads["What exercises has John done?"].startswith("memorose-query-embed")


def test_inline_for_an_embedder_that_holds_the_gil_and_none_for_a_blank_query() -> None:
    embedder = HashingEmbedder(dim=64)
    pending = QueryVector(embedder, "yoga class")
    assert not pending.overlapped
    assert np.array_equal(pending.result(), embedder.embed_one("yoga class"))  # type: ignore[arg-type]
    assert QueryVector(embedder, "   ").result() is None


def test_a_vector_at_hand_is_not_sent_to_a_helper() -> None:
    class Remembering(GateEmbedder):
        def recent(self, text: str) -> np.ndarray | None:
            return np.ones(self.dim, np.float32) if text == "known" else None

    pending = QueryVector(Remembering(), "known")
    assert not pending.overlapped
    assert np.array_equal(pending.result(), np.ones(64, np.float32))  # type: ignore[arg-type]


def test_busy_helpers_mean_the_query_embeds_its_own_text() -> None:
    embedder = GateEmbedder()
    holding = [QueryVector(embedder, f"hold {i}") for i in range(query_vector.HELPERS)]
    try:
        for _ in holding:  # both helpers have picked up their job and block in it
            assert embedder.holding.acquire(timeout=30)
        pending = QueryVector(embedder, "pottery class")
        # Both helpers are blocked: the answer can only come from this thread.
        vector = pending.result()
        assert np.array_equal(vector, HashingEmbedder(dim=64).embed_one("pottery class"))  # type: ignore[arg-type]
        assert embedder.threads["pottery class"] == threading.current_thread().name
    finally:
        embedder.gate.set()
    assert all(h.result() is not None for h in holding)
