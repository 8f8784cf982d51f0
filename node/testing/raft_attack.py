"""A hostile client of a node's Raft port (issue 15), for tests and ``memorose bench raft abuse``.

Blocking sockets, one attacker per thread. Every function is bounded by a deadline and
returns whether the node closed the connection (EOF or reset) before it.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Any

from node.testing.network import decode_frame, encode_frame

LENGTH_PREFIX = struct.Struct("<i")
#: The issue's frame: the largest length a 4-byte signed prefix can announce.
HUGE_LENGTH = 2**31 - 1


def connect(address: str, source_ip: str | None = None, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to ``host:port``, optionally from a chosen loopback address."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source_ip is not None:
        sock.bind((source_ip, 0))
    sock.connect((host, int(port)))
    return sock


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Read and discard until the peer closes (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.1))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except OSError:  # reset
            return True
    return False


def is_open(sock: socket.socket) -> bool:
    """Whether the peer has not closed the connection (nothing is waiting: no EOF yet)."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(65536, socket.MSG_PEEK))
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def big_frame(address: str, total_bytes: int = 44 << 20, timeout: float = 30.0) -> bool:
    """The issue's attack: a 2^31-1 length prefix, then ``total_bytes`` of filler. True if
    the node closed the connection before all of it was sent (or within ``timeout``)."""
    sock = connect(address, timeout=timeout)
    try:
        sock.sendall(LENGTH_PREFIX.pack(HUGE_LENGTH))
        filler = bytes(1 << 20)  # the node never decrypts it: its content does not matter
        sent = 0
        try:
            while sent < total_bytes:
                sock.sendall(filler)
                sent += len(filler)
        except OSError:  # reset or broken pipe: the node closed it
            return True
        return closed_by_peer(sock, timeout)
    finally:
        sock.close()


def slow_half_frame(
    address: str, timeout: float, every: float = 0.1, sock: socket.socket | None = None
) -> bool:
    """Announce a 1,000-byte frame, send part of it, then one byte every ``every`` s (each
    byte resets PySyncObj's own idle timeout). True if the node closed it within ``timeout``."""
    sock = sock or connect(address)
    try:
        sock.sendall(LENGTH_PREFIX.pack(1000) + b"x" * 10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if closed_by_peer(sock, every):
                return True
            try:
                sock.sendall(b"x")
            except OSError:
                return True
        return False
    finally:
        sock.close()


def sustained(address: str, seconds: float, every: float = 0.2) -> dict[str, int]:
    """Both attacks for ``seconds``: a new big frame every ``every`` s, and a new slow
    half-frame as soon as the node closes the last. Counts of connections made and closed
    (the last half-frame may still be open when ``seconds`` are up). Run it in its own
    process: in the measuring process its threads would compete for the GIL."""
    counts = dict.fromkeys(
        ("big_frames", "big_frames_closed", "half_frames_closed", "half_frames_open_at_end"), 0
    )
    deadline = time.monotonic() + seconds

    def big() -> None:
        while time.monotonic() < deadline:
            counts["big_frames"] += 1
            counts["big_frames_closed"] += big_frame(address, timeout=30)
            time.sleep(every)

    def slow() -> None:
        while (left := deadline - time.monotonic()) > 0:
            key = (
                "half_frames_closed" if slow_half_frame(address, timeout=left) else "half_frames_open_at_end"
            )
            counts[key] += 1

    threads = [threading.Thread(target=big), threading.Thread(target=slow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def handshake(sock: socket.socket, fernet: Any, as_node: str) -> None:
    """PySyncObj's encrypted handshake as the peer ``as_node`` (needs the password's key):
    our random key, the node's answer (our key, its key), then our address under its key."""
    our_key = os.urandom(32)
    sock.sendall(encode_frame(fernet, our_key))
    echoed, their_key = decode_frame(fernet, _read_frame(sock))[0]
    assert echoed == our_key, "the node did not echo our key"
    sock.sendall(encode_frame(fernet, (their_key, as_node)))


def _read_frame(sock: socket.socket) -> bytes:
    header = _read_exactly(sock, LENGTH_PREFIX.size)
    return header + _read_exactly(sock, LENGTH_PREFIX.unpack(header)[0])


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    return data
