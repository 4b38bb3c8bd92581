"""Stage tracing through a real livekit-server (LIVENEXUS_TRACE_STAGES=1): the final's data message carries
every worker stage, from the frame that held the speaker's last voiced audio to the start of publishing, in
causal order, and the frame it names is one the bot sent."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from livenexus_dev.demo.bots import Listener, SpeakerBot
from livenexus_dev.livekit_server import LiveKitServer
from livenexus_worker.core import stages

from .agentkit import ALICE, trim, wait_ready
from .conftest import start_agent

pytestmark = [pytest.mark.livekit, pytest.mark.model]

ROOM = "stage-tests"


async def test_a_traced_final_carries_its_stages_in_order(livekit_server: LiveKitServer,
                                                          speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    agent = start_agent(livekit_server, ROOM, LIVENEXUS_TRACE_STAGES="1", LIVENEXUS_FRAME_MS="10")
    lk = livekit_server
    try:
        await wait_ready(agent)
        listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM)
        alice = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, ROOM, "alice")
        try:
            await alice.silence(1.0)
            began = asyncio.get_running_loop().time()  # the loop's clock is time.monotonic()
            sent = await alice.play(trim(speak(speech_cache, ALICE)))
            tail = asyncio.create_task(alice.silence(2.0))
            finals = await listener.wait_finals(1, 20, via="data")
            await tail
        finally:
            await alice.close()
            await listener.close()
    finally:
        agent.shutdown()
        agent.service.close()
        stages.enable(False)  # process-wide: later tests in this process run untraced
    for final in finals:  # every final, a commit's too, carries every stage in causal order
        t = final.attributes["trace"]
        assert set(t) == {"recv", "push", "end", "queued", "start", "decoded", "emit", "submit", "pub"}
        assert t["recv"] <= t["push"] <= t["end"] <= t["emit"] <= t["submit"] <= t["pub"] <= final.at
        assert t["queued"] <= t["start"] <= t["decoded"] <= t["emit"]
        # Its last voiced audio came in a frame alice sent: after she began, and not long after her last one
        # (the jitter buffer of a loaded machine holds up to ~2 s).
        assert began < t["recv"] < sent + 5, (began, sent, t)
    partials = [h for h in listener.heard if h.via == "data" and not h.final]
    assert partials and all({"recv", "push", "emit", "pub"} <= set(h.attributes["trace"]) for h in partials)
