"""A real shard on loopback for cluster tests (rqlite ``system_test`` style).

Every node is a subprocess (``python -m memorose.cli node ...``) with its own data dir.
Each node's Raft port sits behind a small TCP proxy (``RaftNetwork``) and peers know each
other by the proxy addresses (``--raft-advertise``), so a test can cut one node off: the
proxy then black-holes every Raft connection to or from that node (bytes are dropped, the
sockets stay open, as in a real partition) and resets them when the cut heals. The proxy
learns who opened a connection by decrypting the PySyncObj handshake with the shard's
password. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api

PASSWORD = "test-raft-password"
REPO = Path(__file__).resolve().parents[2]


async def poll(
    predicate: Callable[[], Awaitable[Any]],
    timeout: float = 30.0,
    what: str = "condition",
    every: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await predicate()
            if value:
                return value
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            last_error = exc
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


# -- the network ---------------------------------------------------------------------------------
@dataclass(eq=False)
class _Link:
    target: str  # advertised address of the node behind the proxy
    initiator: str | None = None  # advertised address of the node that connected, once known
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def involves(self, node: str) -> bool:
        return node in (self.target, self.initiator)


class RaftNetwork:
    """TCP proxies in front of every node's Raft port, on their own thread and event loop."""

    def __init__(self, password: str) -> None:
        from pysyncobj.encryptor import getEncryptor

        self._fernet = getEncryptor(password)
        self.cut_nodes: set[str] = set()
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever, name="raft-proxy", daemon=True)
        self._thread.start()

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
        self._loop.call_soon_threadsafe(self.cut_nodes.add, node)

    def heal(self, node: str) -> None:
        def do() -> None:
            self.cut_nodes.discard(node)
            for link in list(self._links):
                if link.involves(node):
                    for writer in link.writers:
                        writer.close()

        self._loop.call_soon_threadsafe(do)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for link in list(self._links):
                for writer in link.writers:
                    writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _dropped(self, link: _Link) -> bool:
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
            for w in link.writers:
                w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, from_initiator: bool
    ) -> None:
        frames_seen = 0
        buffer = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if from_initiator and link.initiator is None and frames_seen < 2:
                    buffer += data
                    frames_seen = self._learn_initiator(buffer, link)
                if self._dropped(link):
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _learn_initiator(self, buffer: bytes, link: _Link) -> int:
        """PySyncObj's handshake: [random key], then [(key, self address)], each a length-
        prefixed Fernet token of zlib-compressed pickle. Returns how many frames were seen."""
        offset, frames = 0, 0
        while len(buffer) - offset >= 4:
            (size,) = struct.unpack("i", buffer[offset : offset + 4])
            if len(buffer) - offset - 4 < size:
                break
            frames += 1
            if frames == 2:
                try:
                    message = pickle.loads(
                        zlib.decompress(self._fernet.decrypt(buffer[offset + 4 : offset + 4 + size]))
                    )
                    if isinstance(message, tuple) and isinstance(message[1], str):
                        link.initiator = message[1]
                except Exception:
                    link.initiator = "?"
                return 2
            offset += 4 + size
        return frames


