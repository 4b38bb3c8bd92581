"""The worker ↔ operator contract with both programs in the loop: the one place that pairs their code.

Every other test checks one side against :mod:`livenexus_common.contract` alone (render against
``RENDERED_ENV``, the settings against ``WORKER_ENV``, ...); here the operator's rendered pod environment
is parsed by the worker's settings, the operator's scraper reads the worker's own exposition, and, end
to end, the container the operator renders, started as a local process, joins a real LiveKit room and
transcribes it.

For the process test, command, arguments and environment are taken verbatim from the rendered
Deployment (secretKeyRefs resolved the way the kubelet would), with three chart values changed the way
an operator of this machine would set them: the model cache (the image's path does not exist here), the
metrics port (a free one) and the bind address (127.0.0.1 only, never 0.0.0.0 in tests).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from livenexus_common.contract import DEFAULT_TIERS, TierSpec, model_ladder
from livenexus_operator.render import render, worker_env
from livenexus_operator.scrape import parse_worker_metrics
from livenexus_operator.spec import RoomSpec, WorkerTemplate
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.room.settings import WorkerSettings
from tests.operator.helpers import CHART, approved, room_body

SENTENCE = "the quick brown fox jumps over the lazy dog"
TEMPLATE = WorkerTemplate.from_values({"image": {"repository": "reg.test/livenexus-worker", "tag": "1.2.3"}})


def kubelet_env(env: list[dict[str, Any]], secrets: dict[str, str]) -> dict[str, str]:
    """What the kubelet hands the container: plain values, secretKeyRefs resolved from ``secrets``."""
    out = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            out[e["name"]] = secrets[e["valueFrom"]["secretKeyRef"]["key"]]
    return out


def test_rendered_env_is_read_back_by_the_worker_settings_exactly() -> None:
    body = room_body(
        room="Daily Stand-up",
        model={"name": "base", "computeType": "int8_float32", "language": "auto", "beamSize": 3},
        vad={"aggressiveness": 3, "hangoverMs": 400},
        tiers={
            "ladder": [{"model": "base", "computeType": "int8", "beamSize": 4, "partialIntervalMs": 200,
                        "partialModel": "tiny.en"},
                       {"model": "tiny", "beamSize": 1, "partialIntervalMs": 0}],
            "cpuHigh": 0.9, "cpuLow": 0.4, "lagHighMs": 1500, "lagLowMs": 200,
            "downWindowSeconds": 3, "upWindowSeconds": 30.5, "cooldownSeconds": 12,
        },
    )
    body["spec"]["livekit"]["credentialsSecretRef"].update(apiKeyKey="key-id", apiSecretKey="key-secret")
    (c,) = render(body, TEMPLATE, approved(body)).deployment["spec"]["template"]["spec"]["containers"]
    s = WorkerSettings.from_env(kubelet_env(c["env"], {"key-id": "APIabc", "key-secret": "s3cr3t"}))
    s.require_livekit()
    assert (s.livekit_url, s.api_key, s.api_secret, s.room) == (
        "wss://livekit.example.test", "APIabc", "s3cr3t", "Daily Stand-up")
    assert (s.model, s.compute_type, s.beam_size, s.language) == ("base", "int8_float32", 3, None)
    assert (s.vad_aggressiveness, s.vad_hangover_ms) == (3, 400)
    assert s.tiers == (TierSpec("base", "int8", 4, 200, "tiny.en"), TierSpec("tiny", "int8", 1, 0))
    assert (s.tier_cpu_high, s.tier_cpu_low, s.tier_lag_high_ms, s.tier_lag_low_ms) == (0.9, 0.4, 1500, 200)
    assert (s.tier_down_window_s, s.tier_up_window_s, s.tier_cooldown_s) == (3.0, 30.5, 12.0)
    assert s.metrics_port == 9300
    assert s.model_cache == "/opt/livenexus/models"


def test_a_default_room_gives_the_worker_the_models_ladder_and_the_default_thresholds() -> None:
    room = RoomSpec.from_body(room_body(name="r1"))
    s = WorkerSettings.from_env(kubelet_env(worker_env(room, TEMPLATE), {"api-key": "k", "api-secret": "s"}))
    assert s.room == "r1"  # spec.room defaults to metadata.name
    assert s.language == "en"
    # Every tier uses the configured model: a model the image lacks can never be stepped down to (the worker's
    # own default ladder, used without LIVENEXUS_TIERS, ends on a second model, tiny.en).
    assert s.tiers == model_ladder("base", "int8", 5)
    assert s.tiers[:3] == DEFAULT_TIERS[:3] and {t.model for t in DEFAULT_TIERS[3:]} == {"tiny.en"}
    # The thresholds are the worker's own defaults (the contract's), only the ladder differs.
    assert s.tier_options() == replace(WorkerSettings.from_env({}).tier_options(), levels=len(s.tiers))


def test_the_operator_reads_the_workers_exposition() -> None:
    m = WorkerMetrics()
    m.set_tier(0, DEFAULT_TIERS[0])
    m.set_tier(2, DEFAULT_TIERS[2])
    for latency in (0.2, 0.3, 0.4, 0.6, 2.5):
        m.observe_final(latency)
    m.utterance(4.0)
    m.inference("final", 0.4, 0.6, 4.0)
    m.queue(0, 0.0, 3)
    m.set_livekit_connected(True)
    stats = parse_worker_metrics(m.exposition().decode())
    assert stats.final_count == 5
    assert stats.final_latency_p50_ms is not None and 300 <= stats.final_latency_p50_ms <= 400
    assert stats.realtime_factor == pytest.approx(0.25)
    assert stats.active_speakers == 3
    assert (stats.tier_index, stats.tier_name, stats.model) == (2, DEFAULT_TIERS[2].name, "base")
    assert stats.livekit_connected is True
    assert (stats.tier_changes_down, stats.tier_changes_up) == (1, 0)


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
    dep = render(body, WorkerTemplate.from_values(values), approved(body)).deployment
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
    # Lead-in silence: on a loaded machine the worker subscribes a moment after the track is published, and
    # speech sent before that never reaches it (a CI run under load saw no final).
    padded = np.concatenate([np.zeros(16000 * 2, dtype=np.int16), samples, np.zeros(16000 * 2, dtype=np.int16)])
    for start in range(0, len(padded) - frame_len + 1, frame_len):
        frame = rtc.AudioFrame.create(16000, 1, frame_len)
        np.frombuffer(frame.data, dtype=np.int16)[:] = padded[start:start + frame_len]
        await source.capture_frame(frame)  # paces at real time
    return lk


@pytest.mark.livekit
@pytest.mark.model
@pytest.mark.slow
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
