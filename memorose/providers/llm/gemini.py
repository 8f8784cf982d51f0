"""Gemini (google-genai) for fact extraction and arbitration, with structured output.

Extraction sends several events per call (``events_per_call``) and asks for JSON matching
a schema; arbitration sends one fact with its candidate memories. Calls are retried with
backoff that honours rate limits (``providers.retry``). An answer that does not match the
schema raises ``LLMError("malformed_response")``; the caller falls back to the offline
path and records it. Token counts come from the response's usage metadata.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from memorose.models import Event, iso
from memorose.providers.llm.base import ACTIONS, Candidate, Decision, LLMError, LLMProvider, Usage
from memorose.providers.retry import Backoff, genai_client

MAX_FACT_CHARS = 2000

EXTRACT_INSTRUCTIONS = """You turn the raw events of an AI agent's log into long-term memory facts.
For every event, write the concise, self-contained facts worth remembering, each one sentence.
Keep names, numbers and dates. Name the speaker instead of "I" or "me". Resolve relative dates
("yesterday", "last week") against the event's time when you can. Greetings, filler and
acknowledgements have no facts: give them an empty list. Never invent anything.
Answer with one entry per event, using the event's number as "index"."""

ARBITRATE_INSTRUCTIONS = """You maintain an agent's long-term memory. Decide what a NEW fact does to
the EXISTING memories most similar to it:
- "reinforce": it repeats an existing memory (target_id = that memory); nothing new is stored.
- "merge": it adds detail to one existing memory (target_id); merged_content is one text with both.
- "supersede": it corrects or replaces an existing memory whose statement is no longer true
  (a move, a new job, "actually", "no longer"); target_id = the outdated memory.
- "create": it is new information.
Give a short reason."""


INSIGHT_INSTRUCTIONS = """You distil a group of related long-term memories of one user or agent
into one insight an assistant can use, e.g. "Alice is planning a move to Berlin: apartment hunting,
a visa appointment on 3 May, a job offer at Siemens". Memories are listed most central first, each
with its date. Write a label of 2 to 6 words and a summary of 1 to 3 sentences (at most 80 words).
Keep names, numbers and dates. Use only what the memories say; never invent anything."""


class _Insight(BaseModel):
    label: str
    summary: str


class _EventFacts(BaseModel):
    index: int
    facts: list[str]


class _Extraction(BaseModel):
    events: list[_EventFacts]


class _Decision(BaseModel):
    action: str
    target_id: str | None = None
    merged_content: str | None = None
    reason: str = ""


class GeminiLLM(LLMProvider):
    def __init__(
        self,
        api_key: str,
        model: str = "gemini-2.5-flash",
        base_url: str | None = None,
        events_per_call: int = 20,
        max_attempts: int = 5,
        backoff_initial_secs: float = 1.0,
        backoff_max_secs: float = 30.0,
        timeout_secs: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client, self._types = genai_client(api_key, base_url, timeout_secs)
        self.model = model
        self.name = f"gemini:{model}"
        self.events_per_call = events_per_call
        self._backoff = Backoff(max_attempts, backoff_initial_secs, backoff_max_secs, sleep)

    # -- calls ---------------------------------------------------------------------------
    def _generate(self, instructions: str, prompt: str, schema: type[BaseModel], usage: Usage) -> str:
        config = self._types.GenerateContentConfig(
            system_instruction=instructions,
            response_mime_type="application/json",
            response_schema=schema,
            temperature=0.0,
        )

        def call() -> Any:
            usage.calls += 1
            return self.client.models.generate_content(model=self.model, contents=prompt, config=config)

        response = self._backoff.run(call, usage)
        meta = response.usage_metadata
        if meta is not None:
            usage.input_tokens += meta.prompt_token_count or 0
            usage.output_tokens += meta.candidates_token_count or 0
        try:
            text = response.text
        except (ValueError, AttributeError) as exc:
            raise LLMError("malformed_response", f"no text in the answer: {exc}") from exc
        if not text:
            raise LLMError("malformed_response", "empty answer")
        return str(text)

    @staticmethod
    def _parse(schema: type[BaseModel], text: str) -> Any:
        try:
            return schema.model_validate_json(text)
        except ValidationError as exc:
            raise LLMError("malformed_response", f"answer does not match the schema: {exc}") from exc

    # -- extraction ----------------------------------------------------------------------
    def extract_facts(self, events: Sequence[Event], usage: Usage) -> list[list[str] | None]:
        lines = []
        for i, event in enumerate(events):
            speaker = event.metadata.get("speaker") if isinstance(event.metadata, dict) else None
            who = f", speaker {speaker}" if isinstance(speaker, str) else ""
            lines.append(f"[{i}] ({iso(event.timestamp)}{who}) {json.dumps(event.content)}")
        text = self._generate(EXTRACT_INSTRUCTIONS, "Events:\n" + "\n".join(lines), _Extraction, usage)
        answer = self._parse(_Extraction, text)
        out: list[list[str] | None] = [None] * len(events)
        for item in answer.events:
            if 0 <= item.index < len(events):
                facts = [f.strip()[:MAX_FACT_CHARS] for f in item.facts if f.strip()]
                out[item.index] = (out[item.index] or []) + facts
        return out

    # -- arbitration ---------------------------------------------------------------------
    def arbitrate(self, fact: str, candidates: Sequence[Candidate], usage: Usage) -> Decision:
        existing = "\n".join(
            f"- id {c.memory_id} (similarity {c.similarity:.2f}): {json.dumps(c.content)}" for c in candidates
        )
        prompt = f"NEW fact: {json.dumps(fact)}\nEXISTING memories:\n{existing or '(none)'}"
        answer = self._parse(_Decision, self._generate(ARBITRATE_INSTRUCTIONS, prompt, _Decision, usage))
        ids = {c.memory_id for c in candidates}
        if answer.action not in ACTIONS:
            raise LLMError("malformed_response", f"unknown action {answer.action!r}")
        if answer.action != "create" and answer.target_id not in ids:
            raise LLMError("malformed_response", f"target {answer.target_id!r} is not a candidate")
        content = (answer.merged_content or "").strip()[:MAX_FACT_CHARS] or None
        target = answer.target_id if answer.action != "create" else None
        return Decision(answer.action, target, (answer.reason or "llm decision")[:300], content)  # type: ignore[arg-type]

    # -- insights ------------------------------------------------------------------------
    def summarize_community(
        self, memories: Sequence[tuple[str, float]], terms: Sequence[str], usage: Usage
    ) -> tuple[str, str]:
        lines = [f"[{i}] ({iso(ts)}) {json.dumps(text)}" for i, (text, ts) in enumerate(memories, 1)]
        prompt = f"Distinctive terms: {', '.join(terms)}\nMemories:\n" + "\n".join(lines)
        answer = self._parse(_Insight, self._generate(INSIGHT_INSTRUCTIONS, prompt, _Insight, usage))
        if not answer.summary.strip():
            raise LLMError("malformed_response", "empty summary")
        return answer.label.strip(), answer.summary.strip()
