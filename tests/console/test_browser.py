"""The console page in headless Chromium against a real livekit-server and the real token service.

* ``test_page_merges_both_transcript_paths``: a scripted transcriber publishes known hypotheses on both wire
  paths; the page must show stable/unstable partials, each final exactly once, latency, speakers, and
  copy/export the same text.
* ``test_connect_errors`` / ``test_denied_microphone``: the error states a visitor can meet.
* ``test_speech_end_to_end``: espeak-ng speech as Chromium's fake microphone, the real worker transcribing it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .helpers import REPO, console_service, run_driver, wait_until

pytestmark = pytest.mark.browser

ACCESS_KEY = "browser-access-key-" + "k" * 16
HHMMSS = re.compile(r"^\d{2}:\d{2}:\d{2}$")
EXPORT_LINE = re.compile(r"^\[(\d{2}:\d{2}:\d{2})\] (.+?): (.*)$")


def lk_env(server: Any) -> dict[str, str]:
    return {"LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": server.api_key, "LIVEKIT_API_SECRET": server.api_secret}


def no_page_errors(result: dict[str, Any]) -> list[str]:
    return [m for m in result.get("console", []) if m.startswith("pageerror")]


def check_export(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The exported file: header line, then one line per final with the page's time, speaker and text."""
    lines = result["exportText"].splitlines()
    assert lines[0].startswith("# LiveNexus transcript, room "), lines[0]
    parsed = []
    for line in lines[1:]:
        m = EXPORT_LINE.match(line)
        assert m, f"bad export line {line!r}"
        parsed.append((m.group(1), m.group(2), m.group(3)))
    shown = [(f["time"], f["speaker"], f["text"]) for f in result["final"]["finals"]]
    assert parsed == shown
    assert result["exportName"].startswith("livenexus-") and result["exportName"].endswith(".txt")
    assert result["exportName"] in result["exportToast"]
    n = len(shown)
    assert result["copyToast"] == f"Copied {n} line{'' if n == 1 else 's'} to the clipboard"
    if "clipboard" in result:
        assert result["clipboard"].splitlines()[1:] == lines[1:]
    return parsed


