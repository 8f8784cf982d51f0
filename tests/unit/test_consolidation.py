"""Offline consolidation stages and the state machine's pipeline commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memorose import commands
from memorose.config import ConsolidationSettings
from memorose.consolidation.arbitration import Thresholds, arbitrate
from memorose.consolidation.compression import compress
from memorose.consolidation.entropy import char_entropy, noise_reason
from memorose.consolidation.forgetting import DAY, effective_importance, should_archive
from memorose.consolidation.planner import ConsolidationPlanner
from memorose.models import Event
from memorose.providers.embeddings.hashing import HashingEmbedder
from memorose.providers.llm.base import Candidate
from memorose.statemachine import StateMachine
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("ok", "acknowledgement"),
        ("Thanks so much!!", "acknowledgement"),
        ("hmmmmm", "repetitive"),
        ("aaaaaaaaaaa", "repetitive"),
        ("!!!!!!!!", "repetitive"),
        ("no no no no no", "acknowledgement"),
        ("blah blah blah blah", "repetitive"),
        ("Caroline: haha yeah", "acknowledgement"),
        ("xkcd", "low_entropy"),
        ("Alice lives in Paris", None),
        ("Melanie: I ran a charity race for mental health last Saturday", None),
    ],
)
def test_noise_reasons(text: str, reason: str | None) -> None:
    assert noise_reason(text, None, 2.5) == reason


def test_char_entropy_separates_noise_from_sentences() -> None:
    assert char_entropy("aaaa") == 0.0
    assert char_entropy("ok") == 1.0
    assert char_entropy("Alice lives in Paris") > 3.0


def test_compression_keeps_speaker_names_numbers_and_dates() -> None:
    text = "Oh wow, haha! I met Jon at the Berlin office on 12 March 2024 to sign the $4,500 lease. Thanks!"
    assert compress(text, {"speaker": "Gina"}) == f"Gina: {text}"  # short: kept as written
    assert compress(text, {"speaker": "Gina"}, max_chars=90) == (
        "Gina: I met Jon at the Berlin office on 12 March 2024 to sign the $4,500 lease."
    )
    long = " ".join(["We talked for a while about this and that and many other things."] * 10)
    long += " Jon's flight to Oslo leaves on 3 May at 7:40."
    short = compress(long, None, max_chars=120)
    assert len(short) <= 120 and "Oslo" in short and "3 May" in short
    assert compress("Haha, yeah!", {"speaker": "Gina"}) == ""


def decide(fact: str, *candidates: tuple[str, float]) -> tuple[str, str | None]:
    cands = [Candidate(f"m{i}", text, sim, 0.0) for i, (text, sim) in enumerate(candidates)]
    decision = arbitrate(fact, cands, Thresholds())
    return decision.action, decision.target


def test_offline_arbitration() -> None:
    assert decide("Bob likes jazz", ("bob likes jazz!", 0.5)) == ("reinforce", "m0")
    assert decide("Bob likes jazz", ("Bob likes jazz a lot", 0.95)) == ("reinforce", "m0")
    assert decide("Alice moved to Berlin", ("Alice lives in Paris", 0.35)) == ("supersede", "m0")
    assert decide("Alice works at Google", ("Alice works at Apple", 0.6)) == ("supersede", "m0")
    assert decide("Actually, Bob is allergic to peanuts", ("Bob is allergic to cats", 0.65)) == (
        "supersede",
        "m0",
    )
    assert decide("Alice moved to Berlin", ("Bob lives in Paris", 0.6)) == ("create", None)
    assert decide("Bob likes jazz and blues", ("Bob likes jazz", 0.91)) == ("merge", "m0")
    assert decide("Bob likes jazz", ("Carol paints", 0.1)) == ("create", None)
    assert decide("Bob likes jazz") == ("create", None)
    # Conversational chatter must not replace anything (LoCoMo false positives).
    assert decide(
        "Caroline: Mel! Any more paintings coming up?", ("Caroline: Thanks, Mel! Glad you like it.", 0.5)
    ) == (
        "create",
        None,
    )
    assert decide(
        "Jon: Thanks, Gina! I won't quit, even when it's hard.",
        ("Jon: Thanks for askin', Gina! Losing my job was hard, but I'm livin' my dreams now.", 0.5),
    ) == ("create", None)
    assert decide("Joanna: So what's your favorite game?", ("Joanna: My favorite game is Zelda", 0.6)) == (
        "create",
        None,
    )


def test_forgetting_math() -> None:
    memory = {"importance": 0.8, "created_at": 0.0, "access_count": 0}
    assert effective_importance(memory, 30 * DAY, 30) == pytest.approx(0.4)
    used = {**memory, "access_count": 5, "last_accessed_at": 10 * DAY}
    assert effective_importance(used, 30 * DAY, 30) > 0.6
    assert should_archive(memory, 120 * DAY, 30, 0.1)
    assert not should_archive({**memory, "superseded_by": "m-2", "valid_to": 5.0}, 120 * DAY, 30, 0.1)


def _event(seq: int, content: str, ts: float) -> dict[str, Any]:
    return {"stream_id": "s", "event_id": f"e{seq}", "content": content, "metadata": {}, "timestamp": ts}


def test_replicas_apply_the_same_pipeline_commands_identically(tmp_path: Path) -> None:
    """Plan once on a 'leader', apply the same bytes on two stores: identical digests."""
    texts = [
        "Alice lives in Paris",
        "ok",
        "Alice moved to Berlin",
        "Alice moved to Berlin",
        "Bob plays chess",
    ]
    planner = ConsolidationPlanner(HashingEmbedder(64), ConsolidationSettings())
    events = [Event("t", "s", f"e{i}", i + 1, t, 1000.0 + i, 2000.0) for i, t in enumerate(texts)]
    plan = planner.plan("t", events, 3000.0)
    assert plan.rejected == {"e1": "acknowledgement"}
    assert dict(plan.outcomes) == {"create": 2, "supersede": 1, "reinforce": 1}
    payloads = [
        commands.encode(
            commands.ingest(
                [{"tenant_id": "t", "events": [_event(i, t, 1000.0 + i) for i, t in enumerate(texts)]}],
                2000.0,
            )
        ),
        commands.encode(
            commands.consolidate(
                "t", 0, 5, plan.memories, 3000.0, ops=plan.ops, edges=plan.edges, rejected=plan.rejected
            )
        ),
    ]
    stores = [RocksStore(tmp_path / name) for name in ("a", "b")]
    results = []
    for store in stores:
        machine = StateMachine(store)
        results.append([machine.apply(p, i + 1) for i, p in enumerate(payloads)])
        berlin = next(m for m in StateReader(store).memories("t") if "Berlin" in m.content)
        touch = commands.touch("t", 4000.0, [[berlin.memory_id, 2]], [], 0.1)
        results[-1].append(machine.apply(commands.encode(touch), 3))
        forget = commands.forget(
            "t", 4000.0 + 400 * DAY, [m.memory_id for m in StateReader(store).memories("t")], 30.0, 0.1
        )
        results[-1].append(machine.apply(commands.encode(forget), 4))
        # A malformed op is an error result, never an exception; the index still advances.
        bad = commands.consolidate("t", 5, 5, [], 5000.0, ops=[{"op": "merge"}])
        results[-1].append(machine.apply(commands.encode(bad), 5))
        assert machine.apply(payloads[0], 1) == {"ok": True, "skipped": True}
        assert store.applied_index() == 5
    assert results[0][:2] == results[1][:2]
    assert results[0][1]["outcomes"] == {"create": 2, "supersede": 1, "reinforce": 1}
    assert len(results[0][3]["archived"]) == 2  # Berlin and Bob; Paris is history, not forgotten
    assert results[0][4]["ok"] is False
    digests = {StateReader(s).tenant_digest("t") for s in stores}
    assert len(digests) == 1
    reader = StateReader(stores[0])
    paris = next(m for m in reader.memories("t") if "Paris" in m.content)
    assert paris.valid_to == 1002.0 and paris.superseded_by and not paris.archived
    assert [h["action"] for h in reader.history("t", paris.memory_id)] == ["created", "superseded"]
    assert any("supersedes" in e.kinds for e in reader.edges_of("t", paris.superseded_by))
    for store in stores:
        store.close()


class _CountingEmbedder(HashingEmbedder):
    """Hashing vectors, counting the model calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> Any:
        self.calls.append(list(texts))
        return super().embed(texts)


