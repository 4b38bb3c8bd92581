"""Stopping a consumer task that drains a queue: the publisher's and the webhook sink's."""

from __future__ import annotations

import asyncio


async def finish(task: asyncio.Task[None], timeout: float) -> None:
    """Let ``task`` finish what it holds within ``timeout``; past it, cancel it and wait until it is gone."""
    try:
        await asyncio.wait_for(asyncio.shield(task), max(0.0, timeout))
    except TimeoutError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
