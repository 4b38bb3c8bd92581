"""The operator's background tasks (status refresher, autoscaler, policy dispatcher) kept in kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import MutableMapping
from typing import Any


async def stop_task(memo: MutableMapping[str, Any], key: str) -> None:
    """Cancel the task a startup handler kept in ``memo[key]`` and wait until it has ended, so nothing of it
    runs past kopf's cleanup (a task that failed on its own re-raises its error here)."""
    task = memo.get(key)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
