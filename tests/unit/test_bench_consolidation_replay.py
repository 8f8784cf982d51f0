"""The in-process planner replay of ``memorose bench consolidation`` (hashing vectors: no
model needed): it must report where model time goes and compare the merge-vector policies."""

from __future__ import annotations

from benchmarks.consolidation import synthetic_events
from benchmarks.consolidation_replay import agreement, replay
from memorose.config import ConsolidationSettings

#: Hashing cosines are lower than the model's: a lower merge threshold makes the log merge.
MERGING = ConsolidationSettings(merge_threshold=0.5)


def test_replay_reports_model_sites_and_merged_vector_fidelity() -> None:
    events = synthetic_events(300)
    embed = replay(events, "embed", embedder_name="hashing", settings=MERGING)
    mean = replay(events, "mean", embedder_name="hashing", settings=MERGING)
    assert embed["outcomes"].get("merge", 0) > 0  # the log merges, so the policies differ
    assert (
        embed["model_sites"]["merges"]["texts"] == embed["outcomes"]["merge"] - embed["merges_reusing_a_part"]
    )
    assert "merges" not in mean["model_sites"] and mean["merges_by_mean"] > 0
    facts = embed["model_sites"]["facts"]
    assert facts["sent"] < facts["texts"] <= len(events)  # repeated statements sent once
    assert embed["merged_vector_fidelity"]["min"] > 0.999  # embedded: exact
    assert 0 < mean["merged_vector_fidelity"]["mean"] < 1.0  # means: close, not exact
    assert 0.5 < agreement(embed.pop("_decisions"), mean.pop("_decisions")) <= 1.0