@pytest.mark.livekit
def test_page_merges_both_transcript_paths(
    console_dist: Path, livekit_server: Any, artifacts_dir: Path, tmp_path: Path
) -> None:
    room = "console-protocol"
    env = {**lk_env(livekit_server), "LIVENEXUS_CONSOLE_AUTH_TOKEN": ACCESS_KEY}
    with console_service(["--rooms", f"{room},other-room", "--auth", "token"], env) as svc:
        bot = subprocess.Popen(
            [sys.executable, "-m", "tests.console.scripted"],
            cwd=REPO,
            # Two more participants publish forged finals on both paths: not the transcriber, never shown.
            env={**os.environ, **lk_env(livekit_server), "LIVENEXUS_ROOM": room, "SCRIPTED_FORGE": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            result = run_driver(
                {
                    "consoleUrl": svc.url,
                    "room": room,
                    "name": "Tester",
                    "mode": "transcribe",
                    "accessKey": ACCESS_KEY,
                    "minFinals": 4,
                    "settleMs": 3000,
                    "timeoutMs": 90_000,
                    "outDir": str(tmp_path),
                    "screenshot": str(artifacts_dir / "console-protocol.png"),
                    "partialScreenshot": str(artifacts_dir / "console-protocol-partial.png"),
                },
                timeout=240,
            )
            bot_out, bot_err = bot.communicate(timeout=120)
        finally:
            if bot.poll() is None:
                bot.kill()
                bot.wait()
    assert "SENT " in bot_out, f"the scripted transcriber failed:\n{bot_err[-3000:]}"
    assert "error" not in result, result.get("error")
    assert not no_page_errors(result), result["console"]
    # Token mode: the page asked for the access key before it could list rooms, then connected with it.
    assert result["initial"]["accessShown"] and result["initial"]["errorTitle"] == "Access key required"
    assert result["afterConnect"]["stateAttr"] == "connected"
    assert result["afterConnect"]["state"] == f"Connected to {room}"
    assert result["afterConnect"]["identity"].startswith("web-tester-")
    final = result["final"]
    assert final["transcriber"] == "present (livenexus-agent)"
    finals = final["finals"]
    got = [(f["segmentId"], f["text"], f["sources"], f["latency"], f["speaker"]) for f in finals]
    assert got == [
        ("seg-a", "hello world how are you", "data stream", "432 ms", "Tester (you)"),
        ("seg-b", "second segment from data first", "data stream", "250 ms", "alice"),
        ("seg-c", "third segment only on the text stream", "stream", "–", "Tester (you)"),
        ("seg-d", "fourth segment only as data", "data", "300 ms", "Tester (you)"),
    ], result
    assert all(HHMMSS.match(f["time"]) for f in finals)
    assert final["live"] == []
    # The forgers' four messages (two participants, both paths) were counted, not shown.
    assert final["ignored"] == 4, result["console"]
    assert "livenexus-agent" in final["trustNote"] and "ignored" in final["trustNote"]
    # The live line showed the agreed prefix and the changing tail apart, from either path.
    partials = {(p["segmentId"], p["stable"], p["unstable"]) for p in result["partialsSeen"]}
    assert {
        ("seg-a", "hello", " wor"),
        ("seg-a", "hello", " world how"),
        ("seg-a", "hello world", " how are"),
    } <= partials
    assert ("seg-a", "hello", " world how are you doing") not in partials  # the late partial was dropped
    assert all(p["speaker"] == "Tester (you)" for p in result["partialsSeen"] if p["segmentId"] == "seg-a")
    check_export(result)
    assert result["a11y"] == {"finalsLive": "polite", "unlabelled": []}
    assert result["meterMax"] > 0.2, "the level meter never moved with Chromium's fake microphone beeping"
    assert result["afterDisconnect"]["stateAttr"] == "disconnected"
    assert len(result["afterDisconnect"]["finals"]) == 4  # history survives a disconnect


def test_connect_errors(console_dist: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    """LiveKit unreachable, then the token rate limit: both shown as errors, the page stays usable."""
    from livenexus_dev.livekit_server import free_port

    dead = f"ws://127.0.0.1:{free_port()}"
    env = {"LIVEKIT_URL": dead, "LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s" * 40}
    with console_service(["--rooms", "demo", "--burst", "1", "--rate-per-minute", "1"], env) as svc:
        result = run_driver(
            {
                "consoleUrl": svc.url,
                "mode": "errors",
                "attempts": 2,
                "outDir": str(tmp_path),
                "screenshot": str(artifacts_dir / "console-error.png"),
            },
            timeout=180,
        )
    assert "error" not in result, result.get("error")
    assert not no_page_errors(result), result["console"]
    first, second = result["attempts"]
    assert first["errorTitle"] == "LiveKit server unreachable", first
    assert dead in first["errorDetail"]
    assert first["stateAttr"] == "disconnected" and first["identity"] == "–"
    assert second["errorTitle"] == "Too many attempts", second
    assert re.search(r"retry in \d+ s", second["errorDetail"]), second["errorDetail"]
    assert "s" * 40 not in json.dumps(result)


@pytest.mark.livekit
def test_denied_microphone(console_dist: Path, livekit_server: Any, tmp_path: Path) -> None:
    """Without microphone permission the visitor still joins (to read) and is told why nothing is sent."""
    with console_service(["--rooms", "denied"], lk_env(livekit_server)) as svc:
        result = run_driver({"consoleUrl": svc.url, "mode": "denied-mic", "outDir": str(tmp_path)}, timeout=120)
    assert "error" not in result, result.get("error")
    final = result["final"]
    assert final["stateAttr"] == "connected"
    assert final["errorTitle"] == "Microphone permission denied", final
    assert final["meter"] == 0


@pytest.mark.livekit
def test_read_only_console(console_dist: Path, livekit_server: Any, tmp_path: Path) -> None:
    """With --read-only the visitor joins to read: no microphone is published, so nothing is refused either."""
    with console_service(["--rooms", "read-only", "--read-only"], lk_env(livekit_server)) as svc:
        result = run_driver({"consoleUrl": svc.url, "mode": "read-only", "outDir": str(tmp_path)}, timeout=120)
    assert "error" not in result, result.get("error")
    assert not no_page_errors(result), result["console"]
    final = result["final"]
    assert final["stateAttr"] == "connected" and not final["errorShown"], final
    assert final["meter"] == 0 and "Read-only" in final["micHelp"]
    assert not final["accessShown"]


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send the quarterly report to the finance team by Friday.",
    "Live transcription runs on ordinary processors in the cluster.",
]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.mark.livekit
@pytest.mark.model
@pytest.mark.slow
def test_speech_end_to_end(console_dist: Path, livekit_server: Any, artifacts_dir: Path, tmp_path: Path) -> None:
    """Speech from Chromium's fake microphone → LiveKit → `livenexus-worker run` → transcripts on the page."""
    if importlib.util.find_spec("livenexus_worker.room.agent") is None:
        pytest.skip("livenexus_worker.room.agent (the LiveKit agent) is not in this tree yet")
    from livenexus_dev.livekit_server import free_port
    from livenexus_dev.tts import conversation, write_wav
    from livenexus_worker.inference.textnorm import wer

    wav = write_wav(tmp_path / "speech.wav", conversation(SENTENCES, gap_s=1.5, lead_s=3.0))
    room = "console-e2e"
    metrics_port = free_port()
    worker_env = {
        **os.environ,
        **lk_env(livekit_server),
        "LIVENEXUS_ROOM": room,
        "LIVENEXUS_METRICS_PORT": str(metrics_port),
        "LIVENEXUS_METRICS_HOST": "127.0.0.1",
        "LIVENEXUS_TIERS": json.dumps(
            [
                {"model": "base", "computeType": "int8", "beamSize": 5, "partialIntervalMs": 250},
                {"model": "base", "computeType": "int8", "beamSize": 1, "partialIntervalMs": 600},
            ]
        ),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "livenexus_worker.cli", "run"], env=worker_env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: _ready(metrics_port) or worker.poll() is not None, 180, "the worker's /readyz")
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        with console_service(["--rooms", room], lk_env(livekit_server)) as svc:
            result = run_driver(
                {
                    "consoleUrl": svc.url,
                    "room": room,
                    "name": "Speaker",
                    "mode": "transcribe",
                    "wav": str(wav),
                    "minFinals": len(SENTENCES),
                    "settleMs": 6000,
                    "timeoutMs": 150_000,
                    "outDir": str(tmp_path),
                    "screenshot": str(artifacts_dir / "console.png"),
                    "partialScreenshot": str(artifacts_dir / "console-partial.png"),
                },
                timeout=400,
            )
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert "error" not in result, f"{result.get('error')}\nworker log:\n{worker_log}"
    assert not no_page_errors(result), result["console"]
    finals = result["final"]["finals"]
    hypothesis = " ".join(f["text"] for f in finals)
    score = wer(" ".join(SENTENCES), hypothesis)
    print(f"console e2e: {len(finals)} finals, WER {score:.3f}: {hypothesis!r}")
    print("latencies:", [f["latency"] for f in finals], "sources:", [f["sources"] for f in finals])
    assert finals, f"no finals on the page\nworker log:\n{worker_log}"
    assert score <= 0.35, f"WER {score:.3f}: {hypothesis!r}"
    ids = [f["segmentId"] for f in finals]
    assert len(ids) == len(set(ids)), "a segment was printed twice"
    assert all(f["speaker"] == "Speaker (you)" for f in finals), finals
    assert all(HHMMSS.match(f["time"]) for f in finals)
    assert result["partialsSeen"], "no partial was ever shown"
    assert result["meterMax"] > 0.2
    check_export(result)
