"""An acknowledged event is found by retrieve even when the indexer commits it between the
query's Tantivy search and its scan of the unindexed tail (seen once on a follower)."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import NodeStarter


async def test_an_event_committed_during_a_query_is_still_found(start: NodeStarter) -> None:
    node, api = await start(consolidation={"interval_secs": 3600})
    indexer = node.service.indexer
    indexer.cycle = lambda: False  # type: ignore[method-assign]  # the indexer thread idles
    await api.ingest("acme", "The router firmware needs an update", event_id="firmware")
    assert indexer.indexed_seq("acme") == 0, "acknowledged, not indexed yet"
    real_search = indexer.fulltext.search

    def search_then_commit(*args: Any, **kwargs: Any) -> list[tuple[str, str, float]]:
        hits = real_search(*args, **kwargs)  # the searcher of before the commit
        del indexer.cycle  # the indexer thread commits the event now, before the tail is read
        deadline = time.monotonic() + 20
        while indexer.indexed_seq("acme") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        return hits

    indexer.fulltext.search = search_then_commit  # type: ignore[method-assign]
    results = await api.retrieve("acme", "router firmware")
    assert [r["source_event_ids"] for r in results] == [["firmware"]]
