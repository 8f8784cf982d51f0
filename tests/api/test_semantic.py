"""Meaning, offline, with default settings (the local MiniLM model): the README's example,
a natural correction superseding what it corrects, and scores that mean something."""

from __future__ import annotations

import asyncio

from tests.conftest import Api, NodeStarter, wait_until

QUIET = {"consolidation": {"interval_secs": 3600}}


async def test_readme_example_finds_the_hiking_memory_first(start: NodeStarter) -> None:
    _, api = await start(**QUIET)
    await api.ingest("acme", "User loves hiking in the Alps", event_id="hike")
    await api.ingest("acme", "The quarterly report is due on 30 September", event_id="report")
    await api.ingest("acme", "Invoice 1142 was paid by bank transfer", event_id="invoice")
    await api.consolidate("acme")
    results = await api.retrieve("acme", "outdoor activities")
    assert results, "the hiking memory shares no word with the query: only meaning can find it"
    assert results[0]["source_event_ids"] == ["hike"]
    assert all(r["score"] > 0 for r in results)


async def _current(api: Api, tenant: str) -> list[dict[str, object]]:
    status, body = await api.get(f"/api/v1/memories?tenant_id={tenant}")
    assert status == 200, body
    return [m for m in body["memories"] if m.get("superseded_by") is None]


async def test_a_natural_correction_supersedes_through_the_api(start: NodeStarter) -> None:
    _, api = await start(**QUIET)
    await api.ingest(
        "acme", "Alice lives in Paris, in a flat near the Louvre.", event_id="paris", timestamp=1_700_000_000
    )
    await api.consolidate("acme")
    await api.ingest(
        "acme",
        "Alice moved to Berlin last month and now lives in Kreuzberg.",
        event_id="berlin",
        timestamp=1_731_600_000,
    )
    await api.consolidate("acme")
    results = await api.retrieve("acme", "Where does Alice live?")
    assert results[0]["source_event_ids"] == ["berlin"]
    assert all("paris" not in r["source_event_ids"] for r in results)
    history = await api.retrieve("acme", "Where does Alice live?", enable_arbitration=False)
    assert any("paris" in r["source_event_ids"] for r in history), "the old fact is kept, marked superseded"


async def test_no_relevance_is_not_padded_and_min_score_filters(start: NodeStarter) -> None:
    _, api = await start(**QUIET)
    await api.ingest("acme", "User loves hiking in the Alps", event_id="hike")
    await api.ingest("acme", "Invoice 1142 was paid by bank transfer", event_id="invoice")
    await api.consolidate("acme")
    results = await api.retrieve("acme", "outdoor hobbies", top_k=10)
    assert [r["source_event_ids"] for r in results][:1] == [["hike"]]
    assert all(r["score"] > 0 for r in results)
    best = results[0]["score"]
    assert await api.retrieve("acme", "outdoor hobbies", min_score=best + 0.001) == []
    status, body = await api.post(
        "/api/v1/retrieve", {"tenant_id": "acme", "query": "x", "min_score": "high"}
    )
    assert status == 400, body


async def _first_hit(api: Api, tenant: str, question: str, expected: list[str]) -> list[str]:
    """The first result's sources, once the tenant's lexicon is built (in the background, on
    its first query) or after a bounded number of tries."""
    results: list[dict[str, object]] = []
    for _ in range(60):
        results = await api.retrieve(tenant, question, top_k=3, passages=False)
        if results and results[0]["source_event_ids"] == expected:
            break
        await asyncio.sleep(0.05)
    return list(results[0]["source_event_ids"]) if results else []  # type: ignore[call-overload]


JOHN = [
    "John: Thanks, Maria, the invoice was paid yesterday.",
    "John: I started a weekend yoga class with a colleague.",
    "John: Did you finish the quarterly report, Maria?",
    "John: My colleague was late again this morning.",
    "John: Sure, see you at eight for dinner.",
    "John: The highway was closed, so I took the train.",
    "Maria: My car broke down again on the highway.",
    "Maria: The report is finished, I sent it to John.",
    "John: I cleaned the kitchen and folded the laundry.",
    "John: Has anyone seen my keys? I had them at the office.",
    "Maria: Dinner at eight then, John.",
    "John: The train was late too.",
]


async def test_a_question_finds_the_statement_that_shares_no_word_with_it(start: NodeStarter) -> None:
    """Query expansion by meaning (retrieval/lexicon.py) is on by default: the tenant's
    lexicon gets built and "exercises" reaches "yoga" (tests/unit/test_lexicon.py tests the
    expansion itself)."""
    node, api = await start(**QUIET)
    for n, line in enumerate(JOHN):
        await api.ingest("acme", line, event_id=f"e{n}", timestamp=1_700_000_000 + 60 * n)
    await api.consolidate("acme")
    question = "What exercises has John done?"
    lexicon = node.service.retriever.lexicon
    assert lexicon is not None

    async def built() -> bool:
        await api.retrieve("acme", question)
        return lexicon.builds >= 1

    await wait_until(built, what="the tenant's lexicon")
    assert await _first_hit(api, "acme", question, ["e1"]) == ["e1"]
    assert "yoga" in lexicon.expansion("acme", "What exercises has John done?").weights
