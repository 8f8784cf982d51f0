"""OS scheduling priority of a node's threads: background work yields the CPU to Raft.

A node's Raft tick thread must run every few milliseconds or the shard holds elections
(docs/replication.md, "Liveness under CPU starvation"). On a loaded machine it competed on
equal terms with the node's own background threads: the indexer (rebuilding every search
index after a snapshot install), consolidation planning, insight passes, forgetting. Linux
schedules threads individually and lets any thread raise its own nice value, so those
threads lower themselves (``lower_this_thread``) and the kernel gives the tick thread,
the HTTP event loop and the apply path the CPU first. Lowering never needs privileges;
raising back does, so a thread that lowered itself stays low (hence the dedicated
executor of ``in_background`` instead of asyncio's shared default one). Threads a lowered
thread starts (e.g. a library's worker pool) inherit its nice value.

Elsewhere than Linux, or where the call fails, everything runs at normal priority.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

#: Nice value added to background threads (0-19; 10 gives such a thread about a tenth of
#: the CPU share of a normal one when both want it).
BACKGROUND_NICE = 10
#: Threads in the background executor: consolidation planning, insight passes (projection
#: and plan) and forgetting previews each run one at a time per worker; a long insight pass
#: must not hold up consolidation.
BACKGROUND_THREADS = 4

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def thread_nice() -> int | None:
    """This OS thread's nice value; None where it cannot be read."""
    if not _supported():
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return None


def lower_this_thread(by: int = BACKGROUND_NICE) -> bool:
    """Raise the calling thread's nice value to at least (process nice + ``by``). Call it
    first thing in a background thread. True if the thread now runs at that priority."""
    if not _supported() or by <= 0:
        return False
    tid = threading.get_native_id()
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + by)
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
        return True
    except OSError as exc:
        log.debug("could not lower the priority of thread %d: %s", tid, exc)
        return False


def background_executor() -> ThreadPoolExecutor:
    """The node's pool of low-priority threads (created on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=BACKGROUND_THREADS,
                thread_name_prefix="memorose-background",
                initializer=lower_this_thread,
            )
        return _executor


async def in_background(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread`` on a low-priority thread: for CPU-heavy work the node can
    postpone (planning, insight and forgetting passes), never for the write path."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(background_executor(), call)


def _supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")
