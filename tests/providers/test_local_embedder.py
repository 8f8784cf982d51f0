"""The local embedding model: pinned, hash-checked files, meaning, batching, thread safety."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from memorose.errors import ConfigError
from memorose.providers.embeddings import load_embedder
from memorose.providers.embeddings import local as local_module
from memorose.providers.embeddings.int8_graph import int8_model, keep_weights_int8
from memorose.providers.embeddings.keep_alive import KeptModel
from memorose.providers.embeddings.local import (
    MODEL_FILE,
    MODEL_PACKAGE,
    MODEL_SHA256,
    TOKENIZER_FILE,
    TOKENIZER_PACKAGE,
    LocalEmbedder,
    packaged_file,
)
from memorose.providers.embeddings.word_table import vocabulary_words


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    embedder = load_embedder("local")
    assert isinstance(embedder, LocalEmbedder)
    return embedder


def test_meaning_not_words(local: LocalEmbedder) -> None:
    hike, outdoor, invoice = local.embed(
        ["User loves hiking in the Alps", "outdoor activities", "Invoice 1142 was paid by bank transfer"]
    )
    assert float(hike @ outdoor) > 0.3  # no shared word
    assert float(hike @ outdoor) > float(invoice @ outdoor) + 0.2
    hashing = load_embedder("hashing", dim=384)
    lexical = hashing.embed(["User loves hiking in the Alps", "outdoor activities"])
    assert float(lexical[0] @ lexical[1]) < 0.1  # what the hashing embedder cannot see


@pytest.mark.parametrize("int8_compute", [True, False])
def test_vectors_are_normalised_and_independent_of_batching(int8_compute: bool) -> None:
    """Padding and batch size change nothing (float32 graph) or only the int8 rounding of
    the activations (the default: cosine above 0.999 to the text embedded alone)."""
    local = LocalEmbedder(cache_size=0, int8_compute=int8_compute)  # every text through the model
    texts = ["short", "a much longer sentence about a trip to the mountains with friends", "Alice moved"]
    batch = local.embed(texts)
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for text, row in zip(texts, batch, strict=True):
        alone = local.embed([text])[0]
        assert float(alone @ row) > 0.999 if int8_compute else np.allclose(alone, row, atol=1e-4)
    assert local.embed([]).shape == (0, 384)


def test_cache_skips_the_model_for_texts_seen_before(local: LocalEmbedder) -> None:
    first = local.embed_one("where does Alice live")
    counted = local.texts_embedded
    again = local.embed(["where does Alice live", "where does Alice live", "a new text"])
    assert np.array_equal(again[0], first) and np.array_equal(again[1], first)
    assert local.texts_embedded == counted + 1  # only the new text ran through the model


def test_thread_safe() -> None:
    local = LocalEmbedder(cache_size=0)
    texts = [f"Bob bought {n} apples at the market on day {n}" for n in range(24)]
    expected = local.embed(texts)
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda t: local.embed([t])[0], texts))
    assert np.allclose(np.stack(rows), expected, atol=1e-4)


def test_altered_or_missing_files_are_refused(tmp_path: Path) -> None:
    model = packaged_file(MODEL_PACKAGE, MODEL_FILE)
    tokenizer = packaged_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
    altered = tmp_path / "model.onnx"
    altered.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        LocalEmbedder(model_path=altered, tokenizer_path=tokenizer).embed(["x"])
    with pytest.raises(ConfigError, match="not found"):
        LocalEmbedder(model_path=tmp_path / "absent.onnx", tokenizer_path=tokenizer).load()
    with pytest.raises(ConfigError, match="not installed"):
        packaged_file("memorose-no-such-weights", "x.onnx")


def test_importing_loads_no_model() -> None:
    code = (
        "import sys; import memorose.providers.embeddings.local as m; "
        "e = m.LocalEmbedder(); print('onnxruntime' in sys.modules, 'tokenizers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_exit_gate_waits_for_runs_in_flight_then_refuses_new_ones() -> None:
    """At interpreter exit no model run may be under way (onnxruntime aborted the process)."""
    gate = local_module._ExitGate()
    entered, release = threading.Event(), threading.Event()

    def run() -> None:
        with gate:
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=run)
    worker.start()
    entered.wait(5)
    closer = threading.Thread(target=gate.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waits for the run in flight
    release.set()
    closer.join(5)
    worker.join(5)
    assert not closer.is_alive()
    with pytest.raises(RuntimeError, match="shutting down"), gate:
        pass


def test_int8_rewrite_keeps_the_weights_and_the_vectors() -> None:
    """The in-memory rewrite turns every dequantised weight of the pinned model into int8
    operators and leaves the vectors where the float32 graph puts them."""
    import onnx

    model_bytes = packaged_file(MODEL_PACKAGE, MODEL_FILE).read_bytes()
    rewritten, count = keep_weights_int8(model_bytes)
    graph = onnx.load_from_string(rewritten).graph
    ops = [n.op_type for n in graph.node]
    assert count == 38 and ops.count("MatMulNBits") == 36  # 6 layers x 6 products, 2 tables
    sizes = {onnx.TensorProto.FLOAT: 0, onnx.TensorProto.INT8: 0, onnx.TensorProto.UINT8: 0}
    for initializer in graph.initializer:
        sizes[initializer.data_type] = sizes.get(initializer.data_type, 0) + int(np.prod(initializer.dims))
    assert sizes[onnx.TensorProto.INT8] + sizes[onnx.TensorProto.UINT8] > 22_000_000  # the weights, 8-bit
    assert sizes[onnx.TensorProto.FLOAT] < 500_000  # scales, biases and norms only
    texts = [
        "User loves hiking in the Alps",
        "Alice moved to Berlin last month",
        "What exercises does she do?",
    ]
    exact = LocalEmbedder(cache_size=0, int8_compute=False).embed(texts)
    int8 = LocalEmbedder(cache_size=0).embed(texts)
    cosines = (exact * int8).sum(axis=1)
    assert cosines.min() > 0.99 and not np.array_equal(exact, int8)  # the rewrite ran, same space


def test_int8_rewrite_leaves_other_graphs_alone() -> None:
    """A model without the Cast/Mul dequantisation pattern comes back byte for byte."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    plain = helper.make_model(graph).SerializeToString()
    assert keep_weights_int8(plain) == (plain, 0)


