"""A worker agent running against the real livekit-server, in a thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from livenexus_dev.livekit_server import LiveKitServer, free_port
from livenexus_worker.room.agent import AgentOptions, RoomAgent
from livenexus_worker.room.service import WorkerService
from livenexus_worker.room.settings import WorkerSettings

from .agentkit import TWO_TIERS, agent_env


@dataclass
class RunningAgent:
    settings: WorkerSettings
    service: WorkerService
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    result: list[int]
    room_agent: RoomAgent

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}"

    def shutdown(self, timeout: float = 30) -> int:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "agent did not stop"
        return self.result[0]


def start_agent(server: LiveKitServer, room: str, **env: str) -> RunningAgent:
    # ``env`` may override the defaults (a dict, not keywords: a repeated keyword would be a TypeError).
    settings = WorkerSettings.from_env(agent_env(server, room, **{
        "LIVENEXUS_METRICS_PORT": str(free_port()), "LIVENEXUS_METRICS_HOST": "127.0.0.1",
        "LIVENEXUS_TIERS": TWO_TIERS, **env}))
    service = WorkerService.start(settings)
    ready = threading.Event()
    box: dict[str, object] = {}
    result: list[int] = []
    room_agent = RoomAgent(settings, service, AgentOptions.from_settings(settings))  # what run_agent runs

    def main() -> None:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        box.update(loop=loop, stop=stop)
        ready.set()
        result.append(loop.run_until_complete(room_agent.run(stop)))
        loop.close()

    t = threading.Thread(target=main, name=f"agent-{room}", daemon=True)
    t.start()
    ready.wait(10)
    return RunningAgent(settings, service, t, box["loop"], box["stop"], result, room_agent)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def agent(livekit_server: LiveKitServer) -> Iterator[RunningAgent]:
    a = start_agent(livekit_server, "agent-tests")
    yield a
    a.shutdown()
    a.service.close()
