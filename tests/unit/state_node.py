"""One replica's storage without Raft, for tests of what follows the state machine: a real
RocksDB, the state machine applying commands in index order, and an indexer over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memorose import commands
from memorose.statemachine import StateMachine
from memorose.storage.indexer import Indexer
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore


class StateNode:
    def __init__(self, root: Path, dim: int = 8) -> None:
        self.root = root
        self.dim = dim
        self.store = RocksStore(root / "rocks")
        self.reader = StateReader(self.store)
        self.machine = StateMachine(self.store)
        self.index = 0
        self.indexer = self.open_indexer()

    def open_indexer(self, name: str = "index") -> Indexer:
        """An indexer on ``root/name``: the saved state of a previous one there, or a rebuild."""
        indexer = Indexer(self.reader, self.root / name, dim=self.dim, ann_threshold=1000)
        indexer.open()
        return indexer

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply ``command`` as the next Raft entry; it must succeed."""
        self.index += 1
        result: dict[str, Any] = self.machine.apply(commands.encode(command), self.index)
        assert result["ok"], result
        return result

    def restart_indexer(self) -> None:
        self.indexer.stop()
        self.indexer = self.open_indexer()

    def close(self) -> None:
        self.indexer.stop()
        self.store.close()
