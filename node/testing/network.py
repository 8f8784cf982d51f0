"""TCP proxies in front of every node's Raft port: partitions and damaged snapshot chunks.

Peers know each other by the proxy addresses (``--raft-advertise``), so the harness can cut
a node off: every Raft connection to or from it is black-holed (bytes dropped, sockets left
open, as in a real partition). A connection that was cut at any moment is *poisoned*: it
never forwards another byte and is closed when the cut heals, so the nodes reconnect. A real
network can lose the tail of a TCP stream but never a piece from its middle; forwarding
again on a healed connection would create exactly such a hole.

The proxy speaks PySyncObj's framing: a 4-byte little-endian length, then a Fernet token
(the shard password's key) of a zlib-compressed pickle. It decrypts the handshake to learn
who opened a connection, and, while a snapshot fault is armed, decodes the frames towards
the victim to drop or corrupt one snapshot chunk (a message whose ``serialized`` value is
a tuple/list starting with bytes), re-encrypting with the same key and timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import random
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_HEADER = struct.Struct("<i")
_MAX_FRAME = 256 << 20  # larger lengths mean we lost the framing: stop parsing, just forward
SNAPSHOT_FAULTS = ("drop", "corrupt")


@dataclass(eq=False)
class _Link:
    """One proxied TCP connection (both directions)."""

    target: str  # advertised address of the node behind the proxy
    initiator: str | None = None  # advertised address of the node that connected, once known
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    poisoned: bool = False  # was cut once: never forwards again, closed on heal

    def involves(self, node: str) -> bool:
        return node in (self.target, self.initiator)

    def receiver(self, from_initiator: bool) -> str | None:
        return self.target if from_initiator else self.initiator

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


@dataclass
class SnapshotFault:
    """Drop or corrupt one non-empty snapshot chunk on its way to ``receiver``."""

    kind: str  # "drop" | "corrupt"
    receiver: str  # advertised Raft address of the node that must get the bad chunk
    skip: int = 1  # non-empty chunks let through first (1: damage the second one)
    seed: int = 0
    chunks_seen: int = 0
    fired_at: float | None = None  # time.monotonic() when the chunk was damaged
    detail: str = ""

    @property
    def fired(self) -> bool:
        return self.fired_at is not None


def encode_frame(fernet: Any, message: Any, timestamp: int | None = None) -> bytes:
    """A frame as PySyncObj's TcpConnection.send writes it."""
    data = zlib.compress(pickle.dumps(message), 3)
    token = fernet.encrypt_at_time(data, int(time.monotonic()) if timestamp is None else timestamp)
    return bytes(_HEADER.pack(len(token))) + token


def decode_frame(fernet: Any, frame: bytes) -> tuple[Any, int]:
    """(message, Fernet timestamp) of one complete frame; raises if it is not ours."""
    token = frame[_HEADER.size :]
    timestamp = fernet.extract_timestamp(token)
    return pickle.loads(zlib.decompress(fernet.decrypt(token))), timestamp


def snapshot_chunk(message: Any) -> bytes | None:
    """The bytes of a snapshot chunk if ``message`` (``(rand key, dict)`` after the
    handshake) carries a non-empty one, else None. Generic on purpose: only the first
    element of ``serialized`` is interpreted, whatever else the tuple holds."""
    payload = message[1] if isinstance(message, tuple) and len(message) == 2 else None
    if not isinstance(payload, dict):
        return None
    serialized = payload.get("serialized")
    if isinstance(serialized, tuple | list) and serialized and isinstance(serialized[0], bytes):
        return serialized[0] or None
    return None


def corrupt_chunk(message: Any, rng: random.Random, span: int = 16) -> tuple[Any, str]:
    """A copy of ``message`` whose snapshot chunk has ``span`` bytes inverted at a random
    offset (the rest of the message, and the tuple's other fields, unchanged)."""
    key, payload = message
    serialized = payload["serialized"]
    chunk = bytearray(serialized[0])
    offset = rng.randrange(max(1, len(chunk) - span))
    for i in range(offset, min(len(chunk), offset + span)):
        chunk[i] ^= 0xFF
    damaged = type(serialized)([bytes(chunk), *serialized[1:]])
    return (key, {**payload, "serialized": damaged}), f"inverted {span} bytes at {offset}/{len(chunk)}"


