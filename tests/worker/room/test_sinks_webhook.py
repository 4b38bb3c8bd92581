"""The webhook sink against a real HTTP receiver on 127.0.0.1: retried with the same key, signed, bounded,
never following a redirect or reading a huge answer, and no final lost silently (spilled to the file)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from livenexus_common.sinks import idempotency_key
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.room.sinks import SinkSet, SinkSettings
from tests.worker.room.sinks_receiver import Receiver, hang, huge_body, redirect, status

KEY = b"0123456789abcdef-signing-key"


def final(i: int, text: str = "hello there") -> TranscriptEvent:
    return TranscriptEvent(stream_id="TR_a", speaker="alice", segment_id=f"run1-TR_a-{i}", text=f"{text} {i}",
                           is_final=True, start=float(i), end=i + 0.8, language="en", tier="base-int8-b5-p250")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


class Sinks:
    def __init__(self, url: str, tmp: Path | None = None, **kw: Any) -> None:
        self.registry = CollectorRegistry()
        settings = SinkSettings(webhook_url=url, webhook_key=KEY, file_dir=str(tmp) if tmp else "", **kw)
        self.set = SinkSet(settings, "standup", SimpleNamespace(registry=self.registry))
        assert self.set.webhook is not None
        # Fast retries: the tests count attempts, never time them.
        self.set.webhook.options = type(self.set.webhook.options)(
            url, KEY, settings.webhook_timeout_s, settings.webhook_max_queue, initial_backoff_s=0.01,
            max_backoff_s=0.2)
        self.set.start()

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def delivered(self, result: str = "delivered", sink: str = "webhook") -> float:
        return self.metric("livenexus_sink_deliveries_total", sink=sink, result=result)

    async def until(self, result: str, count: float, timeout: float = 30.0) -> None:
        async def poll() -> None:
            while self.delivered(result) < count:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(poll(), timeout)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_5xx_is_retried_with_the_same_key_body_and_a_valid_signature(receiver: Receiver) -> None:
    receiver.answer = status(500, 503)
    sinks = Sinks(receiver.url)
    sinks.set.submit(final(1))
    await sinks.until("delivered", 1)
    assert len(receiver.received) == 3
    assert {r.key for r in receiver.received} == {idempotency_key("standup", "TR_a", "run1-TR_a-1")}
    assert len({r.body for r in receiver.received}) == 1
    assert all(r.signed_by(KEY) for r in receiver.received)
    assert not receiver.received[0].signed_by(b"another-key-of-16-bytes")
    rec = receiver.received[-1].record
    assert (rec["speaker"], rec["text"], rec["start"], rec["end"], rec["room"]) == (
        "alice", "hello there 1", 1.0, 1.8, "standup")
    assert sinks.metric("livenexus_sink_retries_total") == 2
    assert sinks.metric("livenexus_sink_delivery_seconds_count") == 1
    assert await sinks.set.close(5.0) == {"webhook": 0, "file": 0}


async def test_4xx_is_not_retried_but_counted(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.answer = status(400)
    sinks = Sinks(receiver.url)
    sinks.set.submit(final(1))
    sinks.set.submit(final(2))
    await sinks.until("delivered", 1)
    assert [r.record["segmentId"] for r in receiver.received] == ["run1-TR_a-1", "run1-TR_a-2"]
    assert sinks.delivered("rejected") == 1
    assert sinks.metric("livenexus_sink_retries_total") == 0
    assert "HTTP 400" in caplog.text
    await sinks.set.close(5.0)


async def test_429_and_408_are_retried_and_retry_after_is_capped(receiver: Receiver) -> None:
    receiver.answer = status(429, 408, headers={"Retry-After": "100000"})
    sinks = Sinks(receiver.url)
    sinks.set.submit(final(1))
    await sinks.until("delivered", 1)  # would wait a day if Retry-After were not capped (max_backoff_s)
    assert len(receiver.received) == 3 and len({r.key for r in receiver.received}) == 1
    await sinks.set.close(5.0)


async def test_a_hanging_receiver_times_out_and_the_final_is_retried(receiver: Receiver) -> None:
    never = asyncio.Event()
    receiver.answer = hang(never, times=1)
    sinks = Sinks(receiver.url, webhook_timeout_s=0.3)
    sinks.set.submit(final(1))
    await sinks.until("delivered", 1)
    assert len(receiver.received) == 2 and receiver.received[0].key == receiver.received[1].key
    assert sinks.metric("livenexus_sink_retries_total") == 1
    await sinks.set.close(5.0)


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    elsewhere = await Receiver().start()
    try:
        receiver.answer = redirect(elsewhere.url)
        sinks = Sinks(receiver.url)
        sinks.set.submit(final(1))
        await sinks.until("rejected", 1)
        assert len(receiver.received) == 1
        assert elsewhere.received == []  # the other host never saw the transcript
        await sinks.set.close(5.0)
    finally:
        await elsewhere.stop()


async def test_a_huge_answer_is_not_read(receiver: Receiver) -> None:
    total = 1 << 30
    receiver.answer = huge_body(receiver, total)
    sinks = Sinks(receiver.url)
    for i in range(3):
        sinks.set.submit(final(i))
    await sinks.until("delivered", 3)
    await asyncio.sleep(0.2)  # let the receiver notice the closed connections
    # Only what socket buffers hold got out before the worker hung up (a read would have taken the whole GiB).
    assert receiver.body_bytes_sent < total // 8
    await sinks.set.close(5.0)


async def test_an_overflowing_queue_spills_to_the_undelivered_file_and_loses_nothing(
        receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()
    receiver.answer = hang(gate, times=1)  # the first request is held until the test lets it go
    sinks = Sinks(receiver.url, tmp_path, webhook_max_queue=3, webhook_timeout_s=30.0)
    sinks.set.submit(final(0))
    await receiver.wait_for(1)  # final 0 in flight, the receiver holds it
    for i in range(1, 11):
        sinks.set.submit(final(i))
    assert sinks.delivered("overflow") == 7
    assert sinks.metric("livenexus_sink_queue_depth") == 4
    assert caplog.text.count("NOT sent to the webhook") == 7
    gate.set()
    await sinks.until("delivered", 4)
    assert await sinks.set.close(5.0) == {"webhook": 0, "file": 0}
    every = {idempotency_key("standup", "TR_a", f"run1-TR_a-{i}") for i in range(11)}
    spilled = {r["id"] for r in lines(tmp_path / "standup.undelivered.jsonl")}
    assert len(spilled) == 7
    assert set(receiver.ids()) | spilled == every
    assert {r["id"] for r in lines(tmp_path / "standup.jsonl")} == every  # the room's file has them all
    assert sinks.delivered("delivered", sink="file") == 11


async def test_shutdown_spills_what_the_receiver_would_not_take(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answer = status(*([503] * 10**6))
    sinks = Sinks(receiver.url, tmp_path)
    for i in range(3):
        sinks.set.submit(final(i))
    await receiver.wait_for(2)
    assert await sinks.set.close(0.5) == {"webhook": 3, "file": 0}
    assert [r["segmentId"] for r in lines(tmp_path / "standup.undelivered.jsonl")] == [
        "run1-TR_a-0", "run1-TR_a-1", "run1-TR_a-2"]
    assert sinks.delivered("failed") == 3
    assert sinks.metric("livenexus_sink_queue_depth") == 0


async def test_shutdown_without_a_file_logs_the_ids_it_could_not_deliver(
        caplog: pytest.LogCaptureFixture) -> None:
    sinks = Sinks("http://127.0.0.1:9/hook")  # nothing listens on the discard port: connection refused
    sinks.set.submit(final(1))
    await asyncio.sleep(0.05)
    caplog.set_level(logging.ERROR)
    assert (await sinks.set.close(0.2))["webhook"] == 1
    assert idempotency_key("standup", "TR_a", "run1-TR_a-1") in caplog.text
    assert sinks.delivered("failed") == 1


async def test_partials_and_empty_finals_are_not_delivered(receiver: Receiver) -> None:
    sinks = Sinks(receiver.url)
    sinks.set.submit(TranscriptEvent(stream_id="TR_a", speaker="a", segment_id="s", text="hel", is_final=False,
                                     start=0.0, end=0.3))
    sinks.set.submit(TranscriptEvent(stream_id="TR_a", speaker="a", segment_id="e", text=" ", is_final=True,
                                     start=0.0, end=0.3))
    sinks.set.submit(final(2))
    await sinks.until("delivered", 1)
    assert [r.record["segmentId"] for r in receiver.received] == ["run1-TR_a-2"]
    await sinks.set.close(5.0)


async def test_a_peer_that_does_not_speak_http_is_retried_not_fatal() -> None:
    answers = iter([b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    bodies: list[bytes] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        bodies.append(await reader.readexactly(length))
        writer.write(next(answers))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sinks = Sinks(f"http://127.0.0.1:{port}/hook")
        sinks.set.submit(final(1))
        await sinks.until("delivered", 1)
        assert len(bodies) == 2 and bodies[0] == bodies[1]
        assert sinks.metric("livenexus_sink_retries_total") == 1
        await sinks.set.close(5.0)
    finally:
        server.close()
        await server.wait_closed()
