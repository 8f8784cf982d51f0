"""The read path of issue 12 on real components: the int8 vector matrix and its
lock-free snapshots, tenant statistics cached per Tantivy generation, and the
RocksDB multi-get."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from rocksdict import WriteBatch

from memorose.retrieval.stats import TenantStats, tenant_stats
from memorose.storage.fulltext import KIND_MEMORY, FullTextIndex
from memorose.storage.rocks import RocksStore
from memorose.storage.vectors import VectorIndex, quantize

DIM = 64


def unit_rows(n: int, seed: int = 3) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def exact_index(tmp_path: Path, rows: np.ndarray, streams: list[str] | None = None) -> VectorIndex:
    index = VectorIndex(tmp_path / "lance", dim=DIM, ann_threshold=10**6)
    ids = [f"m{i}" for i in range(len(rows))]
    index.upsert("t", ids, streams or ["s"] * len(ids), rows)
    return index


def test_quantized_codes_keep_cosines_close() -> None:
    rows = unit_rows(200)
    codes, scales = quantize(rows)
    assert codes.dtype == np.int8 and codes.nbytes == rows.nbytes // 4
    restored = codes.astype(np.float32) * scales[:, None]
    assert np.abs(restored @ rows[0] - rows @ rows[0]).max() < 0.01


def test_search_finds_the_float32_best_by_int8_codes(tmp_path: Path) -> None:
    rows = unit_rows(500)
    index = exact_index(tmp_path, rows)
    query = rows[42] + 0.3 * unit_rows(1, seed=9)[0]
    query /= np.linalg.norm(query)

    hits = index.search("t", query, 10)

    truth = [f"m{i}" for i in np.argsort(-(rows @ query))[:10]]
    assert hits[0][0] == truth[0] == "m42"
    assert len(set(truth) & {memory_id for memory_id, _ in hits}) >= 9
    for memory_id, score in hits:  # int8 codes: close to the float32 cosine, not equal
        assert abs(score - float(rows[int(memory_id[1:])] @ query)) < 0.01
    assert [score for _, score in hits] == sorted((score for _, score in hits), reverse=True)


def test_held_rows_are_the_int8_rows_widened(tmp_path: Path) -> None:
    """What ranking's cosine feature reads instead of a record's vector: each memory's row
    (after deletes moved rows about), none for a memory or tenant the matrix lacks."""
    rows = unit_rows(30)
    index = exact_index(tmp_path, rows)
    index.remove("t", "m3")  # the last row moves into row 3
    found = index.held_rows("t", ["m29", "m3", "m7", "nope"])
    assert found is not None
    vectors, held = found
    assert held.tolist() == [True, False, True, False]
    codes, scales = quantize(rows[[29, 7]])
    assert np.array_equal(vectors[[0, 2]], codes.astype(np.float32) * scales[:, None])
    assert not vectors[[1, 3]].any()
    assert np.abs(vectors[0] @ rows[29] - 1.0) < 0.01
    other = index.held_rows("other", ["m1"])
    assert other is not None and not other[1].any()


def test_stream_filter_and_unknown_stream(tmp_path: Path) -> None:
    rows = unit_rows(100)
    index = exact_index(tmp_path, rows, ["a" if i % 2 else "b" for i in range(100)])
    hits = index.search("t", rows[3], 5, stream_id="a")
    assert hits[0][0] == "m3" and all(int(m[1:]) % 2 for m, _ in hits)
    assert index.search("t", rows[3], 5, stream_id="nowhere") == []


def test_a_search_snapshot_is_untouched_by_later_updates_and_deletes(tmp_path: Path) -> None:
    rows = unit_rows(50)
    index = VectorIndex(tmp_path / "lance", dim=DIM, ann_threshold=10**6)
    index.upsert("t", [f"m{i}" for i in range(50)], ["s"] * 50, rows)
    matrix = index._matrices["t"]
    snapshot = matrix.snapshot()

    index.remove("t", "m0")  # moves the last row into row 0
    index.upsert("t", ["m1"], ["s"], unit_rows(1, seed=11))  # rewrites row 1 in place
    index.upsert("t", [f"new{i}" for i in range(100)], ["s"] * 100, unit_rows(100, seed=12))  # grows

    for i in (0, 1, 49):
        scores = snapshot.approximate(rows[i], None)
        assert snapshot.ids[int(np.argmax(scores))] == f"m{i}"
    fresh = index.search("t", rows[49], 1)
    assert fresh[0][0] == "m49"
    assert all(m != "m0" for m, _ in index.search("t", rows[0], 200))


def test_rewriting_an_unchanged_vector_copies_nothing(tmp_path: Path) -> None:
    rows = unit_rows(40)
    index = exact_index(tmp_path, rows)
    matrix = index._matrices["t"]
    snapshot = matrix.snapshot()
    index.upsert("t", ["m5"], ["s"], rows[5:6])  # re-indexed for an access count: same vector
    assert matrix.codes is snapshot.codes  # still shared: no copy-on-write happened
    index.upsert("t", ["m5"], ["s"], rows[6:7])  # a real change copies first
    assert matrix.codes is not snapshot.codes
    assert snapshot.ids[int(np.argmax(snapshot.approximate(rows[5], None)))] == "m5"
    assert index.search("t", rows[6], 2)[0][0] in {"m5", "m6"}


def test_searches_run_while_the_indexer_writes(tmp_path: Path) -> None:
    rows = unit_rows(300)
    index = exact_index(tmp_path, rows)
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            extra = unit_rows(20, seed=100 + n)
            ids = [f"x{n}-{i}" for i in range(20)]
            index.upsert("t", ids, ["s"] * 20, extra)
            for memory_id in ids[:10]:
                index.remove("t", memory_id)
            n += 1

    def reader() -> None:
        for i in range(200):
            best = index.search("t", rows[i % 300], 3)
            if best[0][0] != f"m{i % 300}":
                errors.append(f"query {i}: {best[:1]}")

    thread = threading.Thread(target=writer)
    thread.start()
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    stop.set()
    thread.join()
    assert errors == []


def test_tenant_stats_are_cached_until_the_next_commit(tmp_path: Path) -> None:
    fulltext = FullTextIndex(tmp_path / "tantivy")
    for i, text in enumerate(["apple pie", "apple tart", "pear"]):
        fulltext.upsert(KIND_MEMORY, "t", "s", f"m{i}", text)
    fulltext.upsert(KIND_MEMORY, "other", "s", "o", "apple apple")
    fulltext.commit()
    stats = TenantStats(fulltext)

    first = stats.get("t", ["appl", "pear"], None)
    assert first == tenant_stats(fulltext, "t", ["appl", "pear"], None)
    assert (first.docs, first.doc_freq) == (3, {"appl": 2, "pear": 1})
    queries = stats.queries
    assert stats.get("t", ["pear", "appl"], None).doc_freq == {"pear": 1, "appl": 2}
    assert stats.queries == queries  # answered from the cache

    fulltext.upsert(KIND_MEMORY, "t", "s", "m9", "pear crumble")
    fulltext.commit()
    after = stats.get("t", ["pear"], None)
    assert (after.docs, after.doc_freq) == (4, {"pear": 2})
    assert stats.get("t", ["pear"], "elsewhere").docs == 0
    fulltext.close()


def test_multi_get_answers_in_key_order_with_none_for_missing(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "rocks")
    batch = WriteBatch(raw_mode=True)
    batch.put(b"k1", b"one")
    batch.put(b"k3", b"three")
    store.write(batch)
    assert store.get_many([b"k3", b"k2", b"k1"]) == [b"three", None, b"one"]
    assert store.get_many([]) == []
    store.close()


def test_search_many_answers_each_query_as_search_does(tmp_path: Path) -> None:
    """Consolidation's batched candidate search: the same neighbours and scores as one
    int8 search per query, across several row blocks."""
    import memorose.storage.vectors as vectors_module

    rows = unit_rows(300)
    index = exact_index(tmp_path, rows)
    queries = unit_rows(7, seed=11)
    old_block = vectors_module.SEARCH_BLOCK_ROWS
    vectors_module.SEARCH_BLOCK_ROWS = 64  # five blocks
    try:
        many = index.search_many("t", queries, 5)
    finally:
        vectors_module.SEARCH_BLOCK_ROWS = old_block
    for query, hits in zip(queries, many, strict=True):
        single = index.search("t", query, 5)
        assert [i for i, _ in hits] == [i for i, _ in single]
        assert np.allclose([s for _, s in hits], [s for _, s in single])
    assert index.search_many("t", queries[:0], 5) == []
    assert index.search_many("nobody", queries, 5) == [[]] * 7
