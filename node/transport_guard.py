"""Raft port hardening for PySyncObj 0.3.17's TCP transport (issue 15).

PySyncObj trusts whoever connects to the Raft port. Its framing is a 4-byte length and a
Fernet token; it buffers a frame of any announced length (up to 2 GiB) with a quadratic
``bytes +=`` on the tick thread, only then checks the token, and measures a connection's
idleness only when the socket has an event. So without the password anyone could freeze
the Raft loop for ~20 s with one big frame, and a half-sent frame (or a silent connection)
stayed open forever. Here, on our subclasses only (no global patching):

* **Frame size**, checked on the length prefix before the frame is buffered: at most
  ``max_frame_bytes`` once the peer has authenticated, ``handshake_frame_bytes`` before
  (PySyncObj's handshake frames are ~200 bytes). A violation closes the connection.
  Before authentication a connection reads no further than one whole frame, so it can
  never hold more than one handshake frame plus one ``recv``.
* **Handshake deadline**: a connection (either direction) that has not completed the
  encrypted handshake within ``handshake_timeout`` is closed.
* **Read deadline**: a connection whose next frame started arriving more than
  ``frame_read_timeout`` ago and is still incomplete is closed.
* **Connections per address**: at most ``max_connections_per_ip`` incoming connections
  from one IP address at a time; more are closed at accept.

The deadlines are checked by the transport's tick callback (PySyncObj's own timeout runs
only on socket events). Counters of everything refused are in ``GuardStats``
(``/api/v1/cluster/status`` -> ``raft_transport``). See docs/security-raft.md.
"""

from __future__ import annotations

import enum
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pysyncobj.monotonic import monotonic as monotonic_time
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.tcp_server import TcpServer

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("i")  # PySyncObj's prefix: native signed int (little-endian here)
#: Deadlines are checked this often (the tick runs every few ms; no need to scan that often).
SWEEP_EVERY_S = 0.05
#: A longer gap between sweeps is a stall of the tick thread: bytes may be waiting unread in
#: the kernel, so lateness measured across it is ours, not the peer's. Skip one sweep.
STALL_GRACE_S = 1.0
#: At most one log line per reason this often (an attacker must not flood the log).
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class TransportLimits:
    """The guard's limits (``[raft_tuning]`` in memorose/config.py sets the node's)."""

    max_frame_bytes: int = 16 << 20
    handshake_frame_bytes: int = 64 << 10
    handshake_timeout: float = 5.0
    frame_read_timeout: float = 10.0
    max_connections_per_ip: int = 16