class _FixedCandidates:
    def __init__(self) -> None:
        self.memories: list[Any] = []
        self.batches = 0

    def similar(self, tenant_id: str, text: str, vector: Any, k: int) -> list[Any]:
        return list(self.memories)

    def similar_batch(self, tenant_id: str, texts: list[str], vectors: Any, k: int) -> list[list[Any]]:
        self.batches += 1
        return [list(self.memories) for _ in texts]


_OLD_FACTS = ["Bob likes jazz music", "Carol likes green tea"]
_NEW_FACTS = ["Bob likes blues music", "Carol likes black tea"]
_MERGED = ["Bob likes jazz music Bob likes blues music", "Carol likes green tea Carol likes black tea"]


def _merging_planner(
    merge_vectors: str,
) -> tuple[ConsolidationPlanner, _CountingEmbedder, _FixedCandidates]:
    """A planner whose source holds the memories of ``_OLD_FACTS`` and that merges
    ``_NEW_FACTS`` into them (low merge threshold), its model calls cleared."""
    from memorose.models import Memory

    embedder, source = _CountingEmbedder(), _FixedCandidates()
    settings = ConsolidationSettings(
        merge_threshold=0.3, reinforce_threshold=0.99, merge_vectors=merge_vectors
    )
    planner = ConsolidationPlanner(embedder, settings, candidates=source)
    old = [Event("t", "s", f"o{i}", i, text, 1.0, 1.0) for i, text in enumerate(_OLD_FACTS, 1)]
    source.memories = [Memory.from_dict(op["memory"]) for op in planner.plan("t", old, 1.0).ops]
    embedder.calls.clear()
    source.batches = 0
    return planner, embedder, source


