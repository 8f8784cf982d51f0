"""Fail-stop and failpoints: how a node stops when continuing would be wrong.

A replica that cannot write what Raft committed, or that is asked to drop a committed log
entry, must not go on serving: acknowledging or advancing past a hole is how replicas
silently diverge. ``fail_stop`` logs one fatal line naming the cause and exits the process
at once (exit code 70, ``EX_SOFTWARE``); Raft treats it like a crash, and the operator sees
why in the log. Nothing is flushed or cleaned up on the way out on purpose: the on-disk
state is exactly what it was when the problem was found.

Failpoints let the crash-safety tests and the fault soak kill a node at a precise step
(``MEMOROSE_FAILPOINTS="snapshot.install.unpacked:0.5,snapshot.pack.replaced"``: a name,
optionally with the probability of firing each time it is reached). A failpoint that fires
SIGKILLs the process, as a power cut or the OOM killer would. Unset in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
from typing import NoReturn

log = logging.getLogger(__name__)

EXIT_FATAL = 70

#: Every failpoint the node has, for docs and for the soak to choose from.
FAILPOINTS = (
    "snapshot.receive.chunk",  # follower: after writing one received snapshot chunk
    "snapshot.install.unpacked",  # follower: snapshot verified and unpacked, nothing switched yet
    "snapshot.install.kept",  # follower: received snapshot kept as its dump, database not switched
    "snapshot.install.switched",  # follower: new database switched in, journal not yet reset
    "snapshot.pack.replaced",  # any node: new dump renamed in place, journal not yet compacted
    "journal.compact.written",  # any node: compacted journal written, not yet renamed
)


def _parse(spec: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, probability = item.partition(":")
        if name not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {name!r} in MEMOROSE_FAILPOINTS; known: {FAILPOINTS}")
        points[name] = float(probability) if probability else 1.0
    return points


_ACTIVE = _parse(os.environ.get("MEMOROSE_FAILPOINTS", ""))


def failpoint(name: str) -> None:
    """SIGKILL this process here if the failpoint ``name`` is armed (and the dice agree)."""
    probability = _ACTIVE.get(name)
    if probability is None or random.random() >= probability:
        return
    log.critical("failpoint %s fired: killing the process", name)
    _flush_logs()
    os.kill(os.getpid(), signal.SIGKILL)


def fail_stop(reason: str) -> NoReturn:
    """Log ``reason`` as the node's last line and exit immediately."""
    log.critical("FATAL, stopping the node: %s", reason)
    _flush_logs()
    os._exit(EXIT_FATAL)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # best effort on the way out
            handler.flush()
    sys.stderr.flush()