@dataclass
class GuardStats:
    """What the guard refused, for status and tests."""

    oversize_frames: int = 0
    handshake_timeouts: int = 0
    read_timeouts: int = 0
    refused_connections: int = 0
    _logged_at: dict[str, float] = field(default_factory=dict, repr=False)

    def count(self, reason: str, peer: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        now = monotonic_time()
        if now - self._logged_at.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[reason] = now
            log.warning(
                "Raft port: connection from/to %s closed (%s; total %d)", peer, reason, getattr(self, reason)
            )

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


class _Head(enum.Enum):
    PARTIAL = 0  # the buffer holds less than the head frame
    COMPLETE = 1  # the head frame is whole
    BAD = 2  # the head frame's announced length is over the limit (or negative)


class GuardedConnection(TcpConnection):  # type: ignore[misc]
    """A TcpConnection that checks the length prefix before buffering, reads one frame at a
    time until authenticated, and remembers when its pending frame started."""

    def __init__(
        self,
        *args: Any,
        limits: TransportLimits,
        stats: GuardStats,
        peer: str = "?",
        on_close: Callable[[GuardedConnection], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.limits = limits
        self.stats = stats
        self.peer = peer
        self.authenticated = False
        self.opened_at = monotonic_time()
        self.frame_started: float | None = None
        self._on_close = on_close
        super().__init__(*args, **kwargs)

    def connect(self, host: str, port: int) -> bool:
        """An outgoing connection object is reused for every reconnect: start afresh."""
        self.authenticated = False
        self.opened_at = monotonic_time()
        self.frame_started = None
        return bool(super().connect(host, port))

    def disconnect(self) -> None:
        self.authenticated = False
        self.frame_started = None
        super().disconnect()
        if self._on_close is not None:
            self._on_close(self)

    def send(self, message: Any) -> None:
        """PySyncObj writes what the socket takes and keeps the rest in its buffer, but
        asks the poller for WRITE events only until the first time the buffer empties: the
        rest of a big frame (an entry of a batch ingest, a snapshot chunk) then waited for
        the next ``send`` on this connection, i.e. the next heartbeat, ~10 ms per socket
        buffer. Ask to be woken when the socket can take more."""
        super().send(message)
        fileno = self.fileno()
        pending = self._TcpConnection__writeBuffer
        if pending and fileno is not None and self.state != CONNECTION_STATE.DISCONNECTED:
            self._TcpConnection__poller.subscribe(
                fileno,
                self._TcpConnection__processConnection,
                POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR,
            )

    def frame_limit(self) -> int:
        return self.limits.max_frame_bytes if self.authenticated else self.limits.handshake_frame_bytes

    def _head(self) -> _Head:
        buffer = self._TcpConnection__readBuffer
        if len(buffer) < _LENGTH.size:
            return _Head.PARTIAL
        (size,) = _LENGTH.unpack_from(buffer)
        if size < 0 or size > self.frame_limit():
            return _Head.BAD
        return _Head.COMPLETE if len(buffer) - _LENGTH.size >= size else _Head.PARTIAL

    def _refuse_frame(self) -> None:
        self.stats.count("oversize_frames", self.peer)
        self.disconnect()

    def _TcpConnection__processRead(self) -> bool:
        """PySyncObj reads until the socket is empty, then parses. Check the head frame's
        length after every ``recv``. Unauthenticated, stop once a whole frame is buffered
        (poll is level-triggered: the rest is read after it is parsed); authenticated,
        stop once a frame's worth is buffered. Returns "read again"."""
        if not super()._TcpConnection__processRead():
            return False
        if self.frame_started is None:
            self.frame_started = monotonic_time()
        head = self._head()
        if head is _Head.BAD:
            self._refuse_frame()
            return False
        if head is _Head.PARTIAL:
            return True
        return self.authenticated and len(self._TcpConnection__readBuffer) <= self.limits.max_frame_bytes

    def _TcpConnection__processParseMessage(self) -> Any:
        """Check each frame's length again when it reaches the head (the peer may have
        authenticated meanwhile), and restart the read clock when a frame was consumed."""
        if self._head() is _Head.BAD:
            self._refuse_frame()
            return None
        before = len(self._TcpConnection__readBuffer)
        message = super()._TcpConnection__processParseMessage()
        after = len(self._TcpConnection__readBuffer)
        if after < before:
            self.frame_started = monotonic_time() if after else None
        return message

    def overdue(self, now: float) -> str | None:
        """Which deadline this connection has missed, if any."""
        if self.state == CONNECTION_STATE.DISCONNECTED:
            return None
        if not self.authenticated and now - self.opened_at > self.limits.handshake_timeout:
            return "handshake_timeouts"
        if self.frame_started is not None and now - self.frame_started > self.limits.frame_read_timeout:
            return "read_timeouts"
        return None


class GuardedServer(TcpServer):  # type: ignore[misc]
    """TcpServer that caps live incoming connections per IP address and hands out
    GuardedConnections."""

    def __init__(self, *args: Any, limits: TransportLimits, stats: GuardStats, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.stats = stats
        self.by_ip: dict[str, set[GuardedConnection]] = {}

    def _release(self, conn: GuardedConnection) -> None:
        live = self.by_ip.get(conn.peer)
        if live is not None:
            live.discard(conn)
            if not live:
                del self.by_ip[conn.peer]

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:
        """PySyncObj's accept, plus the per-address cap."""
        if event & POLL_EVENT_TYPE.READ:
            try:
                sock, addr = self._TcpServer__socket.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.unbind()
                    return
            else:
                self._admit(sock, str(addr[0]))
        if event & POLL_EVENT_TYPE.ERROR:
            self.unbind()

    def _admit(self, sock: socket.socket, ip: str) -> None:
        live = self.by_ip.setdefault(ip, set())
        if len(live) >= self.limits.max_connections_per_ip:
            sock.close()
            if not live:
                del self.by_ip[ip]
            self.stats.count("refused_connections", ip)
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpServer__sendBufferSize)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpServer__recvBufferSize)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = GuardedConnection(
            poller=self._TcpServer__poller,
            socket=sock,
            timeout=self._TcpServer__connectionTimeout,
            sendBufferSize=self._TcpServer__sendBufferSize,
            recvBufferSize=self._TcpServer__recvBufferSize,
            keepalive=self._TcpServer__keepalive,
            limits=self.limits,
            stats=self.stats,
            peer=ip,
            on_close=self._release,
        )
        live.add(conn)
        self._TcpServer__onNewConnectionCallback(conn)


class TransportGuard:
    """Mixin for PySyncObj's TCPTransport (before it in the bases). The syncObj may carry
    ``transport_limits``; otherwise the defaults apply."""

    guard_limits: TransportLimits
    guard_stats: GuardStats

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self.guard_limits = getattr(syncObj, "transport_limits", None) or TransportLimits()
        self.guard_stats = GuardStats()
        self._last_sweep = monotonic_time()
        super().__init__(syncObj, selfNode, otherNodes)  # type: ignore[call-arg]

    def _createServer(self: Any) -> None:
        """PySyncObj's server (it resolves the bind address), rebuilt as a GuardedServer."""
        super()._createServer()  # type: ignore[misc]
        plain, conf = self._server, self._syncObj.conf
        self._server = GuardedServer(
            self._syncObj._poller,
            plain._TcpServer__host,
            plain._TcpServer__port,
            onNewConnection=self._onNewIncomingConnection,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
            connectionTimeout=conf.connectionTimeout,
            limits=self.guard_limits,
            stats=self.guard_stats,
        )

    def addNode(self: Any, node: Any) -> None:
        """PySyncObj's outgoing connection object, replaced by a GuardedConnection (it has
        not connected yet: ``_connectIfNecessary`` does that on a tick)."""
        super().addNode(node)  # type: ignore[misc]
        plain = self._connections.get(node)
        if plain is None or isinstance(plain, GuardedConnection):
            return
        conf = self._syncObj.conf
        conn = GuardedConnection(
            poller=self._syncObj._poller,
            timeout=conf.connectionTimeout,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
            keepalive=conf.tcp_keepalive,
            limits=self.guard_limits,
            stats=self.guard_stats,
            peer=str(node),
        )
        conn.encryptor = self._syncObj.encryptor
        conn.setOnConnectedCallback(lambda: self._onOutgoingConnected(conn))
        conn.setOnMessageReceivedCallback(lambda message: self._onMessageReceived(node, message))
        conn.setOnDisconnectedCallback(lambda: self._onDisconnected(conn))
        self._connections[node] = conn

    # -- authentication: the handshake is complete ------------------------------------------
    def _onIncomingMessageReceived(self: Any, conn: Any, message: Any) -> None:
        """Incoming: once PySyncObj has matched the peer to a node (after the key exchange,
        which only a holder of the password can pass)."""
        super()._onIncomingMessageReceived(conn, message)  # type: ignore[misc]
        if conn not in self._unknownConnections and conn.state == CONNECTION_STATE.CONNECTED:
            _mark_authenticated(conn)

    def _onOutgoingConnected(self: Any, conn: Any) -> None:
        super()._onOutgoingConnected(conn)  # type: ignore[misc]
        if not self._syncObj.encryptor:  # no password: nothing to wait for
            _mark_authenticated(conn)

    def _onOutgoingMessageReceived(self: Any, conn: Any, message: Any) -> None:
        """Outgoing: the peer's first frame decrypted, so it holds the password."""
        super()._onOutgoingMessageReceived(conn, message)  # type: ignore[misc]
        if conn.state == CONNECTION_STATE.CONNECTED:
            _mark_authenticated(conn)

    # -- deadlines -----------------------------------------------------------------------------
    def _onTick(self: Any) -> None:
        super()._onTick()  # type: ignore[misc]
        now = monotonic_time()
        gap = now - self._last_sweep
        if gap < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        if gap > STALL_GRACE_S:
            return
        for conn in [*self._unknownConnections, *self._connections.values()]:
            reason = conn.overdue(now) if isinstance(conn, GuardedConnection) else None
            if reason is not None:
                self.guard_stats.count(reason, conn.peer)
                conn.disconnect()


def _mark_authenticated(conn: Any) -> None:
    if isinstance(conn, GuardedConnection):
        conn.authenticated = True
