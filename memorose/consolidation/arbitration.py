"""Offline arbitration: what a new fact does to the memories it resembles.

Heuristics, in order (thresholds from ``[consolidation]``, docs/consolidation.md):

1. reinforce: the fact repeats a memory (same normalised text, or cosine >=
   ``reinforce_threshold``, no change cue, and no specific value - a number or a name -
   that the memory lacks: a sentence model puts paraphrases at .93-1.0);
2. supersede: the fact corrects or changes a state ("moved to", "no longer", "actually",
   or the same kind of state - where someone lives, works, whom they are married to - with
   another value) of a memory about the same subject, similar enough
   (>= ``supersede_threshold``);
3. merge: a closely related memory (cosine >= ``merge_threshold``) about the same subject
   absorbs the fact while the result stays under ``max_merged_chars``;
4. create: anything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from memorose.consolidation.text import (
    ACK_WORDS,
    TIME_WORDS,
    content_terms,
    normalise,
    sentences,
    split_speaker,
)
from memorose.providers.llm.base import Candidate, Decision
from memorose.retrieval.text import STOPWORDS

_CHANGE_RE = re.compile(
    r"\b(?:moved|moving|relocated|relocating) to\b|\bno longer\b|\bnot any ?more\b|"
    r"\bactually\b|\bcorrection\b|\bi was wrong\b|\bnow (?:lives?|works?|uses?|prefers?)\b|"
    r"\bis now\b|\bswitched (?:to|jobs)\b|\bnew job\b|\bquit (?:my|his|her|their) job\b|"
    r"\bthese days\b|\bsold (?:the|my|his|her|their)\b",
    re.IGNORECASE,
)
_STATE_FAMILIES = {
    "residence": re.compile(
        r"\b(?:lives?|living|lived) in\b|\b(?:moved|moving|relocated) to\b|\bbased in\b|\bresides?\b|"
        r"\bhome is\b",
        re.IGNORECASE,
    ),
    "work": re.compile(
        r"\bworks? (?:at|for|as)\b|\bworking (?:at|for|as)\b|\bemployed\b|\bjob (?:at|as)\b|\bhired\b|"
        r"\bnew job\b",
        re.IGNORECASE,
    ),
    "relationship": re.compile(
        r"\bmarried\b|\bengaged\b|\bdivorced\b|\bbroke up\b|\bsplit up\b|\bseparated\b|\bdating\b|"
        r"\b(?:girl|boy)friend\b",
        re.IGNORECASE,
    ),
    "preference": re.compile(r"\bfavou?rite\b|\bprefers?\b", re.IGNORECASE),
}
_SUBJECT_SKIP = frozenset({"I", "The", "A", "An", "My", "We", "Our", "It", "This", "That", "He", "She"})
_MARKERS = frozenset({"actually", "correction", "also", "now", "but", "update"}) | TIME_WORDS
_FIRST_PERSON_RE = re.compile(r"\b(?:I|I'm|I've|I'd|my|me|mine)\b")
#: A name followed by "!" or "," is usually someone addressed ("Thanks, Mel!"), not the subject.
_VOCATIVE_RE = re.compile(r"^\s*[!,]")
_CAPITAL_RE = re.compile(r"\b[A-ZÀ-ÖØ-Þ][\w\-]+\b")  # names may be accented (Tomás)
#: "now" in a short statement marks a new state ("Olga lives in Warsaw now").
_NOW_RE = re.compile(r"\bnow\b", re.IGNORECASE)
_SPECIFIC_RE = re.compile(r"\b(?:\d+(?:[:.,/-]\d+)*|[A-ZÀ-ÖØ-Þ][\w\-]+)")
#: Two statements with no named subject are about the same thing from this cosine on.
UNNAMED_SAME = 0.8
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:.,/\-]*[A-Za-z0-9]|[A-Za-z0-9]")


@dataclass
class Thresholds:
    reinforce: float = 0.92
    merge: float = 0.9
    supersede: float = 0.3
    max_merged_chars: int = 600


def subject(fact: str) -> str | None:
    """Who or what the fact is about: the speaker when they speak about themselves, else the
    first proper name that is not merely addressed."""
    speaker, body = split_speaker(fact)
    if speaker and _FIRST_PERSON_RE.search(body):
        return speaker.lower()
    for match in _CAPITAL_RE.finditer(body):
        word, lower = match.group(0), match.group(0).lower()
        if word in _SUBJECT_SKIP or lower in STOPWORDS or lower in ACK_WORDS | _MARKERS:
            continue
        if _VOCATIVE_RE.match(body[match.end() :]):
            continue
        return lower
    return speaker.lower() if speaker else None


def _is_short(text: str) -> bool:
    """One plain statement (an extracted fact), not a chatty multi-sentence turn."""
    _, body = split_speaker(text)
    return len(sentences(body)) == 1 and len(body.split()) <= 25


def is_question(fact: str) -> bool:
    """A question states nothing: it may repeat a memory but never replaces one."""
    _, body = split_speaker(fact)
    return body.rstrip().endswith("?")


def state_family(fact: str) -> str | None:
    for family, pattern in _STATE_FAMILIES.items():
        if pattern.search(fact):
            return family
    return None


def is_change(fact: str) -> bool:
    return bool(_CHANGE_RE.search(fact)) or (_is_short(fact) and bool(_NOW_RE.search(fact)))


def specifics(text: str) -> set[str]:
    """Numbers and capitalised words (names, places, dates), lowercased: the values a
    restatement keeps and an update changes."""
    return {w.lower() for w in _SPECIFIC_RE.findall(text)}


def adds_specifics(fact: str, memory: str) -> bool:
    """The fact names a value (number, name) the memory does not: not a mere restatement."""
    known = {w.lower() for w in _WORD_RE.findall(memory)} | specifics(memory)
    return bool(specifics(fact) - known)


def same_subject(fact: str, memory: str, similarity: float) -> bool:
    """Both about the same someone; two statements with no named subject ("The standup is
    at 9:30") count as one subject only when they say nearly the same thing."""
    about = subject(fact)
    if about is None:
        return subject(memory) is None and similarity >= UNNAMED_SAME
    return subject(memory) == about


def merged_text(old: str, new: str) -> str:
    """One text carrying both: the newer one alone when it says everything the old one did."""
    if content_terms(old) <= content_terms(new):
        return new
    old_speaker, _ = split_speaker(old)
    new_speaker, new_body = split_speaker(new)
    addition = new_body if old_speaker and old_speaker == new_speaker else new
    return f"{old.rstrip()} {addition}"


def arbitrate(fact: str, candidates: Sequence[Candidate], limits: Thresholds) -> Decision:
    """The offline decision for ``fact`` against candidates (best first)."""
    if not candidates:
        return Decision("create", None, "novel: no similar memory")
    terms = content_terms(fact)
    change, family = is_change(fact), state_family(fact)
    for c in candidates:
        if normalise(c.content) == normalise(fact):
            return Decision("reinforce", c.memory_id, "same statement repeated")
        if c.similarity >= limits.reinforce and not change and not adds_specifics(fact, c.content):
            return Decision("reinforce", c.memory_id, f"restatement (cosine {c.similarity:.2f})")
    if is_question(fact):
        return Decision("create", None, "a question: stored as said")
    about = subject(fact)
    for c in candidates:
        related = max(c.similarity, c.overlap)
        if related < limits.supersede or not same_subject(fact, c.content, c.similarity):
            continue
        who = about or "it"
        same_state = family is not None and state_family(c.content) == family and not is_question(c.content)
        if (
            same_state
            and (change or (_is_short(fact) and _is_short(c.content)))
            and not terms <= content_terms(c.content)
        ):
            return Decision("supersede", c.memory_id, f"{family} of {who} changed")
        if change and related >= 2 * limits.supersede and not terms <= content_terms(c.content):
            return Decision("supersede", c.memory_id, f"correction about {who}")
    best = candidates[0]
    if best.similarity >= limits.merge and (about is None or subject(best.content) == about):
        text = merged_text(best.content, fact)
        if len(text) <= limits.max_merged_chars:
            return Decision("merge", best.memory_id, f"related (cosine {best.similarity:.2f})", text)
    return Decision("create", None, "novel: related memories differ")
