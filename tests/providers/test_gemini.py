"""The real google-genai client (and an httpx OpenAI-compatible client) against a local stub.

Provider calls are synchronous (they run on the leader's planning thread), so the tests
make them through ``asyncio.to_thread`` while the stub answers on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest

from memorose.config import ConsolidationSettings
from memorose.consolidation.planner import ConsolidationPlanner
from memorose.models import Event
from memorose.providers.embeddings.gemini import GeminiEmbedder
from memorose.providers.embeddings.hashing import HashingEmbedder
from memorose.providers.embeddings.openai_compat import OpenAICompatEmbedder
from memorose.providers.llm.base import Candidate, LLMError, Usage
from memorose.providers.llm.gemini import GeminiLLM
from tests.conftest import NodeStarter
from tests.providers.stub import GeminiStub, Scripted, rate_limited


def event(i: int, content: str, speaker: str = "Caroline") -> Event:
    return Event("t", "s", f"e{i}", i, content, 1_683_554_160.0 + i, time.time(), {"speaker": speaker})


class Sleeps:
    """Records backoff sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def is_extraction(body: dict[str, Any]) -> bool:
    return "events" in body["generationConfig"]["responseSchema"]["properties"]


def extraction_calls(stub: GeminiStub) -> list[dict[str, Any]]:
    return [c for c in stub.calls("generateContent") if is_extraction(c)]


def gemini(stub: GeminiStub, **kw: Any) -> GeminiLLM:
    options: dict[str, Any] = {"backoff_initial_secs": 5.0, "sleep": Sleeps(), **kw}
    return GeminiLLM(api_key="test-key", base_url=stub.url, **options)


async def test_extraction_batches_events_and_uses_structured_output(stub: GeminiStub) -> None:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if not is_extraction(body):
            return {"action": "create", "reason": "different facts"}
        prompt = body["contents"][0]["parts"][0]["text"]
        items = []
        for line in prompt.splitlines()[1:]:
            index = int(line[1 : line.index("]")])
            said = json.loads(line[line.index(") ") + 2 :])
            facts = [] if "haha" in said or "weather" in said else [f"Caroline said: {said}."]
            items.append({"index": index, "facts": facts})
        return {"events": items}

    stub.answer = answer
    llm = gemini(stub, events_per_call=2)
    events = [event(0, "I went to the support group"), event(1, "haha"), event(2, "I paint sunsets")]
    usage = Usage()
    first = await asyncio.to_thread(llm.extract_facts, events[:2], usage)
    second = await asyncio.to_thread(llm.extract_facts, events[2:], usage)
    assert first == [["Caroline said: I went to the support group."], []]
    assert second == [["Caroline said: I paint sunsets."]]
    [call, _] = extraction_calls(stub)
    config = call["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["properties"]["events"]["type"] == "ARRAY"
    assert "speaker Caroline" in call["contents"][0]["parts"][0]["text"]
    assert (usage.calls, usage.input_tokens, usage.output_tokens) == (2, 200, 40)

    # The planner filters noise first, then chunks by events_per_call: 3 events -> 2 calls.
    planner = ConsolidationPlanner(HashingEmbedder(64), ConsolidationSettings(), llm=llm)
    events.append(event(3, "Such lovely weather in the city"))
    plan = await asyncio.to_thread(planner.plan, "t", events, 1_700_000_000.0)
    assert len(extraction_calls(stub)) == 4
    assert plan.rejected == {"e1": "acknowledgement", "e3": "no_facts"}
    contents = [op["memory"]["content"] for op in plan.ops if op["op"] == "create"]
    assert contents == ["Caroline said: I went to the support group.", "Caroline said: I paint sunsets."]
    assert all(op["memory"]["pipeline"]["extractor"] == "gemini:gemini-2.5-flash" for op in plan.ops)


async def test_arbitration_answer_is_validated(stub: GeminiStub) -> None:
    llm = gemini(stub)
    candidates = [Candidate("m-paris", "Alice lives in Paris", 0.4, 0.33)]
    stub.answer = lambda body: {"action": "supersede", "target_id": "m-paris", "reason": "Alice moved"}
    decision = await asyncio.to_thread(llm.arbitrate, "Alice moved to Berlin", candidates, Usage())
    assert (decision.action, decision.target, decision.reason) == ("supersede", "m-paris", "Alice moved")
    prompt = stub.calls("generateContent")[0]["contents"][0]["parts"][0]["text"]
    assert "m-paris" in prompt and "Alice moved to Berlin" in prompt

    stub.answer = lambda body: {"action": "merge", "target_id": "m-elsewhere", "reason": "?"}
    with pytest.raises(LLMError) as err:
        await asyncio.to_thread(llm.arbitrate, "Alice moved to Berlin", candidates, Usage())
    assert err.value.kind == "malformed_response"


async def test_a_429_is_retried_after_the_delay_the_server_asked_for(stub: GeminiStub) -> None:
    sleeps = Sleeps()
    llm = gemini(stub, sleep=sleeps)
    stub.queue("generateContent", rate_limited("0.25s"))
    stub.queue("generateContent", rate_limited("0.5s"))
    stub.answer = lambda body: {"events": [{"index": 0, "facts": ["Caroline paints sunsets."]}]}
    usage = Usage()
    facts = await asyncio.to_thread(llm.extract_facts, [event(0, "I paint sunsets")], usage)
    assert facts == [["Caroline paints sunsets."]]
    assert sleeps.delays == [0.25, 0.5]  # the RetryInfo hints, not the 5 s backoff
    assert usage.retries == 2 and usage.errors["rate_limited"] == 2 and usage.calls == 3

    sleeps.delays.clear()
    for _ in range(5):
        stub.queue(
            "generateContent",
            Scripted(503, {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}),
        )
    with pytest.raises(LLMError) as err:
        await asyncio.to_thread(llm.extract_facts, [event(0, "I paint sunsets")], Usage())
    assert err.value.kind == "server_error"
    assert len(sleeps.delays) == 4 and all(0 < d <= 30 for d in sleeps.delays)

    stub.queue(
        "generateContent",
        Scripted(400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}),
    )
    before = len(stub.calls("generateContent"))
    with pytest.raises(LLMError) as err:
        await asyncio.to_thread(llm.extract_facts, [event(0, "x y z")], Usage())
    assert err.value.kind == "client_error" and len(stub.calls("generateContent")) == before + 1