def test_int8_model_is_cached_verified_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    source = packaged_file(MODEL_PACKAGE, MODEL_FILE)
    first = int8_model(source, MODEL_SHA256, tmp_path)
    assert isinstance(first, Path) and first.parent == tmp_path
    written = first.read_bytes()
    assert int8_model(source, MODEL_SHA256, tmp_path) == first  # found, not rewritten
    first.write_bytes(written[:-1] + b"\0")  # a damaged cache is rebuilt, never loaded
    assert int8_model(source, MODEL_SHA256, tmp_path) == first and first.read_bytes() == written
    unwritable = tmp_path / "file-not-dir"
    unwritable.write_text("x")
    in_memory = int8_model(source, MODEL_SHA256, unwritable)
    assert in_memory == written  # no cache: the same rewrite, in memory


def test_kept_model_is_released_when_idle_and_loaded_again() -> None:
    kept: KeptModel[object] = KeptModel(object, keep_alive=60.0)
    with kept.use() as first:
        assert not kept.release_if_idle(time.monotonic() + 120)  # in use: kept
    assert not kept.release_if_idle()  # used just now
    assert kept.release_if_idle(time.monotonic() + 120) and not kept.loaded
    with kept.use() as second:
        assert second is not first
    assert kept.loads == 2


def test_local_model_released_after_keep_alive_then_reloaded(tmp_path: Path) -> None:
    local = LocalEmbedder(cache_size=0, keep_alive_secs=0.3, cache_dir=tmp_path)
    before = local.embed(["Alice moved to Berlin"])
    assert local.loaded
    deadline = time.monotonic() + 10
    while local.loaded and time.monotonic() < deadline:  # the releasing thread's work
        time.sleep(0.05)
    assert not local.loaded
    assert np.allclose(local.embed(["Alice moved to Berlin"]), before, atol=1e-6)
    assert local.loads == 2  # what memorose_embedder_model_loads_total reports


