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


def test_a_batch_searches_candidates_once_and_embeds_its_merges_together() -> None:
    from memorose.models import Memory

    embedder, source = _CountingEmbedder(), _FixedCandidates()
    settings = ConsolidationSettings(merge_threshold=0.3, reinforce_threshold=0.99)
    planner = ConsolidationPlanner(embedder, settings, candidates=source)
    old = [
        Event("t", "s", "a", 1, "Bob likes jazz music", 1.0, 1.0),
        Event("t", "s", "b", 2, "Carol likes green tea", 1.0, 1.0),
    ]
    source.memories = [Memory.from_dict(op["memory"]) for op in planner.plan("t", old, 1.0).ops]
    embedder.calls.clear()
    source.batches = 0
    new = [
        Event("t", "s", "c", 3, "Bob likes blues music", 2.0, 2.0),
        Event("t", "s", "d", 4, "Carol likes black tea", 2.0, 2.0),
    ]
    plan = planner.plan("t", new, 2.0)
    merges = [op for op in plan.ops if op["op"] == "merge"]
    assert [op["content"] for op in merges] == [
        "Bob likes jazz music Bob likes blues music",
        "Carol likes green tea Carol likes black tea",
    ]
    # One search for the batch; one model call for its facts, one for both merged texts.
    assert source.batches == 1
    assert embedder.calls == [[e.content for e in new], [op["content"] for op in merges]]
    for op in merges:  # each merge carries the vector of its own merged text
        assert op["embedding"] == embedder.embed([op["content"]])[0].astype("<f4").tobytes()
