"""Scaffolding shared by the agent suites (test_agent.py, test_faults.py): a worker's environment, waiting for its
readiness, and one speaker saying a sentence while a listener collects the finals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np

from livenexus_dev.demo.bots import Heard, Listener, SpeakerBot
from livenexus_dev.livekit_server import LiveKitServer, free_port

# Base hears espeak's "Our quarterly revenue grew" as "I'd orderly rent a doobrub" in ~1 run of 4 through
# LiveKit (measured on the code before and after this change alike): that tested the model, not the agent.
ALICE = "The release meeting starts at nine tomorrow morning in the large conference room."
BOB = "The new warehouse in the north will open at the start of spring."
TWO_TIERS = '[{"model": "base", "beamSize": 5}, {"model": "base", "beamSize": 1}]'
"""The agents' ladder: beam 5, then beam 1 (the same model, loaded once)."""


def agent_env(server: LiveKitServer, room: str, **env: str) -> dict[str, str]:
    """A worker's environment for ``room`` on ``server`` (its URL and keys); ``env`` adds or overrides."""
    return {"LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": server.api_key, "LIVEKIT_API_SECRET": server.api_secret,
            "LIVENEXUS_ROOM": room, **env}


def worker_process(server: LiveKitServer, room: str, log: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """The real `livenexus-worker run` in ``room`` (the two-tier ladder, output into ``log``, metrics on a free
    loopback port); ``env`` adds or overrides. Returns the process and its metrics base URL (for wait_ready)."""
    port = free_port()
    full = {**os.environ, **agent_env(server, room, LIVENEXUS_METRICS_PORT=str(port),
                                      LIVENEXUS_METRICS_HOST="127.0.0.1", LIVENEXUS_TIERS=TWO_TIERS, **env)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "livenexus_worker.cli", "-v", "run"], env=full, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


class Served(Protocol):
    @property
    def metrics_url(self) -> str: ...


async def wait_ready(agent: Served | str, timeout: float = 30) -> None:
    """Until the worker (an in-process agent, or the base URL of a worker process's metrics server) answers
    /readyz with 200: joined, model loaded."""
    url = agent if isinstance(agent, str) else agent.metrics_url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("agent never became ready")


def trim(audio: np.ndarray) -> np.ndarray:
    """Cut the TTS engine's leading and trailing silence."""
    loud = np.nonzero(np.abs(audio) > 300)[0]
    return audio[loud[0] : loud[-1] + 1]


async def say(server: LiveKitServer, room: str, speaker: str, audio: np.ndarray, listener: str, *,
              lead_s: float, tail_s: float, timeout: float = 25) -> list[Heard]:
    """``speaker`` joins ``room`` and says ``audio`` between ``lead_s`` and ``tail_s`` of silence while
    ``listener`` listens; returns every final attributed to the speaker (a sentence may be committed in two)."""
    lk = server
    heard = await Listener.join(lk.url, lk.api_key, lk.api_secret, room, listener)
    bot = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, room, speaker)
    try:
        await bot.silence(lead_s)
        await bot.play(audio)
        tail = asyncio.create_task(bot.silence(tail_s))
        await heard.wait_finals(1, timeout, speaker=speaker)
        await tail
        return heard.finals(speaker=speaker)
    finally:
        await bot.close()
        await heard.close()
