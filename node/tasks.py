"""The one way a node object owns a background asyncio task."""

from __future__ import annotations

import asyncio


class BackgroundTask:
    """``start()`` runs ``_run()`` as a named task; ``stop()`` cancels it and waits."""

    task_name = "background"
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