def _new_events() -> list[Event]:
    return [Event("t", "s", f"n{i}", 10 + i, text, 2.0, 2.0) for i, text in enumerate(_NEW_FACTS)]


def test_with_merge_vectors_embed_a_batch_embeds_its_merges_together() -> None:
    planner, embedder, source = _merging_planner("embed")
    plan = planner.plan("t", _new_events(), 2.0)
    merges = [op for op in plan.ops if op["op"] == "merge"]
    assert [op["content"] for op in merges] == _MERGED
    # One search for the batch; one model call for its facts, one for both merged texts.
    assert source.batches == 1
    assert embedder.calls == [_NEW_FACTS, _MERGED]
    for op in merges:  # each merge carries the vector of its own merged text
        assert op["embedding"] == embedder.embed([op["content"]])[0].astype("<f4").tobytes()
    sites = planner.embedding_ledger.snapshot()["sites"]
    assert sites["merges"]["texts"] == 2 and sites["facts"]["texts"] == 4  # the old facts too


def test_by_default_a_merged_memory_gets_the_weighted_mean_of_its_parts_without_a_model_call() -> None:
    import numpy as np

    planner, embedder, _ = _merging_planner("mean")
    plan = planner.plan("t", _new_events(), 2.0)
    merges = [op for op in plan.ops if op["op"] == "merge"]
    assert [op["content"] for op in merges] == _MERGED
    assert embedder.calls == [_NEW_FACTS]  # each fact once; no merged text through the model
    for op, old, new in zip(merges, _OLD_FACTS, _NEW_FACTS, strict=True):
        parts = embedder.embed([old, new])
        expected = len(old.split()) * parts[0] + len(new.split()) * parts[1]
        expected /= np.linalg.norm(expected)
        vector = np.frombuffer(op["embedding"], "<f4")
        assert np.allclose(vector, expected, atol=1e-6)
        assert op["embedding_dim"] == 384 and op["embedding_model"] == embedder.model
    ledger = planner.embedding_ledger.snapshot()
    assert ledger["merge_means"] == 2 and "merges" not in ledger["sites"]


