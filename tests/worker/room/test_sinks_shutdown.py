"""SIGTERM with finals waiting for the sinks: delivered within the shutdown deadline even when the room is dead,
or written to the undelivered file and counted when the receiver will not take them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.room.agent import AgentOptions, RoomAgent
from livenexus_worker.room.publisher import TranscriptPublisher
from livenexus_worker.room.settings import WorkerSettings
from livenexus_worker.room.sinks import SinkSet, SinkSettings, TappedPublisher
from tests.worker.room.sinks_receiver import Receiver, status

KEY = b"0123456789abcdef-signing-key"


class DeadRoom:
    """A room whose every call hangs (the server stopped answering)."""

    def __init__(self) -> None:
        self.local_participant = self

    async def _hang(self, *a: Any, **kw: Any) -> None:
        await asyncio.Event().wait()

    stream_text = publish_transcription = publish_data = disconnect = _hang


class IdleRuntime:
    """Inference with nothing left to decode."""

    def wait_idle(self, timeout: float) -> bool:
        return True


class Service:
    def __init__(self) -> None:
        self.metrics = WorkerMetrics()
        self.runtime = IdleRuntime()


def final(i: int) -> TranscriptEvent:
    return TranscriptEvent(stream_id="TR", speaker="a", segment_id=f"r-TR-{i}", text=f"sentence {i}", is_final=True,
                           start=float(i), end=i + 1.0)


async def shut_down(receiver: Receiver, tmp_path: Path, n: int) -> tuple[RoomAgent, TranscriptPublisher, float]:
    svc = Service()
    sinks = SinkSettings(webhook_url=receiver.url, webhook_key=KEY, file_dir=str(tmp_path))
    agent = RoomAgent(WorkerSettings(room="standup"), svc,  # type: ignore[arg-type]
                      AgentOptions(deadline_s=3.0, leave_s=0.3, publish_s=0.5, sinks=sinks))
    # What run() does before connecting: the sinks are tapped into the publisher.
    pub = TappedPublisher(svc.metrics).start()
    pub.sinks = agent.sinks = SinkSet(sinks, "standup", svc.metrics).start()
    pub.attach(DeadRoom())  # type: ignore[arg-type]
    for i in range(n):
        pub.submit(final(i), "TR")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(agent._shutdown(DeadRoom(), None, pub, t0), 30)  # type: ignore[arg-type]
    return agent, pub, loop.time() - t0


async def test_sigterm_delivers_the_queued_finals_to_the_webhook_though_the_room_is_dead(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    try:
        agent, pub, took = await shut_down(receiver, tmp_path, 5)
    finally:
        await receiver.stop()
    assert sorted(r.record["segmentId"] for r in receiver.received) == [f"r-TR-{i}" for i in range(5)]
    assert agent.sinks_left == {"webhook": 0, "file": 0}
    assert len((tmp_path / "standup.jsonl").read_text().splitlines()) == 5
    assert pub.dropped["final"] == 5  # the dead room got none: the sinks are what kept them
    assert "sinks" in agent.shutdown_stages
    assert took < 3.0 + 1.0, "the sinks flush inside the one deadline"


async def test_sigterm_spills_what_the_receiver_refuses_to_take_in_time(tmp_path: Path) -> None:
    receiver = await Receiver(answer=status(*([503] * 10**6))).start()
    try:
        agent, _pub, took = await shut_down(receiver, tmp_path, 4)
    finally:
        await receiver.stop()
    assert agent.sinks_left == {"webhook": 4, "file": 0}
    spilled = [json.loads(x)["segmentId"] for x in (tmp_path / "standup.undelivered.jsonl").read_text().splitlines()]
    assert spilled == [f"r-TR-{i}" for i in range(4)]
    assert took < 3.0 + 1.0


async def test_the_sinks_get_their_share_of_the_deadline_not_all_of_it(tmp_path: Path) -> None:
    svc = Service()
    sinks = SinkSettings(webhook_url="http://127.0.0.1:9/hook", webhook_key=KEY)
    options = AgentOptions.from_settings(WorkerSettings(shutdown_deadline_s=20.0))
    agent = RoomAgent(WorkerSettings(room="standup"), svc, replace(options, sinks=sinks))  # type: ignore[arg-type]
    pub = TappedPublisher(svc.metrics).start()
    pub.sinks = agent.sinks = SinkSet(sinks, "standup", svc.metrics).start()
    asked: list[float] = []
    close = agent.sinks.close

    async def spy(timeout: float) -> dict[str, int]:
        asked.append(timeout)
        return await close(timeout)

    agent.sinks.close = spy  # type: ignore[method-assign]
    await agent._shutdown(None, None, pub, asyncio.get_running_loop().time())
    # A receiver that is down costs the shutdown the sinks' share (6 s of 20), not the whole deadline.
    assert asked and asked[0] <= options.sink_s == 6.0
