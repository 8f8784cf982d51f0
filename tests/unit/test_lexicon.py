"""Query expansion by meaning over a tenant's words (memorose/retrieval/lexicon.py), with the
real local model."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from memorose import priority
from memorose.config import RetrievalSettings
from memorose.providers.embeddings import Embedder, load_embedder
from memorose.retrieval import lexicon as lexicon_module
from memorose.retrieval.lexicon import Lexicon, LexiconSettings, content_words, tenant_lexicon

JOHN = [
    "John: I started a weekend yoga class with a colleague.",
    "John: Thanks, Maria, the invoice was paid yesterday.",
    "Maria: My car broke down again on the highway.",
    "John: Did you finish the quarterly report?",
    "Maria: The invoice for the car repair came today.",
    "John: The report is late again, sorry.",
    "Maria: Dinner at eight?",
    "John: Sure, see you at eight.",
    "Maria: The highway was closed this morning.",
    "John: My colleague was late too.",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder("local")


def lexicon_over(
    embedder: Embedder,
    texts: dict[str, list[str]],
    *,
    background: bool = False,
    sized: bool = False,
    **settings: float,
) -> Lexicon:
    """A lexicon over ``texts`` (changed in place by a test, with ``lex.version``); ``sized``:
    it knows each tenant's size (growth rebuilds, small tenants brought up to date)."""
    version = {t: 1 for t in texts}
    lex = Lexicon(
        embedder,
        lambda tenant: texts.get(tenant, []),
        lambda tenant: version.get(tenant),
        LexiconSettings(**settings),  # type: ignore[arg-type]
        background=background,
        size_of=(lambda tenant: len(texts.get(tenant, []))) if sized else None,
    )
    lex.version = version  # type: ignore[attr-defined]
    return lex


def test_content_words_drop_stopwords_short_words_and_numbers() -> None:
    assert content_words("What exercises has John done in 2023? Yoga, yoga!") == [
        "exercises",
        "john",
        "done",
        "yoga",
    ]


def test_a_query_word_brings_in_the_tenant_word_it_means(embedder: Embedder) -> None:
    lex = lexicon_over(embedder, {"t": JOHN})
    expansion = lex.expansion("t", "What exercises has John done?")
    assert "yoga" in expansion.weights, expansion
    assert 0 < expansion.weights["yoga"] <= LexiconSettings.weight
    assert expansion.doc_freq["yoga"] == 1
    assert not {"invoic", "car", "highway", "report"} & set(expansion.weights)


def test_words_of_other_tenants_never_join(embedder: Embedder) -> None:
    lex = lexicon_over(embedder, {"t": JOHN, "other": ["Bob: I go running every morning."]})
    assert "run" not in lex.expansion("t", "What exercises has John done?").weights
    assert "run" in lex.expansion("other", "What exercise does Bob do?").weights


def test_a_word_common_in_the_tenant_adds_nothing(embedder: Embedder) -> None:
    texts = ["Anna: yoga again today."] * 5 + JOHN
    lex = lexicon_over(embedder, {"t": texts})
    assert "yoga" not in lex.expansion("t", "What exercises has John done?").weights


def test_weight_zero_or_no_content_word_means_no_expansion(embedder: Embedder) -> None:
    assert not lexicon_over(embedder, {"t": JOHN}, weight=0).expansion("t", "exercises").weights
    assert not lexicon_over(embedder, {"t": JOHN}).expansion("t", "what is it?").weights


def test_rebuilt_when_the_tenant_changes_and_least_recent_tenants_go(embedder: Embedder) -> None:
    texts = {"t": list(JOHN), "u": ["Ann: hello"]}
    lex = lexicon_over(embedder, texts, min_rebuild_secs=0, rebuild_cost_factor=0, max_tenants=1)
    assert "kickbox" not in lex.expansion("t", "What sports has John done?").weights
    texts["t"].append("John: I'm doing kickboxing now, it gives me energy.")
    lex.expansion("t", "sports")  # unchanged version: no rebuild
    assert lex.builds == 1
    lex.version["t"] = 2  # type: ignore[attr-defined]
    lex.expansion("t", "sports")
    assert lex.builds == 2
    lex.expansion("u", "greeting")
    assert lex.get("t") is not None and lex.builds == 4, "t was evicted by u, then rebuilt"


