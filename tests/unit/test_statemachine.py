"""The replicated state machine on a real RocksDB: deterministic, idempotent, never raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from memorose import commands
from memorose.statemachine import StateMachine
from memorose.storage.reader import StateReader, hash_key
from memorose.storage.rocks import RocksStore, StorageFailure


@pytest.fixture
def machine(tmp_path: Path) -> StateMachine:
    store = RocksStore(tmp_path / "rocks")
    yield StateMachine(store)
    store.close()


def ev(event_id: str, content: str = "text", stream: str = "s1") -> dict[str, object]:
    return {"stream_id": stream, "event_id": event_id, "content": content, "metadata": {}, "timestamp": 1.0}


def ingest(*events: dict[str, object], tenant: str = "t1") -> bytes:
    return commands.encode(commands.ingest([{"tenant_id": tenant, "events": list(events)}], ingested_at=2.0))


def test_garbage_payloads_become_error_results_not_exceptions(machine: StateMachine) -> None:
    for index, payload in enumerate(
        [b"", b"\x09junk", b"\x01\xc1", b"\x01" + b"\x92\x01\x02", b"\x01\x80"], start=1
    ):
        result = machine.apply(payload, index)
        assert result["ok"] is False
        assert machine.store.applied_index() == index  # the entry is consumed all the same
    # A well-formed command with a missing field is an error too, not a crash.
    bad = commands.encode({"type": commands.CONSOLIDATE, "tenant_id": "t1"})
    assert machine.apply(bad, 6)["ok"] is False
    assert machine.apply(ingest(ev("a")), 7)["ok"] is True


def test_entries_at_or_below_the_applied_index_are_skipped(machine: StateMachine) -> None:
    assert machine.apply(ingest(ev("a"), ev("b")), 1)["ok"]
    assert machine.apply(ingest(ev("c")), 1) == {"ok": True, "skipped": True}
    assert machine.apply(ingest(ev("d")), 0)["skipped"]
    reader = StateReader(machine.store)
    assert [e.event_id for e in reader.events("t1")] == ["a", "b"]
    assert machine.skipped_count == 2 and machine.applied_count == 1


def test_event_ids_are_idempotency_keys_across_and_within_entries(machine: StateMachine) -> None:
    first = machine.apply(ingest(ev("a"), ev("a", "different text")), 1)
    answers = first["requests"][0]
    assert [a["duplicate"] for a in answers] == [False, True]
    assert answers[0]["seq"] == answers[1]["seq"] == 1
    again = machine.apply(ingest(ev("a")), 2)["requests"][0][0]
    assert again == {"event_id": "a", "seq": 1, "duplicate": True}
    reader = StateReader(machine.store)
    assert [e.content for e in reader.events("t1")] == ["text"]
    assert reader.tenant("t1")["events"] == 1  # type: ignore[index]


def test_group_commit_keeps_tenants_apart(machine: StateMachine) -> None:
    payload = commands.encode(
        commands.ingest(
            [{"tenant_id": "t1", "events": [ev("x")]}, {"tenant_id": "t2", "events": [ev("x"), ev("y")]}],
            ingested_at=2.0,
        )
    )
    result = machine.apply(payload, 1)
    assert [len(r) for r in result["requests"]] == [1, 2]
    reader = StateReader(machine.store)
    assert [e.seq for e in reader.events("t2")] == [1, 2]
    assert [e.seq for e in reader.events("t1")] == [1]


def test_consolidation_with_a_stale_cursor_is_rejected(machine: StateMachine) -> None:
    machine.apply(ingest(ev("a"), ev("b")), 1)
    memory = {
        "tenant_id": "t1",
        "memory_id": "m-1",
        "stream_id": "s1",
        "content": "text",
        "embedding": b"\0" * 16,
        "source_event_ids": ["a"],
        "created_at": 3.0,
        "valid_from": 1.0,
    }
    ok = machine.apply(commands.encode(commands.consolidate("t1", 0, 2, [memory], 3.0)), 2)
    assert ok["ok"] and ok["cursor"] == 2
    stale = machine.apply(
        commands.encode(commands.consolidate("t1", 0, 2, [memory | {"memory_id": "m-2"}], 3.0)), 3
    )
    assert stale["ok"] is False and stale["error"]["code"] == "stale_cursor"
    reader = StateReader(machine.store)
    assert [m.memory_id for m in reader.memories("t1")] == ["m-1"]
    assert reader.tenant("t1")["memories"] == 1  # type: ignore[index]


def test_digest_is_a_function_of_replicated_state_only(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        store = RocksStore(tmp_path / name)
        machine = StateMachine(store)
        machine.apply(ingest(ev("a"), ev("b")), 1)
        machine.apply(ingest(ev("c"), tenant="other"), 2)
        digests.append(StateReader(store).tenant_digest("t1"))
        store.close()
    assert digests[0] == digests[1]
    store = RocksStore(tmp_path / "c")
    machine = StateMachine(store)
    machine.apply(ingest(ev("a"), ev("b", "changed")), 1)
    assert StateReader(store).tenant_digest("t1") != digests[0]
    store.close()


def test_a_storage_failure_is_raised_never_recorded_as_applied(tmp_path: Path) -> None:
    """A RocksDB failure says nothing about the command: it must not become an ordinary
    error result that advances the applied index over a write that did not happen (the
    node turns it into a fail-stop, node/raft.py)."""
    store = RocksStore(tmp_path / "db")
    machine = StateMachine(store)
    assert machine.apply(ingest(ev("a")), 1)["ok"]
    store.close()  # the real database now fails every read and write
    with pytest.raises(StorageFailure):
        machine.apply(ingest(ev("b")), 2)
    reopened = RocksStore(tmp_path / "db")
    assert reopened.applied_index() == 1
    assert [e.event_id for e in StateReader(reopened).events("t1")] == ["a"]
    reopened.close()


def test_a_revoked_key_stops_authenticating_on_every_replica(tmp_path: Path) -> None:
    """Revoke is by (tenant, key id): the same entries give the same keys on each replica, a
    key id of another tenant or an unknown id is a not_found result (never an exception)."""
    entries = [
        commands.issue_key("t1", hash_key("mk_one"), "key-1", 1.0),
        commands.issue_key("t1", hash_key("mk_two"), "key-2", 1.0),
        commands.issue_key("t2", hash_key("mk_other"), "key-3", 1.0),
        commands.revoke_key("t1", "key-1"),
        commands.revoke_key("t1", "key-3"),  # t2's key, named through t1
        commands.revoke_key("t1", "key-1"),  # already gone
        {"type": commands.REVOKE_KEY, "tenant_id": "t1"},  # malformed
    ]
    for name in ("a", "b"):
        store = RocksStore(tmp_path / name)
        machine = StateMachine(store)
        results = [machine.apply(commands.encode(c), i) for i, c in enumerate(entries, start=1)]
        assert [r["ok"] for r in results] == [True, True, True, True, False, False, False]
        assert results[4]["error"]["code"] == results[5]["error"]["code"] == "not_found"
        reader = StateReader(store)
        assert reader.api_key("mk_one") is None
        assert reader.api_key("mk_two") is not None and reader.api_key("mk_other") is not None
        assert [k["key_id"] for k in reader.api_keys("t1")] == ["key-2"]
        assert store.applied_index() == len(entries)
        store.close()
