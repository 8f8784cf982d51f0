"""Issue 12's footprint work, on real components: the startup load streams a tenant in chunks
into a matrix allocated once, freed heap goes back to the system, RocksDB gets its memory and
compression settings, and a node does not import what it does not use."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memorose import commands
from memorose.runtime import release_free_heap
from memorose.statemachine import StateMachine
from memorose.storage import indexer as indexer_module
from memorose.storage.indexer import Indexer
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore, RocksTuning

DIM = 8


def memory(memory_id: str, vector: np.ndarray) -> dict[str, object]:
    return {
        "tenant_id": "t1",
        "memory_id": memory_id,
        "stream_id": "chat",
        "content": f"fact {memory_id}",
        "embedding": vector.astype(np.float32).tobytes(),
        "source_event_ids": [f"ev-{memory_id}"],
        "created_at": 1.0,
        "valid_from": 1.0,
    }


class Store:
    """A RocksDB holding 11 memories of dimension 8 and 2 of another dimension (stale)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = RocksStore(root / "rocks")
        rng = np.random.default_rng(5)
        self.vectors = {f"m-{i:02d}": rng.normal(size=DIM) for i in range(11)}
        rows = [memory(m, v) for m, v in self.vectors.items()]
        rows += [memory(f"x-{i}", rng.normal(size=DIM // 2)) for i in range(2)]
        StateMachine(self.store).apply(commands.encode(commands.consolidate("t1", 0, 0, rows, 2.0)), 1)

    def indexer(self) -> Indexer:
        opened = Indexer(StateReader(self.store), self.root / "index", dim=DIM, ann_threshold=1000)
        opened.open()
        return opened


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(indexer_module, "LOAD_CHUNK", 4)  # 11 memories: three chunks
    s = Store(tmp_path)
    yield s
    s.store.close()


def check_matrix(ix: Indexer, store: Store) -> None:
    matrix = ix.vectors._matrices["t1"]
    assert sorted(matrix.ids) == sorted(store.vectors)
    assert matrix.codes.shape[0] <= len(matrix.ids) + len(matrix.ids) // 4 + 16  # fitted, no doubling
    assert ix.stale_vectors["t1"] == {"x-0", "x-1"}
    for memory_id, vector in store.vectors.items():
        best = ix.vectors.search("t1", vector / np.linalg.norm(vector), 1)
        assert best[0][0] == memory_id


def test_the_startup_load_streams_every_searchable_memory(store: Store) -> None:
    first = store.indexer()  # no saved state: a rebuild
    check_matrix(first, store)
    first.stop()
    restarted = store.indexer()  # saved state: the startup load of the matrix
    check_matrix(restarted, store)
    restarted.request_rebuild("t1")
    restarted._rebuild_requested_tenants()  # an operator's scoped reindex
    check_matrix(restarted, store)
    restarted.stop()


def test_a_load_that_reserved_for_skipped_memories_releases_them(tmp_path: Path) -> None:
    from memorose.storage.vectors import VectorIndex

    index = VectorIndex(tmp_path / "lance", dim=DIM, ann_threshold=1000)
    index.start_load("t1", expected_rows=500)  # e.g. 497 of them archived
    index.upsert("t1", ["a", "b", "c"], ["s"] * 3, np.eye(3, DIM, dtype=np.float32))
    index.end_load("t1")
    assert index._matrices["t1"].codes.shape[0] < 500
    index.start_load("t2", expected_rows=10)
    index.end_load("t2")  # nothing searchable: no matrix kept
    assert "t2" not in index._matrices


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_heap_goes_back_on_glibc() -> None:
    assert release_free_heap() is True


def test_rocksdb_gets_the_storage_settings(tmp_path: Path) -> None:
    store = RocksStore(
        tmp_path / "db", tuning=RocksTuning(block_cache_mib=8, write_buffer_mib=4, compression="lz4")
    )
    store.close()
    generation = store.live_path
    options = next(generation.glob("OPTIONS-*")).read_text()
    assert "compression=kLZ4Compression" in options and "bottommost_compression=kLZ4Compression" in options
    assert "write_buffer_size=4194304" in options
    assert "capacity : 8388608" in (generation / "LOG").read_text()


def test_a_node_imports_neither_other_commands_nor_unused_libraries() -> None:
    """``memorose node`` builds only its own command group, and starting a node's service
    imports no LanceDB/pyarrow (only with a large tenant) and no graph libraries or
    scipy.sparse (only with an insight pass): together ~55 MiB of an idle node's memory."""
    probe = (
        "import sys\n"
        "from memorose.cli import build_parser\n"
        "build_parser('node')\n"
        "import node.runner, node.service\n"
        "heavy = ['benchmarks.cli', 'gateway.app', 'pyarrow', 'lancedb', 'networkx', 'igraph', 'community',"
        " 'scipy']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_command_is_found_after_the_global_options() -> None:
    from memorose.cli import command_named

    assert command_named(["--log-level", "WARNING", "node", "--data-dir", "x"]) == "node"
    assert command_named(["bench", "storage"]) == "bench"
    assert command_named(["--help"]) is None and command_named([]) is None
