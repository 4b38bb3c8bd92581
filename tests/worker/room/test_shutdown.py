"""SIGTERM shutdown works against one deadline, however stuck inference or the room is (it was 20 + 20 s,
past the pod's 30 s grace period, so the kubelet's SIGKILL could land before the finals were out)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.room.agent import AgentOptions, RoomAgent
from livenexus_worker.room.publisher import TranscriptPublisher
from livenexus_worker.room.settings import WorkerSettings


class StuckRuntime:
    """Inference that never goes idle (one decode far longer than any grace period)."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def wait_idle(self, timeout: float) -> bool:
        self.asked.append(timeout)
        threading.Event().wait(timeout)
        return False


class DeadRoom:
    """A room whose every call hangs (the server stopped answering)."""

    def __init__(self) -> None:
        self.local_participant = self

    async def _hang(self, *a: Any, **kw: Any) -> None:
        await asyncio.Event().wait()

    stream_text = publish_transcription = publish_data = disconnect = _hang


class Service:
    def __init__(self) -> None:
        self.metrics = WorkerMetrics()
        self.runtime = StuckRuntime()


async def test_shutdown_keeps_its_deadline_with_stuck_inference_and_a_dead_room() -> None:
    svc = Service()
    agent = RoomAgent(WorkerSettings(), svc, AgentOptions(deadline_s=3.0, leave_s=0.3, publish_s=0.5))  # type: ignore[arg-type]
    pub = TranscriptPublisher(svc.metrics).start()
    room = DeadRoom()
    pub.attach(room)  # type: ignore[arg-type]
    for i in range(3):
        pub.submit(TranscriptEvent(stream_id="s", speaker="a", segment_id=f"s{i}", text="t", is_final=True,
                                   start=0.0, end=1.0), "TR")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(agent._shutdown(room, None, pub, t0), 30)  # type: ignore[arg-type]
    took = loop.time() - t0
    stages = agent.shutdown_stages
    print(f"stages {stages}, total {took:.2f}s")
    # Inference got what the deadline leaves after publishing and leaving; each later stage its own share.
    assert svc.runtime.asked and svc.runtime.asked[0] <= 3.0 - 0.3 - 0.5
    assert set(stages) == {"settle", "flush", "decode", "publish", "leave"}
    assert took < 3.0 + 1.0, "the deadline is one deadline, not one per stage"
    assert pub.dropped["final"] == 3, "finals that could not go out are counted (and logged), not silently lost"


def test_default_options_follow_the_settings() -> None:
    o = AgentOptions.from_settings(WorkerSettings(shutdown_deadline_s=10, max_streams=5, max_speakers=3))
    assert (o.deadline_s, o.limits.max_streams, o.limits.max_speakers) == (10, 5, 3)
    assert o.settle_s + o.leave_s + o.publish_s < o.deadline_s
    assert AgentOptions.from_settings(WorkerSettings()).deadline_s < 30
