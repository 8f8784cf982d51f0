"""Background threads lower their own OS priority; the caller's thread is left alone."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from memorose import priority

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")


def _in_new_thread(fn):  # type: ignore[no-untyped-def]
    box: dict[str, object] = {}

    def run() -> None:
        box["value"] = fn()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box["value"]


@linux_only
def test_lower_this_thread_lowers_only_the_calling_thread() -> None:
    process_nice = os.getpriority(os.PRIO_PROCESS, os.getpid())
    expected = min(19, process_nice + priority.BACKGROUND_NICE)

    def lower_and_read() -> tuple[bool, int | None]:
        return priority.lower_this_thread(), priority.thread_nice()

    lowered, nice = _in_new_thread(lower_and_read)
    assert lowered is True
    assert nice == expected
    assert priority.thread_nice() == process_nice  # this thread is untouched


@linux_only
def test_lowering_twice_never_raises_the_priority_back() -> None:
    def twice() -> int | None:
        priority.lower_this_thread(by=15)
        priority.lower_this_thread(by=3)
        return priority.thread_nice()

    process_nice = os.getpriority(os.PRIO_PROCESS, os.getpid())
    assert _in_new_thread(twice) == min(19, process_nice + 15)


@linux_only
async def test_in_background_runs_on_a_lowered_thread_and_returns_the_result() -> None:
    loop_thread = threading.get_native_id()

    def where(x: int, *, y: int) -> tuple[int, int | None, int]:
        return threading.get_native_id(), priority.thread_nice(), x + y

    tid, nice, total = await priority.in_background(where, 2, y=3)
    assert total == 5
    assert tid != loop_thread
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + priority.BACKGROUND_NICE)
    # the event loop's own default executor is not affected
    _tid, default_nice, _ = await asyncio.to_thread(where, 0, y=0)
    assert default_nice == os.getpriority(os.PRIO_PROCESS, os.getpid())


async def test_in_background_propagates_exceptions() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await priority.in_background(fail)