async def test_a_malformed_answer_falls_back_to_offline_and_is_recorded(stub: GeminiStub) -> None:
    llm = gemini(stub)
    stub.queue("generateContent", Scripted(200, None, raw="Sure! Here are the facts: Caroline paints."))
    planner = ConsolidationPlanner(HashingEmbedder(64), ConsolidationSettings(), llm=llm)
    events = [event(0, "Oh wow! I painted a lake sunrise last week for my mom.")]
    plan = await asyncio.to_thread(planner.plan, "t", events, 1_700_000_000.0)
    [op] = plan.ops
    memory = op["memory"]
    assert memory["content"] == "Caroline: Oh wow! I painted a lake sunrise last week for my mom."
    assert memory["pipeline"]["extractor"] == "offline"
    assert memory["pipeline"]["fallback"] == "malformed_response"
    assert plan.usage.fallbacks["malformed_response"] == 1


async def test_gemini_embeddings_are_batched_and_normalised(stub: GeminiStub) -> None:
    embedder = GeminiEmbedder(api_key="test-key", base_url=stub.url, dim=32, batch_size=2, sleep=Sleeps())
    stub.queue("batchEmbedContents", rate_limited("0.01s"))
    vectors = await asyncio.to_thread(embedder.embed, ["alpha", "beta", "gamma"])
    assert vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    calls = stub.calls("batchEmbedContents")
    assert [len(c["requests"]) for c in calls] == [2, 2, 1]  # one 429 retried, then 2 + 1
    assert calls[0]["requests"][0]["outputDimensionality"] == 32
    again = await asyncio.to_thread(embedder.embed, ["gamma"])
    assert np.allclose(again[0], vectors[2], atol=1e-6)
    assert embedder.model == "gemini:gemini-embedding-001:32"


async def test_openai_compatible_embeddings(stub: GeminiStub) -> None:
    embedder = OpenAICompatEmbedder(base_url=stub.url + "/v1", model="nomic-embed-text", dim=16, batch_size=2)
    vectors = await asyncio.to_thread(embedder.embed, ["one", "two", "three"])
    assert vectors.shape == (3, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert [c["input"] for m, c in stub.requests if m == "openai.embeddings"] == [["one", "two"], ["three"]]
    single = await asyncio.to_thread(embedder.embed, ["two"])
    assert np.allclose(single[0], vectors[1], atol=1e-6)  # rows come back in index order
    wrong = OpenAICompatEmbedder(base_url=stub.url + "/v1", model="nomic-embed-text", dim=768)
    with pytest.raises(ValueError, match="embedding_dim"):
        await asyncio.to_thread(wrong.embed, ["one"])


async def test_a_node_consolidates_through_gemini(start: NodeStarter, stub: GeminiStub) -> None:
    stub.answer = lambda body: (
        {"events": [{"index": 0, "facts": ["Caroline attended an LGBTQ support group on 7 May 2023."]}]}
        if is_extraction(body)
        else {"action": "create", "reason": "new"}
    )
    _, api = await start(
        consolidation={"interval_secs": 3600},
        llm={"provider": "gemini", "api_key": "test-key", "base_url": stub.url, "backoff_initial_secs": 0.01},
    )
    await api.ingest("acme", "Caroline: I went to a LGBTQ support group yesterday", event_id="D1:3")
    await api.consolidate("acme")
    _, body = await api.get("/api/v1/memories?tenant_id=acme")
    [memory] = body["memories"]
    assert memory["content"] == "Caroline attended an LGBTQ support group on 7 May 2023."
    assert memory["pipeline"]["extractor"] == "gemini:gemini-2.5-flash"
    assert memory["embedding_model"] == "gemini:gemini-embedding-001:384"
    results = await api.retrieve("acme", "support group")
    assert results[0]["source_event_ids"] == ["D1:3"]
    _, text = await api.get("/metrics")
    assert 'memorose_llm_calls_total{provider="gemini:gemini-2.5-flash"} 1.0' in text
    assert 'memorose_llm_tokens_total{direction="input",provider="gemini:gemini-2.5-flash"} 100.0' in text
