"""The second-stage ranking features, each on a tiny hand-made candidate set."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

from memorose.retrieval.expansion import expansion_weights, feedback_terms
from memorose.retrieval.query import analyze_query
from memorose.retrieval.rerank import (
    Candidate,
    CorpusStats,
    RankWeights,
    bm25_scores,
    context_scores,
    episode_scores,
    episodes,
    rank,
)

T0 = datetime(2023, 5, 8, 13, 0, tzinfo=UTC).timestamp()
OFF = RankWeights(cosine=0, context=0, episode=0, time=0, dated=0, speaker=0, feedback=0)


def cand(n: int, content: str, at: float, speaker: str = "", stream: str = "chat") -> Candidate:
    result = {"id": f"m{n}", "content": content, "metadata": {"speaker": speaker} if speaker else {}}
    return Candidate(("m", f"m{n}"), result, stream, at)


def ids(ranked: list[Candidate]) -> list[str]:
    return [c.result["id"] for c in ranked]


def stats_for(cands: list[Candidate], docs: int | None = None) -> CorpusStats:
    freq: dict[str, int] = {}
    for c in cands:
        for t in c.terms:
            freq[t] = freq.get(t, 0) + 1
    return CorpusStats(docs or len(cands), freq)


def test_bm25_uses_the_tenants_document_frequencies() -> None:
    cands = [cand(1, "Caroline: I like tea", T0), cand(2, "Melanie: the pottery class was fun", T0 + 1)]
    # "carolin" appears in every document of this tenant: it must count for almost nothing.
    common = bm25_scores(
        cands, ["carolin", "potteri"], CorpusStats(10, {"carolin": 10, "potteri": 1}), 1.2, 0.75
    )
    rare = bm25_scores(
        cands, ["carolin", "potteri"], CorpusStats(10, {"carolin": 1, "potteri": 1}), 1.2, 0.75
    )
    assert common[1] > common[0]
    assert rare[0] > common[0]


def test_a_reply_is_found_through_the_turn_it_answers() -> None:
    question = cand(1, "Maria: How did the kids like the military memorial trip?", T0)
    reply = cand(2, "John: They were awestruck and humbled.", T0 + 1)
    other = cand(3, "John: My kids like pizza on Fridays.", T0 + 86400)
    question.neighbours, reply.neighbours = [(reply.key, 1)], [(question.key, -1)]
    cands = [question, reply, other]
    q = analyze_query("How did John's kids react at the military memorial?", T0)
    without = rank(list(cands), q, stats_for(cands), None, OFF)
    assert ids(without)[-1] == "m2"  # shares no word with the query
    with_context = rank(
        list(cands), q, stats_for(cands), None, RankWeights(**{**OFF.__dict__, "context": 0.8})
    )
    assert ids(with_context).index("m2") < ids(with_context).index("m3")


def test_episode_lifts_turns_of_the_session_that_matches() -> None:
    a = cand(1, "Jon: my dance studio opening is next week", T0)
    b = cand(2, "Jon: we need mirrors for the studio", T0 + 5)
    c = cand(3, "Jon: I bought mirrors for the bathroom", T0 + 10 * 86400)
    q = analyze_query("What did Jon buy for his dance studio, mirrors?", T0)
    ranked = rank([a, b, c], q, stats_for([a, b, c]), None, RankWeights(**{**OFF.__dict__, "episode": 1.0}))
    assert ids(ranked).index("m2") < ids(ranked).index("m3")


def test_time_named_in_the_query_prefers_memories_from_then() -> None:
    may = cand(1, "Gina: I opened the store", datetime(2023, 5, 3, tzinfo=UTC).timestamp())
    july = cand(2, "Gina: I opened the store", datetime(2023, 7, 20, tzinfo=UTC).timestamp())
    q = analyze_query("What did Gina open in July 2023?", T0)
    ranked = rank([may, july], q, stats_for([may, july]), None, RankWeights(**{**OFF.__dict__, "time": 0.5}))
    assert ids(ranked) == ["m2", "m1"]
    assert ranked[0].features["time"] == 1.0 and ranked[1].features["time"] < 0.01


def test_speaker_named_in_the_query_wins_ties() -> None:
    a = cand(1, "I started painting landscapes", T0, speaker="Caroline")
    b = cand(2, "I started painting landscapes", T0 + 1, speaker="Melanie")
    q = analyze_query("What did Melanie start painting?", T0)
    assert ids(rank([a, b], q, stats_for([a, b]), None, OFF))[0] == "m1"  # tie: older first
    boosted = rank([a, b], q, stats_for([a, b]), None, RankWeights(**{**OFF.__dict__, "speaker": 0.2}))
    assert ids(boosted)[0] == "m2"


def test_when_questions_prefer_dated_statements() -> None:
    a = cand(1, "Caroline: the support group was so powerful", T0)
    b = cand(2, "Caroline: I went to the support group yesterday", T0 + 1)
    q = analyze_query("When did Caroline go to the support group?", T0)
    ranked = rank([a, b], q, stats_for([a, b]), None, RankWeights(**{**OFF.__dict__, "dated": 0.5}))
    assert ids(ranked)[0] == "m2"


def test_feedback_terms_come_from_the_best_matches() -> None:
    cands = [
        cand(1, "Melanie: the concert by Matt Patterson was amazing", T0),
        cand(2, "Melanie: Matt Patterson sang my favourite song", T0 + 1),
        cand(3, "Caroline: I adopted a cat", T0 + 2),
    ]
    q = analyze_query("Which concert did Melanie enjoy?", T0)
    ranked = rank(cands, q, stats_for(cands), None, OFF)
    extra = feedback_terms(ranked, q.terms, 3, n_docs=2, n_terms=3)
    assert "patterson" in extra and "matt" in extra
    assert "concert" not in extra  # already in the query
    # Terms present in most of the tenant are not worth adding.
    weights = expansion_weights(["patterson", "matt"], CorpusStats(100, {"patterson": 2, "matt": 60}), 0.3)
    assert weights == {"patterson": 0.3}


def test_feedback_ignores_candidates_that_do_not_match_the_query() -> None:
    cands = [cand(1, "Alice lives in Paris", T0), cand(2, "The quarterly review moved", T0 + 1)]
    q = analyze_query("router firmware", T0)
    ranked = rank(cands, q, stats_for(cands), None, RankWeights(**{**OFF.__dict__, "episode": 0.3}))
    assert feedback_terms(ranked, q.terms, 2, n_docs=2, n_terms=5) == []


def test_cosine_weight_follows_the_embedder() -> None:
    from memorose.retrieval.rerank import default_cosine_weight

    assert default_cosine_weight("local:all-MiniLM-L6-v2-int8:384") == 1.0
    assert default_cosine_weight("gemini:gemini-embedding-001:768") == 1.0
    assert default_cosine_weight("hashing-v1-384") == 0.0


# -- the vectorised features give exactly the plain per-candidate formulas -----------------------
def _plain_bm25(
    cands: list[Candidate],
    terms: list[str],
    stats: CorpusStats,
    k1: float,
    b: float,
    weights: dict[str, float],
) -> list[float]:
    lengths = [c.length for c in cands]
    avg_len = sum(lengths) / len(lengths)
    n = max(stats.docs, len(cands))
    out = []
    for c in cands:
        norm = k1 * (1 - b + b * c.length / avg_len)
        score = 0.0
        for t in terms:
            tf = c.terms.get(t, 0)
            if tf:
                df = min(n, max(stats.doc_freq.get(t, 0), sum(1 for d in cands if t in d.terms)))
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5)) * weights.get(t, 1.0)
                score += idf * tf * (k1 + 1) / (tf + norm)
        out.append(score)
    return out


def _plain_context(cands: list[Candidate], base: list[float], after: float) -> list[float]:
    by_key = {c.key: base[i] for i, c in enumerate(cands)}
    out = []
    for c in cands:
        best = 0.0
        for key, distance in c.neighbours:
            match = by_key.get(key, 0.0)
            if match:
                best = max(best, (1.0 if distance < 0 else after) * 0.5 ** (abs(distance) - 1) * match)
        out.append(best)
    return out


def _plain_episode(episode_of: list[int], base: list[float], decay: float) -> list[float]:
    out = []
    for i, episode in enumerate(episode_of):
        others = sorted((base[j] for j, e in enumerate(episode_of) if e == episode and j != i), reverse=True)
        out.append(sum(v * decay**rank for rank, v in enumerate(others[:5])))
    return out


def test_vectorised_features_equal_the_plain_formulas_bit_for_bit() -> None:
    rng = random.Random(5)
    vocabulary = [
        "tea",
        "pottery",
        "class",
        "kids",
        "memorial",
        "trip",
        "yoga",
        "invoice",
        "car",
        "highway",
        "report",
        "dinner",
    ]
    for _ in range(40):
        cands = [
            cand(
                i,
                " ".join(rng.choices(vocabulary, k=rng.randint(1, 12))),
                T0 + rng.choice([0, 60, 4000]) * i,
                stream=rng.choice(["a", "b"]),
            )
            for i in range(rng.randint(1, 60))
        ]
        for c in cands:
            c.neighbours = [
                (rng.choice(cands).key, rng.choice([-2, -1, 1, 2])) for _ in range(rng.randint(0, 4))
            ]
        terms = rng.sample([*vocabulary, "absent"], k=rng.randint(1, 8))
        terms += terms[:1]  # a repeated term scores twice
        stats = CorpusStats(rng.randint(0, 200), {t: rng.randint(0, 50) for t in vocabulary})
        weights = {t: rng.random() for t in terms[::2]}
        scores = bm25_scores(cands, terms, stats, 1.2, 0.3, weights)
        assert scores == _plain_bm25(cands, terms, stats, 1.2, 0.3, weights)
        base = [rng.choice([0.0, rng.random()]) for _ in cands]
        assert context_scores(cands, base, 0.5) == _plain_context(cands, base, 0.5)
        episode_of = episodes(cands)
        assert episode_scores(episode_of, base, 0.5) == _plain_episode(episode_of, base, 0.5)