def test_the_first_query_of_a_tenant_is_not_kept_waiting(embedder: Embedder) -> None:
    gate = threading.Event()

    def slow_texts(tenant: str) -> list[str]:
        gate.wait(10)
        return JOHN

    lex = Lexicon(embedder, slow_texts, lambda tenant: 1, background=True)
    assert not lex.expansion("t", "What exercises has John done?").weights
    gate.set()
    for _ in range(200):
        if lex.builds:
            break
        threading.Event().wait(0.05)
    assert "yoga" in lex.expansion("t", "What exercises has John done?").weights


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")
def test_background_builds_run_on_a_lowered_thread(embedder: Embedder) -> None:
    process_nice = os.getpriority(os.PRIO_PROCESS, os.getpid())
    seen: list[int | None] = []

    def texts_of(tenant: str) -> list[str]:
        seen.append(priority.thread_nice())
        return JOHN

    lex = Lexicon(embedder, texts_of, lambda tenant: 1, background=True)
    lex.expansion("t", "What exercises has John done?")  # schedules the build
    for _ in range(200):
        if lex.builds:
            break
        threading.Event().wait(0.05)
    assert lex.builds == 1
    assert seen == [min(19, process_nice + priority.BACKGROUND_NICE)]
    assert priority.thread_nice() == process_nice  # the querying thread is untouched


def test_off_for_the_hashing_embedder_unless_asked() -> None:
    hashing = load_embedder("hashing", dim=64)
    assert tenant_lexicon(None, hashing, RetrievalSettings()) is None  # type: ignore[arg-type]
    assert tenant_lexicon(None, hashing, RetrievalSettings(expansion_weight=0.3)) is not None  # type: ignore[arg-type]


def test_refresh_builds_new_tenants_and_rebuilds_only_when_due(embedder: Embedder) -> None:
    lex = lexicon_over(embedder, {"t": JOHN, "u": ["Ann: hello"]}, min_rebuild_secs=3600)
    lex.refresh({"t"})
    assert lex.builds == 1 and lex.get("t") is not None
    lex.version["t"] = 2  # type: ignore[attr-defined]
    lex.refresh({"t", "u"})
    assert lex.builds == 2, "u is new; t changed but was rebuilt less than an hour ago"


def test_a_tenant_that_grew_is_rebuilt_before_the_minimum_interval(embedder: Embedder) -> None:
    texts = {"t": JOHN[:5]}
    lex = lexicon_over(embedder, texts, sized=True, min_rebuild_secs=3600, rebuild_cost_factor=0)
    version = lex.version  # type: ignore[attr-defined]
    lex.refresh({"t"})
    texts["t"] = [*JOHN[:5], "John: a 6th memory"]  # +20 %: above the 10 % growth threshold
    version["t"] = 2
    lex.refresh({"t"})
    assert lex.builds == 2
    version["t"] = 3  # changed, not grown: waits for the hour
    lex.refresh({"t"})
    assert lex.builds == 2


def test_a_small_tenant_is_always_answered_from_a_current_lexicon(embedder: Embedder) -> None:
    """Answers of a small tenant must not depend on when a background build finished."""
    texts = {"t": list(JOHN)}
    lex = lexicon_over(
        embedder, texts, background=True, sized=True, min_rebuild_secs=3600, sync_max_memories=100
    )
    version = lex.version  # type: ignore[attr-defined]
    assert "yoga" in lex.expansion("t", "What exercises has John done?").weights  # built at once
    texts["t"] = [*JOHN, "Bob: I go running every morning."]
    version["t"] = 2
    assert "run" in lex.expansion("t", "What exercise does Bob do?").weights  # rebuilt at once