def test_a_merge_into_a_memory_without_a_vector_of_this_model_still_embeds_the_merged_text() -> None:
    """Only an LLM arbiter merges into such a memory (offline merges need a cosine); its
    merged text must then go through the model, not take the new part's vector alone."""
    import numpy as np

    from memorose.consolidation.planner import _Working

    planner, embedder, _ = _merging_planner("mean")
    fact_vector = embedder.embed([_NEW_FACTS[0]])[0]
    stale = _Working("m1", _OLD_FACTS[0], np.zeros(0, np.float32))
    vector, embed_later = planner._merged_vector(stale, _NEW_FACTS[0], fact_vector, _MERGED[0])
    assert embed_later and np.array_equal(vector, fact_vector)
    # An LLM's rewrite is not old + new: the mean of the parts may not be where it lies.
    current = _Working("m1", _OLD_FACTS[0], embedder.embed([_OLD_FACTS[0]])[0])
    rewrite = "Bob likes jazz and blues"
    assert planner._merged_vector(current, _NEW_FACTS[0], fact_vector, rewrite)[1]
    assert not planner._merged_vector(current, _NEW_FACTS[0], fact_vector, _MERGED[0])[1]
    # The newer fact saying everything: its own vector, nothing to embed.
    current = _Working("m1", _OLD_FACTS[0], embedder.embed([_OLD_FACTS[0]])[0])
    vector, embed_later = planner._merged_vector(current, _NEW_FACTS[0], fact_vector, _NEW_FACTS[0])
    assert not embed_later and vector is fact_vector


def test_a_batch_sends_each_distinct_text_to_the_model_once() -> None:
    embedder = _CountingEmbedder()
    planner = ConsolidationPlanner(embedder, ConsolidationSettings(mode="verbatim"))
    texts = ["Alice lives in Paris", "Bob likes jazz", "Alice lives in Paris", "Alice lives in Paris"]
    events = [Event("t", "s", f"e{i}", i, text, 1.0, 1.0) for i, text in enumerate(texts, 1)]
    plan = planner.plan("t", events, 1.0)
    assert embedder.calls == [["Alice lives in Paris", "Bob likes jazz"]]
    vectors = [m["embedding"] for m in plan.memories]
    assert len(vectors) == 4 and vectors[0] == vectors[2] == vectors[3] != vectors[1]
    assert planner.embedding_ledger.snapshot()["sites"]["facts"] == {
        "calls": 1,
        "texts": 4,
        "sent": 2,
        "seconds": planner.embedding_ledger.snapshot()["sites"]["facts"]["seconds"],
    }


def test_prefetch_embeds_a_coming_batch_so_planning_it_needs_no_model_call() -> None:
    """The worker embeds the next batch's facts while the current one is planned: with a
    caching embedder the plan then finds every fact's vector ready."""
    from memorose.providers.embeddings.local import LocalEmbedder

    local = LocalEmbedder(cache_size=64)
    planner = ConsolidationPlanner(local, ConsolidationSettings())
    events = [
        Event("t", "s", f"p{i}", i, text, 1.0, 1.0) for i, text in enumerate(_NEW_FACTS + _OLD_FACTS, 1)
    ]
    assert planner.prefetch(events) == 4
    embedded = local.texts_embedded
    plan = planner.plan("t", events, 1.0)
    assert local.texts_embedded == embedded and plan.ops  # every fact came from the cache
    sites = planner.embedding_ledger.snapshot()["sites"]
    assert sites["prefetch"]["texts"] == 4 and sites["facts"]["texts"] == 4


def test_prefetch_does_nothing_without_a_cache_to_fill() -> None:
    embedder = _CountingEmbedder()
    planner = ConsolidationPlanner(embedder, ConsolidationSettings())
    assert planner.prefetch(_new_events()) == 0 and embedder.calls == []
