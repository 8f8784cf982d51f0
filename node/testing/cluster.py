"""A real shard on loopback for cluster tests and the fault soak (rqlite ``system_test`` style).

Every node is a subprocess (``python -m memorose.cli node ...``) with its own data dir and
log file. Each node's Raft port sits behind a TCP proxy (``node.testing.network``) and peers
know each other by the proxy addresses, so a caller can cut a node off or damage a snapshot
chunk in flight. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from node.runner import free_port
from node.testing.api import ADMIN_KEY, Api
from node.testing.network import RaftNetwork

PASSWORD = "test-raft-password"
#: The checkout (or site-packages) that holds ``memorose`` and ``node``: the nodes import
#: the same code as the caller.
CODE_ROOT = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL this node when the harness process dies. A
    harness killed without cleanup (SIGKILL, or a SIGINT that skips ``__aexit__``) once
    left its nodes running; a new run in the same directories then shared data dirs with
    them and corrupted both."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


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
    expected_down: bool = False  # stopped or killed on purpose (vs. died by itself)

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

    def start(
        self,
        i: int,
        members: list[NodeProc] | None = None,
        password: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> NodeProc:
        """Start node i; ``extra_env`` applies to this start only (e.g. failpoints)."""
        node = self.nodes[i]
        env = dict(os.environ)
        env.update(
            {
                "MEMOROSE_ADMIN_KEY": ADMIN_KEY,
                "MEMOROSE_RAFT_PASSWORD": password or self.password,
                "PYTHONPATH": str(CODE_ROOT),
            }
        )
        env.update(self.env)
        env.update(extra_env or {})
        self.root.mkdir(parents=True, exist_ok=True)
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen(
                self.argv(node, members),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                preexec_fn=_die_with_parent,  # prctl only, called from the event loop's thread
            )
        node.paused = False
        node.expected_down = False
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
        if sig == signal.SIGKILL:
            node.expected_down = True
            node.paused = False  # SIGKILL ends a stopped process too
        node.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            node.proc.wait(10)

    def stop(self, i: int, timeout: float = 20.0) -> float | None:
        """Graceful stop (SIGTERM), falling back to SIGKILL after ``timeout``. Returns how
        long the node took to exit, or None if it had to be killed."""
        node = self.nodes[i]
        node.expected_down = True
        if node.proc is None or node.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        node.proc.terminate()
        try:
            node.proc.wait(timeout)
            return time.monotonic() - started
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(10)
            return None

    async def stop_async(self, i: int, timeout: float = 20.0) -> float | None:
        """``stop`` without blocking the event loop (other tasks keep writing meanwhile)."""
        return await asyncio.to_thread(self.stop, i, timeout)

    def died(self) -> list[NodeProc]:
        """Nodes that exited without being stopped or killed by the caller."""
        return [n for n in self.nodes if n.proc is not None and not n.alive and not n.expected_down]

    def _hard_stop(self, node: NodeProc) -> None:
        node.expected_down = True
        if node.proc is not None and node.proc.poll() is None:
            if node.paused:
                node.proc.send_signal(signal.SIGCONT)
            node.proc.kill()
            node.proc.wait(10)

    # -- HTTP --------------------------------------------------------------------------------------
    def api(self, i: int) -> Api:
        assert self.session is not None
        return Api(self.nodes[i].url, self.session)

    async def metric(self, i: int, name: str) -> float | None:
        """The value of an unlabelled metric on node i (``/metrics``); None if the node does
        not answer or has no such metric."""
        if not self.nodes[i].alive or self.nodes[i].paused:
            return None
        try:
            code, text = await self.api(i).get("/metrics", timeout=aiohttp.ClientTimeout(total=5))
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        if code != 200 or not isinstance(text, str):
            return None
        values = (line.split()[-1] for line in text.splitlines() if line.split(" ", 1)[0] == name)
        return next((float(v) for v in values), None)

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

    async def digests(
        self, tenant: str, indexes: list[int] | None = None, timeout: float = 60.0
    ) -> dict[int, dict[str, Any]]:
        """Each node's digest of a tenant, all taken at one applied index.

        Background consolidation keeps proposing commands after ``wait_converged``
        returns, so one round of requests can catch the nodes one command apart; digests
        at different indexes say nothing. Poll until every node answers at the same index.
        """
        wanted = indexes if indexes is not None else [n.index for n in self.nodes if n.alive]

        async def at_one_index() -> dict[int, dict[str, Any]] | None:
            out = {}
            for i in wanted:
                code, body = await self.api(i).get(f"/api/v1/admin/digest?tenant_id={tenant}")
                assert code == 200, body
                out[i] = body
            return out if len({d["applied_index"] for d in out.values()}) == 1 else None

        result: dict[int, dict[str, Any]] = await poll(at_one_index, timeout, "digests at one applied index")
        return result

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