def test_word_table_gives_the_models_word_vectors_without_running_it(tmp_path: Path) -> None:
    builder = LocalEmbedder(cache_size=0, cache_dir=tmp_path)
    builder.build_word_table(limit=400)  # the first 400 whole words of the vocabulary
    local = LocalEmbedder(cache_size=0, cache_dir=tmp_path)
    table = local.word_table()
    assert table is not None and len(table.index) == 400
    words = [*sorted(table.index)[100:105], "kickboxing"]  # the last is not one token: the model
    before = local.texts_embedded
    vectors = local.embed_words(words)
    assert local.texts_embedded == before + 1
    alone = np.stack([local.embed([w])[0] for w in words])
    assert ((vectors * alone).sum(axis=1) > 0.999).all()


def test_query_expansion_reads_the_tables_words_from_it_and_caches_only_the_others(tmp_path: Path) -> None:
    from memorose.retrieval.lexicon import WordVectors

    LocalEmbedder(cache_size=0, cache_dir=tmp_path).build_word_table(limit=400)
    local = LocalEmbedder(cache_size=0, cache_dir=tmp_path)
    table = local.word_table()
    assert table is not None
    kept = sorted(table.index)[100:103]
    asked = [kept[0], "kickboxing", kept[1], kept[2]]  # kickboxing is not in the table
    words = WordVectors(local)
    rows = words.matrix(asked)
    assert len(words) == 1  # only the word the table lacks holds a copy
    # the rows the cache of every word gave before: the provider's vectors, as float16
    assert rows.dtype == np.float16 and np.array_equal(rows, np.asarray(local.embed_words(asked), np.float16))
    assert np.array_equal(words.matrix(kept), table.vectors[table.rows(kept)])
    assert len(words) == 1 and words.matrix([]).shape == (0, local.dim)


def test_a_damaged_or_absent_word_table_is_not_used(tmp_path: Path) -> None:
    assert LocalEmbedder(cache_dir=tmp_path).word_table() is None  # never built
    assert LocalEmbedder().word_table() is None  # no cache dir
    LocalEmbedder(cache_size=0, cache_dir=tmp_path).build_word_table(limit=50)
    vectors_path = next(tmp_path.glob("words-*.npy"))
    data = bytearray(vectors_path.read_bytes())
    data[-1] ^= 0xFF
    vectors_path.write_bytes(bytes(data))
    local = LocalEmbedder(cache_size=0, cache_dir=tmp_path)
    assert local.word_table() is None
    word = vocabulary_words(tokenizer_vocabulary())[0]
    before = local.texts_embedded
    assert np.allclose(np.linalg.norm(local.embed_words([word]), axis=1), 1.0, atol=1e-3)
    assert local.texts_embedded == before + 1  # through the model


def tokenizer_vocabulary() -> dict[str, int]:
    from tokenizers import Tokenizer

    vocab: dict[str, int] = Tokenizer.from_file(
        str(packaged_file(TOKENIZER_PACKAGE, TOKENIZER_FILE))
    ).get_vocab()
    return vocab


def test_prepare_model_command_writes_the_files_once(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "memorose.cli", "--log-level", "WARNING", "prepare-model"]
    first = subprocess.run(
        [*command, "--cache-dir", str(tmp_path), "--limit", "40"], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert "prepared" in first.stdout and len(list(tmp_path.glob("words-*"))) == 3
    assert len(list(tmp_path.glob("model-*int8mm*.onnx"))) == 1
    again = subprocess.run([*command, "--cache-dir", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode == 0 and "already" in again.stdout