def test_a_build_that_started_earlier_never_replaces_a_later_one(embedder: Embedder) -> None:
    texts = {"t": JOHN[:3], "u": ["Ann: hello"]}
    version = {"t": 1, "u": 1}
    entered, gate = threading.Event(), threading.Event()

    def texts_of(tenant: str) -> list[str]:
        snapshot = list(texts[tenant])
        if not entered.is_set():  # the first (background) build stalls with the old memories
            entered.set()
            gate.wait(10)
        return snapshot

    lex = Lexicon(embedder, texts_of, lambda tenant: version[tenant], background=True)
    lex.refresh({"t"})
    assert entered.wait(10)
    texts["t"] = list(JOHN)
    version["t"] = 2
    lex._build("t")  # a later build, as a small tenant's query runs it, finishes first
    gate.set()
    lex.refresh({"u"})  # queued behind the stalled build on the one builder thread
    for _ in range(200):
        if lex.get("u") is not None:
            break
        threading.Event().wait(0.05)
    current = lex._tenants["t"]
    assert current.version == 2 and current.docs == len(JOHN)


def test_a_lexicon_remembers_its_query_words_until_it_is_rebuilt(embedder: Embedder) -> None:
    texts = {"t": list(JOHN)}
    lex = lexicon_over(embedder, texts, min_rebuild_secs=0, rebuild_cost_factor=0)
    first = lex.expansion("t", "What exercises has John done?")
    built = lex.get("t")
    assert built is not None and {"exercises", "john", "done"} <= set(built.near)
    assert lex.expansion("t", "Which exercises?").weights.get("yoga") == first.weights["yoga"]
    # A word near nothing is remembered as such, and the answer from memory is the same.
    assert lex.expansion("t", "exercises done").weights == lex.expansion("t", "exercises done").weights
    texts["t"].append("John: I'm doing kickboxing now, it gives me energy.")
    lex.version["t"] = 2  # type: ignore[attr-defined]
    lex.expansion("t", "What sports has John done?")
    rebuilt = lex.get("t")
    assert rebuilt is not None and rebuilt is not built and "kickbox" in rebuilt.stems
    assert set(rebuilt.near) == {"sports", "john", "done"}, "nothing carried over from the old build"


def test_a_lexicon_forgets_its_query_words_past_the_bound(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexicon_module, "MAX_NEAR_WORDS", 3)
    lex = lexicon_over(embedder, {"t": JOHN})
    lex.expansion("t", "exercises colleague invoice")
    built = lex.get("t")
    assert built is not None and len(built.near) == 3
    assert "yoga" in lex.expansion("t", "exercises sports").weights
    assert set(built.near) == {"sports"}, "cleared when full, then the new word"


def test_the_word_matrix_is_float16_and_scores_as_float32_would(embedder: Embedder) -> None:
    """Half the memory of float32, the same closest words and cosines (to 1e-6)."""
    import numpy as np

    lex = lexicon_over(embedder, {"t": JOHN}, threshold=-1.0)  # every close word, not only > .5
    questions = ["What exercises has John done?", "Which vehicle broke?", "late paperwork"]
    for question in questions:
        lex.expansion("t", question)
    built = lex.get("t")
    assert built is not None and built.matrix.dtype == np.float16
    wide = built.matrix.astype(np.float32)
    for word, near in built.near.items():
        reference = wide @ lex.words.matrix([word])[0].astype(np.float32)
        rows, cosines = [j for j, _ in near], [c for _, c in near]
        assert len(rows) == LexiconSettings.per_word
        assert np.allclose(cosines, np.sort(reference)[::-1][: len(rows)], atol=1e-6), word  # the best
        assert np.allclose(cosines, reference[rows], atol=1e-6), word  # each with its own cosine


def test_the_process_wide_word_cache_is_bounded(embedder: Embedder) -> None:
    import numpy as np

    words = lexicon_module.WordVectors(embedder, max_words=4)
    first = words.matrix(["yoga", "invoice", "highway"])
    assert len(words) == 3
    again = words.matrix(["kickboxing", "report", "yoga", "colleague"])  # yoga is cached, 3 new
    assert len(words) == 4, "the oldest words went"
    assert np.array_equal(again[2], first[0])
    reference = lexicon_module.WordVectors(embedder).matrix(["yoga", "invoice", "kickboxing", "colleague"])
    assert np.array_equal(words.matrix(["yoga", "invoice", "kickboxing", "colleague"]), reference)
    assert len(words) == 4 and words.matrix([]).shape == (0, embedder.dim)
