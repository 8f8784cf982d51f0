"""RocksDB's options hold on every open, not only when the database is created: rocksdict
reopened an existing database with the column family options of its OPTIONS file, which
dropped the bloom filters and swapped the configured block cache for its own 8 MiB one."""

from __future__ import annotations

import random
from pathlib import Path

from rocksdict import WriteBatch

from memorose.storage.rocks import RocksStore, RocksTuning, open_applied_index


def _write(store: RocksStore, items: dict[bytes, bytes]) -> None:
    batch = WriteBatch(raw_mode=True)
    for key, value in items.items():
        batch.put(key, value)
    store.write(batch)


def _newest_options(store: RocksStore) -> str:
    files = sorted(store.live_path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
    return files[-1].read_text()


def test_a_reopened_database_gets_the_configured_options(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "db", tuning=RocksTuning(block_cache_mib=4, compression="lz4"))
    _write(store, {b"k": b"v"})
    store.close()

    store = RocksStore(tmp_path / "db", tuning=RocksTuning(block_cache_mib=12, compression="zstd"))
    options = _newest_options(store)
    assert "filter_policy=bloomfilter" in options
    assert "compression=kZSTD" in options and "bottommost_compression=kZSTD" in options
    assert "capacity : 12582912" in (store.live_path / "LOG").read_text()
    assert store.get(b"k") == b"v"
    store.close()


def test_multi_get_across_l0_files_with_and_without_filters(tmp_path: Path) -> None:
    """Files written before the filters (snappy, no filter) and after (zstd, filtered) answer
    the same multi-get: the ranges of the L0 files overlap, most probes are misses."""
    rng = random.Random(5)
    ids = [f"m-{rng.getrandbits(64):016x}" for _ in range(600)]
    expected: dict[bytes, bytes] = {}
    store = RocksStore(tmp_path / "db", tuning=RocksTuning(compression="snappy"))
    for part in range(3):
        chunk = {f"M/t/{m}".encode(): f"{m}:{part}".encode() * 40 for m in ids[part::3]}
        _write(store, chunk)
        store.flush()  # one L0 file per part, each spanning the whole key range
        expected.update(chunk)
    store.close()
    store = RocksStore(tmp_path / "db")
    rewritten = {key: value + b"+" for key, value in list(expected.items())[::7]}
    _write(store, rewritten)
    store.flush()
    expected.update(rewritten)
    keys = [*expected, b"M/t/missing-1", b"M/t/m-0", b"M/t/zzz"]
    rng.shuffle(keys)
    assert store.get_many(keys) == [expected.get(key) for key in keys]
    store.close()
    assert open_applied_index(store.live_path) == 0


def test_tables_are_compressed_against_a_dictionary_and_older_tables_stay_readable(tmp_path: Path) -> None:
    """The default: LZ4 with a per-table dictionary and small tables. A database written
    with plain zstd (the default before) opens with it and answers every read, before and
    after compaction rewrites its tables with the new settings."""
    rng = random.Random(11)
    words = [f"word{i}" for i in range(300)]
    records = {
        f"M/t/m-{i:06d}".encode(): " ".join(rng.choice(words) for _ in range(60)).encode()
        for i in range(3000)
    }
    store = RocksStore(tmp_path / "db", tuning=RocksTuning(compression="zstd", compression_dict_kib=0))
    _write(store, records)
    store.flush()
    store.close()

    store = RocksStore(tmp_path / "db")
    options = _newest_options(store)
    assert "compression=kLZ4Compression" in options and "bottommost_compression=kLZ4Compression" in options
    assert "max_dict_bytes=16384" in options
    assert "target_file_size_base=4194304" in options
    keys = list(records)
    rng.shuffle(keys)
    assert store.get_many(keys) == [records[k] for k in keys]
    store._db.compact_range(None, None)  # rewrites the zstd table with LZ4 and a dictionary
    assert store.get_many(keys) == [records[k] for k in keys]
    store.close()


def _table_bytes(store: RocksStore) -> int:
    return sum(f.stat().st_size for f in store.live_path.glob("*.sst"))


def test_the_dictionary_makes_small_records_smaller_on_disk(tmp_path: Path) -> None:
    """Records of about a block each share their field names and words: compressed alone
    (no dictionary) LZ4 finds little to reuse in them, against the table's dictionary it
    does."""
    rng = random.Random(3)
    words = [f"w{i:03d}" for i in range(400)]
    records = {
        f"M/t/m-{i:06d}".encode(): (
            b'{"content":"' + " ".join(rng.choice(words) for _ in range(150)).encode() + b'"}'
        )
        for i in range(2000)
    }
    sizes = {}
    for dict_kib in (0, 16):
        store = RocksStore(tmp_path / f"db{dict_kib}", tuning=RocksTuning(compression_dict_kib=dict_kib))
        _write(store, records)
        store.flush()
        sizes[dict_kib] = _table_bytes(store)
        assert store.get_many(list(records)[:50]) == list(records.values())[:50]
        store.close()
    assert sizes[16] < 0.9 * sizes[0], sizes


def test_a_bounded_number_of_open_tables_reaches_rocksdb(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "db", tuning=RocksTuning(max_open_files=300))
    _write(store, {b"k": b"v"})
    assert "max_open_files=300" in _newest_options(store)
    assert store.get(b"k") == b"v"
    store.close()
