"""The local embedding model: pinned, hash-checked files, meaning, batching, thread safety."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

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
