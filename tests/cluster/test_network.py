"""The soak's Raft proxy on real sockets (no nodes): a healed cut never forwards what was
sent during it, and a snapshot chunk fault damages exactly one chunk, re-encrypted."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from node.runner import free_port
from node.testing.cluster import PASSWORD
from node.testing.network import RaftNetwork, SnapshotFault, decode_frame, encode_frame

pytestmark = pytest.mark.timeout(60)


class Sink:
    """A TCP server that records every byte (and whether the peer closed)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()
        self.port = free_port()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            self.data += chunk
        self.closed.set()
        writer.close()

    def frames(self) -> list[bytes]:
        out, data = [], bytes(self.data)
        while len(data) >= 4:
            (size,) = struct.unpack("<i", data[:4])
            out.append(data[: 4 + size])
            data = data[4 + size :]
        return out


@asynccontextmanager
async def proxied() -> AsyncIterator[tuple[RaftNetwork, Sink, str, asyncio.StreamWriter]]:
    sink = Sink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", sink.port)
    network = RaftNetwork(PASSWORD)
    advertised = network.add_proxy(free_port(), sink.port)
    _, writer = await asyncio.open_connection(*advertised.split(":"))
    try:
        yield network, sink, advertised, writer
    finally:
        writer.close()
        network.close()
        server.close()


def frame(payload: bytes) -> bytes:
    return struct.pack("<i", len(payload)) + payload


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_heal_never_forwards_bytes_received_during_the_cut() -> None:
    async with proxied() as (network, sink, node, writer):
        writer.write(frame(b"before the cut"))
        await writer.drain()
        await wait_for(lambda: bytes(sink.data) == frame(b"before the cut"))
        network.cut(node)
        writer.write(frame(b"during the cut"))
        await writer.drain()
        await asyncio.sleep(0.3)  # the proxy has read and dropped it
        network.heal(node)
        await asyncio.wait_for(sink.closed.wait(), 5)  # the cut link is closed on heal
        with pytest.raises(OSError):  # and it stays dead: nothing more goes through it
            for _ in range(50):
                writer.write(frame(b"after the heal"))
                await writer.drain()
                await asyncio.sleep(0.02)
        assert bytes(sink.data) == frame(b"before the cut")


@pytest.mark.parametrize("kind", ["corrupt", "drop"])
async def test_snapshot_fault_damages_exactly_one_chunk(kind: str) -> None:
    from pysyncobj.encryptor import getEncryptor

    fernet = getEncryptor(PASSWORD)
    key = os.urandom(32)
    chunks = [os.urandom(4096) for _ in range(3)]
    messages: list[Any] = [
        os.urandom(32),  # handshake: the initiator's random key
        (key, "127.0.0.1:1"),  # handshake: its address
        (key, {"type": "append_entries", "term": 3, "entries": []}),
        *[
            (key, {"type": "append_entries", "serialized": (c, i == 0, False, "meta")})
            for i, c in enumerate(chunks)
        ],
        (key, {"type": "append_entries", "serialized": (b"", False, True, "meta")}),
    ]
    sent = [encode_frame(fernet, m, timestamp=1000 + i) for i, m in enumerate(messages)]
    async with proxied() as (network, sink, node, writer):
        fault = SnapshotFault(kind=kind, receiver=node, skip=1, seed=5)
        network.arm_snapshot_fault(fault)
        for data in sent:
            writer.write(data)
        await writer.drain()
        expected = len(sent) - (1 if kind == "drop" else 0)
        await wait_for(lambda: len(sink.frames()) == expected)
        received = sink.frames()
    assert fault.fired and fault.chunks_seen == 2
    if kind == "drop":
        assert received == sent[:4] + sent[5:]
        return
    assert received[:4] == sent[:4] and received[5:] == sent[5:]
    damaged, timestamp = decode_frame(fernet, received[4])
    assert timestamp == 1000 + 4  # re-encrypted at the original time: the receiver accepts it
    original = messages[4][1]
    assert damaged[0] == key and damaged[1]["type"] == "append_entries"
    got = damaged[1]["serialized"]
    assert got[1:] == original["serialized"][1:] and len(got[0]) == len(chunks[1])
    assert sum(a != b for a, b in zip(got[0], chunks[1], strict=True)) == 16
