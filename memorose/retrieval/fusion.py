"""Reciprocal rank fusion: robust to the incomparable scales of cosine and BM25."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

RRF_K = 60.0


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]], weights: Sequence[float] | None = None, k: float = RRF_K
) -> list[tuple[Hashable, float]]:
    """Fuse ranked lists of keys into one list of (key, score), best first."""
    weights = weights or [1.0] * len(rankings)
    scores: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank + 1)
    return sorted(scores.items(), key=lambda item: (-item[1], str(item[0])))
