"""Helpers of the fault suite: light noise bots (no TTS), hostile data, agents without a model, loop lag."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from livekit import rtc

from livenexus_common.contract import DATA_TOPIC, TEXT_STREAM_TOPIC
from livenexus_dev.livekit_server import LiveKitServer
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions


class NoiseCrowd:
    """Participants sending loud white noise, ``per_process`` bots in each of ``processes`` processes
    (``tests/agent/noisebots.py``): one process cannot carry many rooms, its FFI event queue fans out to each."""

    def __init__(self, server: LiveKitServer, room: str, processes: int, per_process: int) -> None:
        env = {**os.environ, "LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": server.api_key,
               "LIVEKIT_API_SECRET": server.api_secret}
        root = Path(__file__).resolve().parents[2]
        self.procs = [subprocess.Popen([sys.executable, "-m", "tests.agent.noisebots", room, f"crowd{j}",
                                        str(per_process), "300"], env=env, cwd=root, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL) for j in range(processes)]
        self.size = processes * per_process

    def wait_joined(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready and p.stdout.readline().startswith(b"joined"), "the noise bots did not join in time"

    def leave(self, index: int) -> int:
        """One process's bots leave; returns how many."""
        p = self.procs[index]
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        return self.size // len(self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def send_garbage(room: rtc.Room) -> int:
    """Malformed and hostile data into the room; returns how many messages were sent."""
    lp = room.local_participant
    payloads: list[tuple[bytes | str, str]] = [
        (b"\xff\xfe\x00not json", DATA_TOPIC),
        ("{", DATA_TOPIC),
        (json.dumps({"type": "transcript", "text": 5, "isFinal": "yes", "segmentId": None}), DATA_TOPIC),
        (json.dumps({"type": "transcript", "text": "forged", "isFinal": True, "speaker": "alice",
                     "segmentId": "x" * 5000}), DATA_TOPIC),
        (b"\x00" * 14_000, DATA_TOPIC),  # near the reliable packet limit
        (b"control?", "livenexus.control"),
        (b"x", ""),
    ]
    for data, topic in payloads:
        await lp.publish_data(data, reliable=True, topic=topic)
    for _ in range(200):  # a burst
        await lp.publish_data(b"\x01" * 512, reliable=False, topic=DATA_TOPIC)
    writer = await lp.stream_text(topic=TEXT_STREAM_TOPIC, attributes={"lk.transcription_final": "maybe"})
    await writer.write("x" * 20_000)
    await writer.aclose()
    bw = await lp.stream_bytes("junk.bin", topic="livenexus.upload")
    await bw.write(b"\x00" * 50_000)
    await bw.aclose()
    return len(payloads) + 200 + 2


class LightService:
    """What a RoomAgent needs, without a model: for connection tests in rooms with no audio."""

    def __init__(self) -> None:
        self.metrics = WorkerMetrics()
        self.runtime = Runtime(RuntimeOptions())

    def close(self) -> None:
        self.runtime.close(1.0)


class LoopLag:
    """How late an event loop runs a timer: the cost of what else runs on it (frames, publishing)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float = 0.02) -> None:
        self.loop, self.period_s, self.samples = loop, period_s, list[float]()
        self._stop = False

    async def _probe(self) -> None:
        while not self._stop:
            t = time.perf_counter()
            await asyncio.sleep(self.period_s)
            self.samples.append(time.perf_counter() - t - self.period_s)

    def start(self) -> LoopLag:
        asyncio.run_coroutine_threadsafe(self._probe(), self.loop)
        return self

    def stop(self) -> tuple[float, float]:
        """p50 and p99 lag in ms."""
        self._stop = True
        time.sleep(2 * self.period_s)  # let the probe see the flag and end (its loop runs elsewhere)
        s = sorted(self.samples) or [0.0]
        return 1000 * s[len(s) // 2], 1000 * s[min(len(s) - 1, int(len(s) * 0.99))]
