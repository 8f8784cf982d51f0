"""Insight summaries written by the real google-genai client against the local Gemini stub,
with the offline text as the recorded fallback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from memorose.insights.planner import plan_insights
from memorose.insights.projection import project
from memorose.providers.llm.gemini import GeminiLLM
from tests.providers.stub import GeminiStub, Scripted
from tests.unit.test_insights import SETTINGS, Replicas, topic_graph


def is_insight_call(body: dict[str, Any]) -> bool:
    return "summary" in body["generationConfig"]["responseSchema"]["properties"]


def answer(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body["contents"][0]["parts"][0]["text"]
    first = json.loads(prompt.split("\n[1] ", 1)[1].split(") ", 1)[1].splitlines()[0])
    return {"label": "Topic of " + first.split()[0], "summary": "Summary: " + first}


async def plan(replicas: Replicas, llm: GeminiLLM) -> Any:
    reader = replicas.reader
    previous = {r["insight_id"]: r for r in reader.insights("t1")}
    return await asyncio.to_thread(
        plan_insights,
        project(reader, "t1"),
        SETTINGS,
        1_800_000_000.0,
        stored=reader.tenant_or_empty("t1"),
        previous=previous,
        llm=llm,
    )


async def test_gemini_writes_summaries_and_unchanged_communities_are_not_asked_again(
    stub: GeminiStub, tmp_path: Path
) -> None:
    stub.answer = answer
    llm = GeminiLLM(api_key="test-key", base_url=stub.url, max_attempts=1)
    replicas = Replicas(tmp_path)
    try:
        replicas.apply(topic_graph()[0])
        first = await plan(replicas, llm)
        calls = [c for c in stub.calls("generateContent") if is_insight_call(c)]
        assert len(calls) == 3 and first.usage.calls == 3
        config = calls[0]["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        prompt = calls[0]["contents"][0]["parts"][0]["text"]
        assert "Distinctive terms:" in prompt and "(2023-11-1" in prompt  # memories carry their dates
        for record in first.records:
            assert record["synthesis"]["method"] == "gemini:gemini-2.5-flash"
            assert record["summary"].startswith("Summary: Alice")
        replicas.apply(first.command)
        replicas.apply({"type": "delete_memory", "tenant_id": "t1", "memory_id": "garden-3"})
        second = await plan(replicas, llm)
        calls = [c for c in stub.calls("generateContent") if is_insight_call(c)]
        assert len(calls) == 4  # only the garden community changed
        assert second.changed
    finally:
        replicas.close()


async def test_a_failing_gemini_falls_back_to_the_offline_summary_and_says_so(
    stub: GeminiStub, tmp_path: Path
) -> None:
    for _ in range(3):
        stub.queue(
            "generateContent",
            Scripted(500, {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}),
        )
    llm = GeminiLLM(api_key="test-key", base_url=stub.url, max_attempts=1)
    replicas = Replicas(tmp_path)
    try:
        replicas.apply(topic_graph()[0])
        result = await plan(replicas, llm)
        assert result.usage.fallbacks["server_error"] == 3
        for record in result.records:
            assert record["synthesis"] == {
                "method": "offline",
                "fallback": "server_error",
                "failed": "gemini:gemini-2.5-flash",
            }
            assert "memories," in record["summary"]  # the extractive text
        stub.queue("generateContent", Scripted(200, None, raw='{"label": "x"}'))  # no summary
        stub.answer = answer
        retry = await plan(replicas, llm)  # the malformed answer falls back; the others succeed
        methods = sorted(r["synthesis"]["method"] for r in retry.records)
        assert methods == ["gemini:gemini-2.5-flash", "gemini:gemini-2.5-flash", "offline"]
        assert retry.usage.fallbacks["malformed_response"] == 1
    finally:
        replicas.close()
