"""The Raft port's guards (node/transport_guard.py) on a real PySyncObj object with the
node's own transport class, on 127.0.0.x sockets. Each guard's test fails on PySyncObj's
plain transport: it never closes these connections (the waits run out)."""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from pydantic import ValidationError
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.encryptor import getEncryptor
from pysyncobj.node import TCPNode
from pysyncobj.poller import PollPoller

from memorose.config import RaftSettings
from node.pysyncobj_fixes import GuardStats, TransportLimits, _batch_entries
from node.raft import SNAPSHOT_CHUNK_BYTES, SyncingTransport, transport_limits
from node.runner import free_port
from node.testing import raft_attack
from node.testing.network import encode_frame
from node.transport_guard import GuardedConnection

pytestmark = pytest.mark.timeout(60)

PASSWORD = "guard-test-password"
#: A partner that never runs: the identity the test claims in a handshake. Its address
#: sorts after the node's, so the node waits for it to connect instead of dialling it.
PARTNER = "127.0.0.9:1"
FAST = TransportLimits(handshake_timeout=0.5, frame_read_timeout=1.0, max_connections_per_ip=2)


class GuardedNode(SyncObj):  # type: ignore[misc]
    """A PySyncObj object on the node's transport (guard and all), ticking by itself."""

    def __init__(self, limits: TransportLimits) -> None:
        self.transport_limits = limits
        self.address = f"127.0.0.1:{free_port()}"
        # PySyncObj's own idle timeout (only checked on socket events) far away
        conf = SyncObjConf(password=PASSWORD, bindAddress=self.address, connectionTimeout=60)
        super().__init__(TCPNode(self.address), [TCPNode(PARTNER)], conf, transportClass=SyncingTransport)

    def sync_journal(self) -> bool:  # SyncingTransport's hook; no journal here
        return False

    @property
    def transport(self) -> SyncingTransport:
        return self._SyncObj__transport

    def stats(self) -> dict[str, int]:
        return dict(self.transport.guard_stats.as_dict())


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def started(limits: TransportLimits) -> Iterator[GuardedNode]:
    node = GuardedNode(limits)
    try:
        wait_until(lambda: node.transport.ready)
        yield node
    finally:
        node.destroy()


@pytest.fixture
def fast_node() -> Iterator[GuardedNode]:
    yield from started(FAST)


@pytest.fixture
def patient_node() -> Iterator[GuardedNode]:
    """Deadlines far away: only the guard under test can close a connection."""
    yield from started(replace(FAST, handshake_timeout=60, frame_read_timeout=60))


# -- frame size --------------------------------------------------------------------------------
def test_a_huge_length_prefix_closes_the_connection_before_any_frame_byte(patient_node: GuardedNode) -> None:
    sock = raft_attack.connect(patient_node.address)
    sock.sendall(raft_attack.LENGTH_PREFIX.pack(raft_attack.HUGE_LENGTH))  # the prefix alone
    assert raft_attack.closed_by_peer(sock, 5.0), "the node waited for a 2 GiB frame"
    assert patient_node.stats()["oversize_frames"] == 1


def test_the_issue_attack_is_cut_short(patient_node: GuardedNode) -> None:
    """2^31-1 then 44 MiB: the node resets the connection long before the 44 MiB are in."""
    assert raft_attack.big_frame(patient_node.address, timeout=10)
    assert patient_node.stats()["oversize_frames"] == 1


def test_before_the_handshake_only_handshake_sized_frames_are_accepted(patient_node: GuardedNode) -> None:
    limit = patient_node.transport_limits.handshake_frame_bytes
    sock = raft_attack.connect(patient_node.address)
    sock.sendall(raft_attack.LENGTH_PREFIX.pack(limit + 1))
    assert raft_attack.closed_by_peer(sock, 5.0)


def test_after_the_handshake_the_frame_limit_still_holds(patient_node: GuardedNode) -> None:
    sock = raft_attack.connect(patient_node.address)
    raft_attack.handshake(sock, getEncryptor(PASSWORD), PARTNER)
    wait_until(lambda: patient_node.isNodeConnected(TCPNode(PARTNER)))
    assert raft_attack.is_open(sock)
    sock.sendall(raft_attack.LENGTH_PREFIX.pack(patient_node.transport_limits.max_frame_bytes + 1))
    assert raft_attack.closed_by_peer(sock, 5.0)
    assert patient_node.stats()["oversize_frames"] == 1


def test_the_largest_legitimate_frame_is_far_below_the_limit() -> None:
    """A snapshot chunk (1 MiB of incompressible bytes plus its header) is the biggest
    frame a node sends (fix 7 bounds append_entries batches to 64 KiB of commands)."""
    fernet = getEncryptor(PASSWORD)
    chunk = os.urandom(SNAPSHOT_CHUNK_BYTES)
    header = {"size": 1 << 40, "sha256": "0" * 64, "index": 1 << 40, "offset": 1 << 40}
    message = (
        os.urandom(32),
        {"type": "append_entries", "term": 9, "commit_index": 9, "serialized": (chunk, True, False, header)},
    )
    frame = encode_frame(fernet, message)
    tiny = [(b"\x00", i, 1) for i in range(64 << 10)]  # a whole batch of 1-byte commands
    batch = encode_frame(fernet, (os.urandom(32), {"type": "append_entries", "entries": tiny}))
    largest = max(len(frame), len(batch))
    assert largest < 1.5 * SNAPSHOT_CHUNK_BYTES
    assert largest * 8 < RaftSettings().max_frame_bytes
    with pytest.raises(ValidationError):  # the setting cannot go below what replication needs
        RaftSettings(max_frame_bytes=largest)
    assert len(zlib.compress(pickle.dumps(os.urandom(32)), 3)) * 4 < TransportLimits().handshake_frame_bytes


