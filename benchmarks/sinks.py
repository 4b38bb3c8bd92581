"""Transcript sinks on this machine: webhook throughput and delivery latency to a local receiver, JSONL file
throughput with an fsync per batch, and what a burst costs the event loop that submits it.

    .venv/bin/python benchmarks/sinks.py [--finals 2000] [--rate 20] [--seconds 5]

Numbers, not assertions (a shared 2-core box): a local receiver answers 200 at once, so the webhook figures are
the worker's own cost per final (signing, one POST at a time on a kept-alive connection), not a network's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web
from prometheus_client import CollectorRegistry

from livenexus_common.sinks import sink_record
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.room.sinks import SinkSet, SinkSettings
from livenexus_worker.room.sinks_file import FileSink, FileSinkOptions

TEXT = "our quarterly revenue grew by twelve percent compared to last year and the warehouse opens in spring"


class Receiver:
    """200 to every POST on 127.0.0.1; calls ``on_body`` with each raw body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.on_body = lambda body: None
        self.got = asyncio.Event()
        self.want = 0

    async def start(self) -> Receiver:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.bodies.append(body)
            self.on_body(body)
            if len(self.bodies) >= self.want:
                self.got.set()
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
        return self

    async def wait_for(self, n: int, timeout: float) -> None:
        self.want = n
        if len(self.bodies) < n:
            await asyncio.wait_for(self.got.wait(), timeout)

    async def stop(self) -> None:
        await self.runner.cleanup()


def final(i: int) -> TranscriptEvent:
    return TranscriptEvent(stream_id="TR_a", speaker="alice", segment_id=f"bench-{i}", text=TEXT, is_final=True,
                           start=float(i), end=i + 2.0, language="en", tier="base-int8-b5-p250")


async def webhook_burst(n: int, tmp: Path) -> None:
    receiver = await Receiver().start()
    registry = CollectorRegistry()
    sinks = SinkSet(SinkSettings(webhook_url=receiver.url, webhook_key=b"k" * 32, webhook_max_queue=n),
                    "bench", SimpleNamespace(registry=registry)).start()
    t0 = time.perf_counter()
    for i in range(n):
        sinks.submit(final(i))
    submit_s = time.perf_counter() - t0
    await receiver.wait_for(n, timeout=600)
    took = time.perf_counter() - t0
    await sinks.close(5.0)
    await receiver.stop()
    print(f"webhook burst: {n} finals submitted in {submit_s * 1000:.1f} ms ({submit_s / n * 1e6:.0f} us each on "
          f"the event loop), all delivered in {took:.2f} s = {n / took:.0f} finals/s")


async def webhook_steady(rate: float, seconds: float) -> None:
    stamps: dict[str, float] = {}
    latencies: list[float] = []
    receiver = await Receiver().start()
    receiver.on_body = lambda body: latencies.append(time.perf_counter() - stamps[json.loads(body)["segmentId"]])
    sinks = SinkSet(SinkSettings(webhook_url=receiver.url, webhook_key=b"k" * 32), "bench").start()
    n = int(rate * seconds)
    for i in range(n):
        stamps[f"bench-{i}"] = time.perf_counter()
        sinks.submit(final(i))
        await asyncio.sleep(1.0 / rate)
    await receiver.wait_for(n, timeout=60)
    await sinks.close(5.0)
    await receiver.stop()
    q = statistics.quantiles(latencies, n=100)
    print(f"webhook steady {rate:g}/s for {seconds:g} s: submit -> receiver p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


def file_burst(n: int, tmp: Path) -> None:
    path = tmp / "bench.jsonl"
    sink = FileSink(FileSinkOptions(path, max_queue=n))
    t0 = time.perf_counter()
    for i in range(n):
        sink.submit(sink_record(room="bench", stream_id="TR_a", segment_id=f"b-{i}", speaker="alice", start=i,
                                end=i + 2, text=TEXT, language="en", tier="t", emitted_at=0.0))
    left = sink.close(600)
    took = time.perf_counter() - t0
    print(f"file burst: {n} finals in {took:.2f} s = {n / took:.0f} finals/s, {path.stat().st_size / n:.0f} "
          f"bytes/line, {left} left")
    t0 = time.perf_counter()
    sink = FileSink(FileSinkOptions(path))
    for i in range(200):  # one at a time: a batch (and an fsync) each
        sink.submit(sink_record(room="bench", stream_id="TR_a", segment_id=f"c-{i}", speaker="alice", start=i,
                                end=i + 2, text=TEXT, language="en", tier="t", emitted_at=0.0))
        while sink.pending:
            time.sleep(0.0002)
    took = time.perf_counter() - t0
    sink.close(10)
    print(f"file one by one: 200 finals, {took / 200 * 1000:.2f} ms each (write + fsync)")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--finals", type=int, default=2000)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        await webhook_burst(a.finals, Path(d))
        await webhook_steady(a.rate, a.seconds)
        file_burst(a.finals * 5, Path(d))


if __name__ == "__main__":
    asyncio.run(main())
