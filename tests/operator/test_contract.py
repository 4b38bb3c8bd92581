"""Contract: the container the operator renders, started as a local process, joins a real LiveKit room
and transcribes it.

Command, arguments and environment are taken verbatim from the rendered Deployment (secretKeyRefs
resolved the way the kubelet would), with three chart values changed the way an operator of this
machine would set them: the model cache (the image's path does not exist here), the metrics port (a
free one) and the bind address (127.0.0.1 only, never 0.0.0.0 in tests).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from livenexus_operator.render import render
from livenexus_operator.scrape import parse_worker_metrics
from livenexus_operator.spec import WorkerTemplate
from tests.operator.helpers import CHART, room_body

pytestmark = [
    pytest.mark.livekit,
    pytest.mark.model,
    pytest.mark.slow,
]

SENTENCE = "the quick brown fox jumps over the lazy dog"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rendered_process(url: str, api_key: str, api_secret: str, room: str, port: int) -> tuple[list[str], dict[
        str, str]]:
    """(argv, environment) of the worker container for a room on ``url``."""
    from livenexus_worker.inference.models import default_cache_dir

    values = yaml.safe_load((CHART / "values.yaml").read_text())["worker"]
    values["metricsPort"] = port
    values["modelSource"] = {"cachePath": str(default_cache_dir())}
    body = room_body(name="contract", room=room, livekit={"url": url, "credentialsSecretRef": {"name": "lk"}})
    dep = render(body, WorkerTemplate.from_values(values)).deployment
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    secrets = {"api-key": api_key, "api-secret": api_secret}
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "lk"
            env[e["name"]] = secrets[ref["key"]]
    env["LIVENEXUS_METRICS_HOST"] = "127.0.0.1"
    exe = shutil.which(c["command"][0])
    assert exe, f"{c['command'][0]} is not installed (pip install -e '.[worker]')"
    return [exe, *c["command"][1:], *c["args"]], env


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0, ""


async def _speak(url: str, api_key: str, api_secret: str, room: str, samples: np.ndarray,
                 received: list[str]) -> Any:
    from livekit import api, rtc

    token = (api.AccessToken(api_key, api_secret).with_identity("contract-speaker")
             .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())
    lk = rtc.Room()

    @lk.on("data_received")
    def _data(packet: rtc.DataPacket) -> None:
        received.append(packet.data.decode(errors="replace"))

    @lk.on("transcription_received")
    def _transcription(segments: list[Any], *_: Any) -> None:
        received.extend(str(getattr(seg, "text", "")) for seg in segments)

    await lk.connect(url, token)
    source = rtc.AudioSource(16000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    await lk.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    frame_len = 160  # 10 ms at 16 kHz
    padded = np.concatenate([samples, np.zeros(16000 * 2, dtype=np.int16)])
    for start in range(0, len(padded) - frame_len + 1, frame_len):
        frame = rtc.AudioFrame.create(16000, 1, frame_len)
        np.frombuffer(frame.data, dtype=np.int16)[:] = padded[start:start + frame_len]
        await source.capture_frame(frame)  # paces at real time
    return lk


async def test_rendered_worker_joins_the_room_and_transcribes(livekit_server: Any, tmp_path: Path) -> None:
    from livenexus_dev.tts import synthesize

    url, key, secret = livekit_server.url, livekit_server.api_key, livekit_server.api_secret
    room = f"contract-{os.getpid()}"
    port = _free_port()
    argv, env = rendered_process(url, key, secret, room, port)
    env["HOME"] = str(tmp_path)  # the pod's HOME is its /tmp emptyDir
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    received: list[str] = []
    lk = None
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 180
            status = 0
            while time.monotonic() < deadline and proc.poll() is None:
                status, _ = await _get(session, f"{base}/readyz")
                if status == 200:
                    break
                await asyncio.sleep(0.5)
            assert status == 200, f"worker never became ready (exit {proc.poll()}):\n{_tail(tmp_path)}"

            lk = await _speak(url, key, secret, room, synthesize(SENTENCE), received)
            stats = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                _, text = await _get(session, f"{base}/metrics")
                stats = parse_worker_metrics(text) if text else None
                if stats and stats.final_count >= 1:
                    break
                await asyncio.sleep(0.5)
            assert stats is not None and stats.final_count >= 1, f"no final transcript:\n{_tail(tmp_path)}"
            assert stats.livekit_connected is True
            assert stats.final_latency_p50_ms is not None
            assert stats.model == "base" and stats.tier_index is not None
            transcript = " ".join(received).lower()
            assert any(w in transcript for w in ("fox", "dog", "quick", "lazy")), (
                f"no transcript text reached the room (data packets or transcriptions): {received!r}")
    finally:
        if lk is not None:
            await lk.disconnect()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)  # terminationGracePeriodSeconds
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    assert proc.returncode == 0, f"worker did not exit cleanly on SIGTERM:\n{_tail(tmp_path)}"


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")[-4000:]