# -- the nodes -----------------------------------------------------------------------------------
@dataclass
class NodeProc:
    index: int
    node_id: str
    http: str
    raft_bind: str
    raft: str  # advertised (the proxy), the node's Raft identity
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """N subprocess nodes behind a RaftNetwork. Use as ``async with Cluster(tmp_path) as c``."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        env: dict[str, str] | None = None,
        password: str = PASSWORD,
        proxies: bool = True,
    ) -> None:
        self.root = root
        self.proxies = proxies
        self.password = password
        self.env = env or {}
        self.network = RaftNetwork(password)
        self.nodes: list[NodeProc] = []
        for i in range(size):
            self.nodes.append(self._new_node(i))
        self.session: aiohttp.ClientSession | None = None

    def _new_node(self, i: int) -> NodeProc:
        raft_port = free_port()
        if self.proxies:
            advertised = self.network.add_proxy(free_port(), raft_port)
        else:
            advertised = f"127.0.0.1:{raft_port}"
        return NodeProc(
            index=i,
            node_id=f"n{i + 1}",
            http=f"127.0.0.1:{free_port()}",
            raft_bind=f"127.0.0.1:{raft_port}",
            raft=advertised,
            data_dir=self.root / f"n{i + 1}",
            log_path=self.root / f"n{i + 1}.log",
        )

    async def __aenter__(self) -> Cluster:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for node in self.nodes:
            self._hard_stop(node)
        if self.session is not None:
            await self.session.close()
        self.network.close()
        if exc[0] is not None:
            self.dump_logs()

    def dump_logs(self, lines: int = 40) -> None:
        for node in self.nodes:
            if node.log_path.exists():
                tail = node.log_path.read_text(errors="replace").splitlines()[-lines:]
                print(f"----- {node.node_id} ({node.log_path}) -----", file=sys.stderr)
                print("\n".join(tail), file=sys.stderr)

    # -- process control -------------------------------------------------------------------------
    def argv(
        self, node: NodeProc, members: list[NodeProc] | None = None, password: str | None = None
    ) -> list[str]:
        argv = [sys.executable, "-m", "memorose.cli", "--log-level", "INFO", "node"]
        argv += ["--node-id", node.node_id, "--data-dir", str(node.data_dir), "--http", node.http]
        argv += ["--raft", node.raft_bind, "--raft-advertise", node.raft]
        for other in members if members is not None else self.nodes:
            if other is not node:
                argv += ["--peer", f"{other.raft}={other.url}"]
        return argv

    def start(self, i: int, members: list[NodeProc] | None = None, password: str | None = None) -> NodeProc:
        node = self.nodes[i]
        env = dict(os.environ)
        env.update(
            {
                "MEMOROSE_ADMIN_KEY": ADMIN_KEY,
                "MEMOROSE_RAFT_PASSWORD": password or self.password,
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.env)
        log = node.log_path.open("ab")
        node.proc = subprocess.Popen(
            self.argv(node, members), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        log.close()
        node.paused = False
        return node

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)

    def add_node(self) -> NodeProc:
        node = self._new_node(len(self.nodes))
        self.nodes.append(node)
        return node

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[i]
        assert node.proc is not None
        if sig == signal.SIGSTOP:
            node.paused = True
        elif sig == signal.SIGCONT:
            node.paused = False
        node.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            node.proc.wait(10)

    def stop(self, i: int) -> None:
        """Graceful stop (SIGTERM), falling back to SIGKILL."""
        node = self.nodes[i]
        if node.proc is None or node.proc.poll() is not None:
            return
        node.proc.terminate()
        try:
            node.proc.wait(20)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(10)

    def _hard_stop(self, node: NodeProc) -> None:
        if node.proc is not None and node.proc.poll() is None:
            if node.paused:
                node.proc.send_signal(signal.SIGCONT)
            node.proc.kill()
            node.proc.wait(10)

    # -- HTTP --------------------------------------------------------------------------------------
    def api(self, i: int) -> Api:
        assert self.session is not None
        return Api(self.nodes[i].url, self.session)

    async def status(self, i: int) -> dict[str, Any] | None:
        if not self.nodes[i].alive or self.nodes[i].paused:
            return None
        try:
            code, body = await self.api(i).get(
                "/api/v1/cluster/status", timeout=aiohttp.ClientTimeout(total=2)
            )
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        return body if code == 200 else None

    async def statuses(self, indexes: list[int] | None = None) -> dict[int, dict[str, Any]]:
        wanted = indexes if indexes is not None else [n.index for n in self.nodes]
        results = await asyncio.gather(*(self.status(i) for i in wanted))
        return {i: s for i, s in zip(wanted, results, strict=True) if s is not None}

    async def wait_leader(self, among: list[int] | None = None, timeout: float = 45.0) -> int:
        """The index of the node every listed (live) node agrees leads, with all of them connected."""
        wanted = among if among is not None else [n.index for n in self.nodes if n.alive and not n.paused]

        async def agreed() -> int | None:
            statuses = await self.statuses(wanted)
            if len(statuses) != len(wanted):
                return None
            leaders = [i for i, s in statuses.items() if s["role"] == "leader"]
            if len(leaders) != 1:
                return None
            address = statuses[leaders[0]]["raft_address"]
            if all(s["leader"] == address for s in statuses.values()):
                return leaders[0] + 1  # truthy even for node 0
            return None

        return int(await poll(agreed, timeout, "an agreed leader")) - 1

    async def wait_converged(self, indexes: list[int] | None = None, timeout: float = 60.0) -> int:
        """All listed nodes have applied everything up to the same commit index; returns it."""
        wanted = indexes if indexes is not None else [n.index for n in self.nodes if n.alive and not n.paused]

        async def same() -> int | None:
            statuses = await self.statuses(wanted)
            if len(statuses) != len(wanted):
                return None
            # PySyncObj's own entries (a new leader's no-op, membership) commit without
            # touching RocksDB: compare Raft's applied index with the commit index, and
            # require the state machine's applied index to agree across nodes.
            raft_applied = {s["raft_applied_index"] for s in statuses.values()}
            commits = {s["commit_index"] for s in statuses.values()}
            applied = {s["applied_index"] for s in statuses.values()}
            if len(commits) == 1 and raft_applied == commits and len(applied) == 1:
                return next(iter(commits))
            return None

        return int(await poll(same, timeout, "replicas converged"))

    async def digests(self, tenant: str, indexes: list[int] | None = None) -> dict[int, dict[str, Any]]:
        wanted = indexes if indexes is not None else [n.index for n in self.nodes if n.alive]
        out = {}
        for i in wanted:
            code, body = await self.api(i).get(f"/api/v1/admin/digest?tenant_id={tenant}")
            assert code == 200, body
            out[i] = body
        return out

    async def events(self, i: int, tenant: str) -> list[dict[str, Any]]:
        """Every L0 event of a tenant on node i (paginated, local read)."""
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            code, body = await self.api(i).get(f"/api/v1/events?tenant_id={tenant}&after={after}&limit=1000")
            assert code == 200, body
            out.extend(body["events"])
            if body["next_after"] is None:
                return out
            after = body["next_after"]
