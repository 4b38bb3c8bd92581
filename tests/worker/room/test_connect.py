"""A slow join is waited for, not cancelled: the LiveKit SDK's native side completes a cancelled join anyway and
then aborts the process when nobody takes it up (FFI panic, seen with 50 participants on a loaded machine)."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.room.agent import AgentOptions, RoomAgent
from livenexus_worker.room.settings import WorkerSettings


class SlowRoom:
    """A room whose join takes ``delay`` seconds (None: never ends) and records whether it was cancelled."""

    def __init__(self, delay: float | None) -> None:
        self.delay, self.cancelled, self.connected = delay, False, False

    async def connect(self, url: str, token: str, options: Any) -> None:
        try:
            await asyncio.sleep(3600 if self.delay is None else self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.connected = True

    def isconnected(self) -> bool:
        return self.connected

    async def disconnect(self) -> None:
        self.connected = False


def agent(**options: float) -> RoomAgent:
    settings = WorkerSettings.from_env({"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "k",
                                        "LIVEKIT_API_SECRET": "s" * 32, "LIVENEXUS_ROOM": "r"})
    service = types.SimpleNamespace(metrics=WorkerMetrics())
    return RoomAgent(settings, service, AgentOptions(**options))  # type: ignore[arg-type]


async def test_a_join_slower_than_the_timeout_is_waited_for_not_cancelled() -> None:
    a, room = agent(connect_timeout_s=0.05), SlowRoom(0.4)
    assert await a._connect(room, asyncio.Event())  # type: ignore[arg-type]
    assert room.connected and not room.cancelled
    assert a.connects == 1


async def test_stop_still_ends_a_pending_join() -> None:
    a, room, stop = agent(connect_timeout_s=0.05), SlowRoom(None), asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    assert not await a._connect(room, stop)  # type: ignore[arg-type]
    assert room.cancelled and a.connects == 0


async def test_a_join_that_never_ends_is_given_up_at_last() -> None:
    a, room = agent(connect_timeout_s=0.05, connect_give_up_s=0.3), SlowRoom(None)
    with pytest.raises(TimeoutError):
        await a._connect(room, asyncio.Event())  # type: ignore[arg-type]
    assert room.cancelled and a.connects == 0