class RaftNetwork:
    """TCP proxies in front of every node's Raft port, on their own thread and event loop.
    The public methods are called from other threads and hop onto the proxy loop."""

    def __init__(self, password: str) -> None:
        from pysyncobj.encryptor import getEncryptor

        self._fernet = getEncryptor(password)
        self.cut_nodes: set[str] = set()
        self.snapshot_faults: list[SnapshotFault] = []
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever, name="raft-proxy", daemon=True)
        self._thread.start()

    # -- control (any thread) ----------------------------------------------------------------
    def add_proxy(self, listen_port: int, target_port: int) -> str:
        """Proxy 127.0.0.1:listen_port -> 127.0.0.1:target_port; returns the advertised address."""
        advertised = f"127.0.0.1:{listen_port}"

        async def start() -> None:
            server = await asyncio.start_server(
                lambda r, w: self._handle(r, w, advertised, target_port), "127.0.0.1", listen_port
            )
            self._servers.append(server)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(5)
        return advertised

    def cut(self, node: str) -> None:
        """Black-hole every connection to or from ``node`` (returns once in effect)."""
        self._call(self._cut, node)

    def heal(self, node: str) -> None:
        """End the cut; connections that saw it are closed so the nodes open fresh ones."""
        self._call(self._heal, node)

    def arm_snapshot_fault(self, fault: SnapshotFault) -> None:
        self._call(self.snapshot_faults.append, fault)

    def disarm_snapshot_fault(self, fault: SnapshotFault) -> None:
        self._call(self._disarm, fault)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for link in list(self._links):
                link.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, fn: Callable[..., object], *args: Any) -> None:
        async def run() -> None:
            fn(*args)

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    # -- on the proxy loop ---------------------------------------------------------------------
    def _cut(self, node: str) -> None:
        self.cut_nodes.add(node)
        for link in self._links:
            if link.involves(node):
                link.poisoned = True

    def _heal(self, node: str) -> None:
        self.cut_nodes.discard(node)
        for link in list(self._links):
            if link.poisoned and not any(link.involves(n) for n in self.cut_nodes):
                link.close()

    def _disarm(self, fault: SnapshotFault) -> None:
        if fault in self.snapshot_faults:
            self.snapshot_faults.remove(fault)

    def _is_cut(self, link: _Link) -> bool:
        return any(link.involves(node) for node in self.cut_nodes)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, port: int
    ) -> None:
        link = _Link(target)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        link.writers = [writer, up_writer]
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, link, from_initiator=True),
                self._pump(up_reader, writer, link, from_initiator=False),
            )
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, from_initiator: bool
    ) -> None:
        """Forward whole frames; the cut check and the write happen with no await between
        them, so nothing read after a cut is ever forwarded."""
        buffer = bytearray()
        frames = 0
        framed = True
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                if link.poisoned or self._is_cut(link):
                    link.poisoned = True
                    continue
                buffer += data
                out: list[bytes] = []
                while framed:
                    frame = _take_frame(buffer)
                    if frame is None:
                        framed = len(buffer) < _HEADER.size or 0 <= _frame_size(buffer) <= _MAX_FRAME
                        break
                    frames += 1
                    if from_initiator and frames == 2 and link.initiator is None:
                        link.initiator = self._initiator(frame)
                        if self._is_cut(link):
                            link.poisoned = True
                            break
                    rewritten = self._apply_snapshot_faults(frame, link.receiver(from_initiator))
                    if rewritten is not None:
                        out.append(rewritten)
                if not framed:
                    out.append(bytes(buffer))
                    buffer.clear()
                if link.poisoned:
                    continue
                writer.write(b"".join(out))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _initiator(self, frame: bytes) -> str:
        """PySyncObj's handshake: [random key], then [(key, self address)]."""
        try:
            message, _ = decode_frame(self._fernet, frame)
            if isinstance(message, tuple) and isinstance(message[1], str):
                return message[1]
        except Exception:
            pass
        return "?"

    def _apply_snapshot_faults(self, frame: bytes, receiver: str | None) -> bytes | None:
        """The frame to forward (maybe damaged), or None to drop it."""
        armed = [f for f in self.snapshot_faults if not f.fired and f.receiver == receiver]
        if not armed:
            return frame
        try:
            message, timestamp = decode_frame(self._fernet, frame)
        except Exception:
            return frame  # a handshake frame or a utility connection: not ours to judge
        chunk = snapshot_chunk(message)
        if chunk is None:
            return frame
        fault = armed[0]
        fault.chunks_seen += 1
        if fault.chunks_seen <= fault.skip:
            return frame
        fault.fired_at = time.monotonic()
        if fault.kind == "drop":
            fault.detail = f"dropped chunk {fault.chunks_seen} ({len(chunk)} bytes)"
            return None
        damaged, fault.detail = corrupt_chunk(message, random.Random(fault.seed))
        fault.detail = f"chunk {fault.chunks_seen}: {fault.detail}"
        return encode_frame(self._fernet, damaged, timestamp)


def _frame_size(buffer: bytearray) -> int:
    return int(_HEADER.unpack_from(buffer)[0])


def _take_frame(buffer: bytearray) -> bytes | None:
    """Remove and return the first complete, sane frame of ``buffer``, if any."""
    if len(buffer) < _HEADER.size:
        return None
    size = _frame_size(buffer)
    if size < 0 or size > _MAX_FRAME or len(buffer) < _HEADER.size + size:
        return None
    frame = bytes(buffer[: _HEADER.size + size])
    del buffer[: _HEADER.size + size]
    return frame
