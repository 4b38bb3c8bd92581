"""Transcript sinks end to end: a real worker process in a real livekit-server room, a speaker saying two
sentences, a webhook receiver on 127.0.0.1 and a JSONL file. Every final the room got reaches both, signed,
with one idempotency key per segment; SIGTERM then ends the worker with nothing left undelivered."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livenexus_common.sinks import SinkEnv, idempotency_key
from livenexus_dev.demo.bots import Heard, Listener, SpeakerBot
from livenexus_dev.livekit_server import LiveKitServer
from tests.worker.room.sinks_receiver import Receiver, status

from .agentkit import ALICE, BOB, trim, wait_ready, worker_process

pytestmark = [pytest.mark.livekit, pytest.mark.model]

KEY = "sinks-agent-test-signing-key-0123"


def metric(base: str, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


@dataclass
class Session:
    finals: list[Heard]
    code: int
    log: str
    files: Path
    delivered: float
    retries: float
    sigterm_to_exit_s: float


async def session(lk: LiveKitServer, room: str, receiver: Receiver, speech_cache: dict[str, np.ndarray],
                  tmp_path: Path, *, wait_delivered: bool) -> Session:
    """A worker process with both sinks; ``dana`` says two sentences; then SIGTERM."""
    from tests.conftest import speak

    files = tmp_path / "transcripts" / "team-a"
    log = tmp_path / "worker.log"
    proc, metrics = worker_process(lk, room, log, **{
        SinkEnv.WEBHOOK_URL: receiver.url, SinkEnv.WEBHOOK_SECRET: KEY, SinkEnv.WEBHOOK_ALLOW_HTTP: "1",
        SinkEnv.FILE_DIR: str(files)})
    try:
        await wait_ready(metrics, timeout=90)
        listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, room, "t-listener")
        dana = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, room, "dana")
        try:
            await dana.silence(1.0)
            for sentence in (ALICE, BOB):
                await dana.play(trim(speak(speech_cache, sentence)))
                await dana.silence(2.0)
            await listener.wait_finals(2, 40, speaker="dana")
            await asyncio.sleep(2.0)  # a sentence committed in two parts: its second final
            finals = listener.finals(speaker="dana")
        finally:
            await dana.close()
            await listener.close()
        segments = {f.segment_id for f in finals}
        deadline = time.monotonic() + 30
        while (wait_delivered and {r.record["segmentId"] for r in receiver.received} < segments
               and time.monotonic() < deadline):
            await asyncio.sleep(0.1)
        delivered = metric(metrics, "livenexus_sink_deliveries_total", result="delivered", sink="webhook")
        retries = metric(metrics, "livenexus_sink_retries_total")
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 40)
        took = time.monotonic() - sigterm_at
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    print(f"finals {[f.text for f in finals]}; webhook requests {len(receiver.received)}, delivered {delivered}, "
          f"retries {retries}; SIGTERM -> exit {took:.1f}s; "
          f"{[ln for ln in text.splitlines() if 'shut down in' in ln]}")
    return Session(finals, code, text, files, delivered, retries, took)


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_speakers_finals_reach_the_webhook_and_the_file(livekit_server: LiveKitServer,
                                                                speech_cache: dict[str, np.ndarray],
                                                                tmp_path: Path) -> None:
    room = "sinks-e2e"
    # The first answer is a 503: the worker retries it with the same key, and the receiver sees it twice.
    receiver = await Receiver(answer=status(503)).start()
    try:
        s = await session(livekit_server, room, receiver, speech_cache, tmp_path, wait_delivered=True)
    finally:
        await receiver.stop()
    finals, code, text, files, delivered, retries = s.finals, s.code, s.log, s.files, s.delivered, s.retries
    segments = {f.segment_id for f in finals}
    assert code == 0
    # Every final the room got reached the receiver, signed, the same text, one key per segment.
    got = {}
    for r in receiver.received:
        assert r.signed_by(KEY.encode()), "a delivery whose signature does not verify"
        rec = r.record
        assert r.key == rec["id"] == idempotency_key(room, rec["streamId"], rec["segmentId"])
        got.setdefault(rec["segmentId"], set()).add(rec["id"])
    assert set(got) == segments
    assert all(len(keys) == 1 for keys in got.values())
    assert len({k for keys in got.values() for k in keys}) == len(segments), "two segments shared a key"
    by_segment = {r.record["segmentId"]: r.record for r in receiver.received}
    for f in finals:
        assert (by_segment[f.segment_id]["text"], by_segment[f.segment_id]["speaker"]) == (f.text, "dana")
    assert receiver.received[0].key == receiver.received[1].key, "the 503 was retried with the same key"
    assert delivered == len(segments) and retries >= 1
    # ... and the room's JSONL file, one line per final with speaker, times and text.
    lines = rows(files / f"{room}.jsonl")
    assert {r["segmentId"] for r in lines} == segments and len(lines) == len(segments)
    assert all(r["speaker"] == "dana" and r["end"] > r["start"] >= 0 and r["text"] for r in lines)
    assert not (files / f"{room}.undelivered.jsonl").exists()
    assert "NOT delivered" not in text and "NOT written" not in text


async def test_sigterm_with_the_receiver_down_keeps_every_final_on_disk(livekit_server: LiveKitServer,
                                                                        speech_cache: dict[str, np.ndarray],
                                                                        tmp_path: Path) -> None:
    room = "sinks-e2e-down"
    receiver = await Receiver(answer=status(*([503] * 10**6))).start()  # never takes one
    try:
        s = await session(livekit_server, room, receiver, speech_cache, tmp_path, wait_delivered=False)
    finally:
        await receiver.stop()
    segments = {f.segment_id for f in s.finals}
    assert s.code == 0 and s.delivered == 0 and s.retries >= 1
    assert s.sigterm_to_exit_s < 30, "longer than the pod's default grace period"
    # What the webhook never got is in the undelivered file (for a replay), and in the room's own file.
    assert {r["segmentId"] for r in rows(s.files / f"{room}.undelivered.jsonl")} == segments
    assert {r["segmentId"] for r in rows(s.files / f"{room}.jsonl")} == segments
    assert "NOT delivered to the webhook before the shutdown deadline" in s.log
