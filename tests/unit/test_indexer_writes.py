"""The indexer's write path on a real RocksDB and Tantivy: new events are added without a
delete-by-term, yet no event is ever indexed twice (a tenant rebuild that ran ahead of the
change feed, a restart whose saved position is behind what Tantivy committed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memorose import commands
from memorose.storage.fulltext import KIND_EVENT
from tests.unit.state_node import StateNode


class Node(StateNode):
    def ingest(self, *contents: str, tenant: str = "t1") -> None:
        events = [
            {
                "stream_id": "s",
                "event_id": f"e{self.index + 1}-{i}",
                "content": c,
                "metadata": {},
                "timestamp": 1.0,
            }
            for i, c in enumerate(contents)
        ]
        self.apply(commands.ingest([{"tenant_id": tenant, "events": events}], 2.0))

    def hits(self, word: str, tenant: str = "t1") -> list[str]:
        return [ref for _, ref, _ in self.indexer.fulltext.search(tenant, [word], kind=KIND_EVENT, limit=100)]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.close()


def test_new_events_are_searchable_once_each(node: Node) -> None:
    node.ingest("kiwi one", "kiwi two")
    node.ingest("kiwi three")
    node.indexer.catch_up()
    assert sorted(node.hits("kiwi")) == ["1", "2", "3"]
    assert node.indexer.fulltext.num_docs() == 3


def test_a_tenant_rebuild_ahead_of_the_feed_does_not_double_events(node: Node) -> None:
    node.ingest("mango one", "mango two")
    # The rebuild reads RocksDB (both events) while the feed still holds their change.
    node.indexer.request_rebuild("t1")
    node.indexer._rebuild_requested_tenants()
    node.ingest("mango three")
    node.indexer.catch_up()
    assert sorted(node.hits("mango")) == ["1", "2", "3"]
    assert node.indexer.fulltext.num_docs() == 3


def test_a_restart_behind_what_tantivy_committed_does_not_double_events(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.ingest("pear one", "pear two")
    # A crash after Tantivy's commit and before the state file and the consumed feed were
    # written: the saved position stays behind and the change is still in the feed.
    with monkeypatch.context() as patch:
        patch.setattr(node.indexer, "_save_state", lambda: None)
        patch.setattr(node.store, "delete_range", lambda start, end: None)
        assert node.indexer.cycle()
    node.restart_indexer()  # replays the change over the committed documents
    node.ingest("pear three")
    node.indexer.catch_up()
    assert sorted(node.hits("pear")) == ["1", "2", "3"]
    assert node.indexer.fulltext.num_docs() == 3


def test_an_idle_indexer_wakes_when_the_state_machine_writes_a_change(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No polling: with the idle look pushed out to a minute, only the state machine's
    wake-up (``on_changes``) can make the new events searchable within the deadline."""
    import time

    from memorose.storage import indexer as indexer_module

    monkeypatch.setattr(indexer_module, "IDLE_LOOK_S", 60.0)
    node.machine.on_changes = node.indexer.changes_written
    node.indexer.start()
    for round_ in range(3):  # each time the indexer is asleep again when the change comes
        deadline = time.monotonic() + 1.0
        while node.indexer._changed.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)  # until it has looked and gone back to sleep
        node.ingest(f"pelican number{round_}")
        deadline = time.monotonic() + 20.0
        while node.indexer.position < node.index and time.monotonic() < deadline:
            time.sleep(0.01)
        assert node.indexer.position == node.index, "the indexer slept through the change"
        assert len(node.hits(f"number{round_}")) == 1
