"""The operator's background tasks are stopped, and waited for, by kopf's cleanup handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from livenexus_operator import autoscale_loop, dispatch_loop, handlers
from livenexus_operator.background import stop_task


async def _forever(ended: list[str]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.sleep(0)  # a task that still has work to do once cancelled
        ended.append("ended")


async def test_stop_task_cancels_and_waits_for_the_task() -> None:
    ended: list[str] = []
    task = asyncio.create_task(_forever(ended))
    await asyncio.sleep(0)
    await stop_task({"job": task}, "job")
    assert task.cancelled() and ended == ["ended"]


async def test_stop_task_ignores_what_is_not_a_task() -> None:
    await stop_task({}, "job")
    await stop_task({"job": "not a task"}, "job")


async def test_stop_task_reraises_what_the_task_failed_with() -> None:
    async def broken() -> None:
        raise RuntimeError("refresher crashed")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="refresher crashed"):
        await stop_task({"job": task}, "job")


Cleanup = Callable[..., Awaitable[None]]


@pytest.mark.parametrize(("cleanup", "key"), [
    (handlers.stop_refresher, "refresher"),
    (autoscale_loop.stop_autoscaler, "autoscaler"),
    (dispatch_loop.stop_dispatcher, "dispatch_task"),
])
async def test_each_cleanup_stops_the_task_its_startup_kept(cleanup: Cleanup, key: str) -> None:
    ended: list[str] = []
    memo: dict[str, Any] = {key: asyncio.create_task(_forever(ended))}
    await asyncio.sleep(0)
    await cleanup(memo=memo)
    assert memo[key].cancelled() and ended == ["ended"]