def test_a_batch_never_carries_a_big_entry_behind_small_ones() -> None:
    small, big = (b"s" * 10, 1, 1), (b"b" * 100_000, 2, 1)
    assert _batch_entries([small, big], 65536) == [small]  # big heads the next batch, sent in parts
    assert _batch_entries([big], 65536) == [big]
    assert _batch_entries([small, small], 65536) == [small, small]


# -- deadlines -----------------------------------------------------------------------------------
def test_a_silent_connection_is_closed_at_the_handshake_deadline(fast_node: GuardedNode) -> None:
    sock = raft_attack.connect(fast_node.address)
    assert raft_attack.closed_by_peer(sock, 5.0), "a silent connection stayed open"
    assert fast_node.stats()["handshake_timeouts"] == 1


def test_a_slow_half_frame_is_closed_at_the_read_deadline(fast_node: GuardedNode) -> None:
    """Authenticated (so the handshake deadline is out of the way), then a frame that
    never completes although a byte arrives every 0.1 s."""
    sock = raft_attack.connect(fast_node.address)
    raft_attack.handshake(sock, getEncryptor(PASSWORD), PARTNER)
    wait_until(lambda: fast_node.isNodeConnected(TCPNode(PARTNER)))
    assert raft_attack.slow_half_frame(fast_node.address, timeout=10.0, sock=sock)
    stats = fast_node.stats()
    assert stats["read_timeouts"] == 1 and stats["handshake_timeouts"] == 0


def test_an_authenticated_idle_peer_is_not_closed(fast_node: GuardedNode) -> None:
    """The deadlines must not cut a real peer: after the handshake and with no frame
    pending, the connection outlives both deadlines."""
    sock = raft_attack.connect(fast_node.address)
    raft_attack.handshake(sock, getEncryptor(PASSWORD), PARTNER)
    wait_until(lambda: fast_node.isNodeConnected(TCPNode(PARTNER)))
    assert not raft_attack.closed_by_peer(sock, 2 * FAST.frame_read_timeout)
    assert fast_node.stats() == dict.fromkeys(fast_node.stats(), 0)


# -- connections per address -------------------------------------------------------------------------
def test_connections_per_address_are_capped(patient_node: GuardedNode) -> None:
    held = [raft_attack.connect(patient_node.address, "127.0.0.2") for _ in range(2)]
    extra = raft_attack.connect(patient_node.address, "127.0.0.2")  # accepted in order: the third
    assert raft_attack.closed_by_peer(extra, 5.0), "a third connection from one address was kept"
    assert all(raft_attack.is_open(sock) for sock in held)
    server = patient_node.transport._server
    other = raft_attack.connect(patient_node.address, "127.0.0.3")  # another address is served
    wait_until(lambda: len(server.by_ip.get("127.0.0.3", ())) == 1)
    held.pop().close()  # a slot frees when a connection ends
    wait_until(lambda: len(server.by_ip.get("127.0.0.2", ())) == 1)
    again = raft_attack.connect(patient_node.address, "127.0.0.2")
    wait_until(lambda: len(server.by_ip.get("127.0.0.2", ())) == 2)
    assert raft_attack.is_open(again)
    assert patient_node.stats()["refused_connections"] == 1
    for sock in [*held, other, again]:
        sock.close()


def test_node_settings_reach_the_guard() -> None:
    tuning = RaftSettings(max_frame_bytes=3 << 20, handshake_timeout=2.5, max_connections_per_ip=4)
    limits = transport_limits(tuning)
    assert (limits.max_frame_bytes, limits.handshake_timeout, limits.max_connections_per_ip) == (
        3 << 20,
        2.5,
        4,
    )


def test_the_rest_of_a_big_frame_leaves_without_another_send() -> None:
    """PySyncObj stops asking for WRITE events once its buffer first empties; the rest of
    a frame bigger than the socket buffer then waited for the next send (a heartbeat)."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    ours.setblocking(False)
    poller = PollPoller()
    conn = GuardedConnection(
        poller=poller, socket=ours, timeout=60.0, limits=TransportLimits(), stats=GuardStats(), peer="test"
    )
    poller.poll(0)  # the first WRITE event: PySyncObj now listens for READ only
    payload = os.urandom(4 << 20)  # incompressible, far bigger than the socket buffers
    conn.send(payload)
    assert conn.getSendBufferSize() > 0
    theirs.settimeout(0.1)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                theirs.recv(1 << 20)
            except TimeoutError:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while conn.getSendBufferSize() and time.monotonic() < deadline:
            poller.poll(0.05)  # the tick loop's poll: no further send() calls
        assert conn.getSendBufferSize() == 0
    finally:
        stop.set()
        reader.join(5)
        conn.disconnect()
        theirs.close()
