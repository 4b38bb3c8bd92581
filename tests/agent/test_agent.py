"""The worker as a LiveKit agent against a real livekit-server: attribution, publishing, reconnects, auth."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import numpy as np
import pytest

from livenexus_common.cli import EXIT_AUTH
from livenexus_dev.demo.bots import Listener, SpeakerBot
from livenexus_dev.livekit_server import LiveKitServer
from livenexus_worker.inference.textnorm import wer
from livenexus_worker.room.agent import run_agent
from livenexus_worker.room.settings import WorkerSettings

from .agentkit import ALICE, BOB, agent_env, say, trim, wait_ready
from .conftest import RunningAgent

pytestmark = [pytest.mark.livekit, pytest.mark.model]

ROOM = "agent-tests"


async def test_listener_gets_text_streams_and_json(agent: RunningAgent, livekit_server: LiveKitServer,
                                                   speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    await wait_ready(agent)
    lk = livekit_server
    listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM)
    alice = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, ROOM, "alice")
    try:
        await alice.silence(1.0)  # subscription and the first frames settle
        end_of_speech = await alice.play(trim(speak(speech_cache, ALICE)))
        silence = asyncio.create_task(alice.silence(2.0))
        await listener.wait_finals(1, 20, via="data")
        await silence
        # The sentence may come as two finals: a pause inside it may be committed while alice goes on (commit in
        # speech, a clause from 3 s on), which a busy machine's partials confirm more or less often.
        finals = await listener.wait_finals(1, 5, via="data", speaker="alice")
        await listener.wait_finals(len(finals), 10, via="stream", speaker="alice")
    finally:
        await alice.close()
        await listener.close()
    assert 1 <= len(finals) <= 3
    final = finals[-1]
    latency_ms = (final.at - end_of_speech) * 1000
    said = " ".join(f.text for f in finals)
    print(f"publisher end of speech → listener's last final: {latency_ms:.0f} ms; finals: {[f.text for f in finals]}")
    assert {f.speaker for f in finals} == {"alice"}
    # Base hears espeak's "meeting starts at nine" through Opus as "meetings start at time" in most runs (7 runs:
    # WER 0.08-0.31); accuracy is the benchmarks' to measure. 0.4 still names the sentence: BOB's is 0.85 away.
    assert wer(ALICE, said) <= 0.4 < wer(BOB, said)
    for f in finals:
        streams = [h for h in listener.heard if h.via == "stream" and h.segment_id == f.segment_id]
        assert streams and streams[-1].final and streams[-1].text == f.text
        attrs = streams[-1].attributes
        assert attrs["lk.transcribed_track_id"] == alice.track_sid
        assert attrs["lk.transcription_final"] == "true"
        assert {h.speaker for h in streams} == {"alice"}, "text streams must be sent on behalf of the speaker"
        assert f.attributes["latencyMs"] > 0
        late = [h for h in listener.heard if h.via == "data" and h.segment_id == f.segment_id and not h.final
                and h.at > f.at]
        assert not late, "a partial arrived after its final"
    partials = [h for h in listener.heard if h.via == "data" and h.speaker == "alice" and not h.final]
    assert partials, "expected partials while alice was speaking"


async def test_two_speakers_at_once_are_attributed(agent: RunningAgent, livekit_server: LiveKitServer,
                                                   speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    await wait_ready(agent)
    lk = livekit_server
    listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM, "listener2")
    alice = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, ROOM, "alice2")
    bob = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, ROOM, "bob2")
    # A participant with no audio that only sends data must not disturb anything.
    chatty = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM, "data-only")
    try:
        await chatty.room.local_participant.publish_data(b"hello", reliable=True, topic="chat")
        await asyncio.gather(alice.silence(1.0), bob.silence(1.0))
        await asyncio.gather(alice.play(trim(speak(speech_cache, ALICE))), bob.play(trim(speak(speech_cache, BOB))))
        tail = asyncio.gather(alice.silence(3.0), bob.silence(3.0))
        await listener.wait_finals(1, 25, speaker="alice2")
        await listener.wait_finals(1, 25, speaker="bob2")
        await tail
        # A sentence may be committed in two finals (a pause inside it read as a sentence end): judge the text
        # each speaker's finals say together, and that nothing of one speaker is attributed to the other.
        a, b = listener.finals(speaker="alice2"), listener.finals(speaker="bob2")
    finally:
        for p in (alice, bob, chatty, listener):
            await p.close()
    print(f"alice: {[f.text for f in a]}  bob: {[f.text for f in b]}")
    assert 1 <= len(a) <= 2 and 1 <= len(b) <= 2
    alice_said, bob_said = " ".join(f.text for f in a), " ".join(f.text for f in b)
    # This test is about attribution: each speaker's own words, not the other's. Two overlapping voices through
    # Opus on a loaded 2-core machine can push the worker to a lower rung, so accuracy gets a loose bound here
    # (tests/worker/streaming/test_runtime.py bounds it tightly); a swapped or merged speaker scores near 1.0.
    assert wer(ALICE, alice_said) <= 0.5 and wer(BOB, bob_said) <= 0.5
    assert wer(ALICE, bob_said) > 0.7 and wer(BOB, alice_said) > 0.7


async def test_wrong_secret_fails_fast(livekit_server: LiveKitServer) -> None:
    settings = WorkerSettings.from_env(agent_env(livekit_server, ROOM, LIVEKIT_API_SECRET="w" * 40,
                                                 LIVENEXUS_METRICS_PORT="0"))

    class NoModel:  # the auth check must not wait for (or need) a model
        runtime = None
        metrics = __import__("livenexus_worker.ops.metrics", fromlist=["WorkerMetrics"]).WorkerMetrics()

    t0 = time.monotonic()
    code = await run_agent(settings, NoModel(), asyncio.Event())  # type: ignore[arg-type]
    assert code == EXIT_AUTH
    assert time.monotonic() - t0 < 15


async def test_reconnects_after_server_restart(agent: RunningAgent, livekit_server: LiveKitServer,
                                               speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    await wait_ready(agent)
    connects = agent.result, agent.service.metrics
    livekit_server.restart()  # SIGKILL + start on the same ports and keys
    await wait_ready(agent, timeout=60)
    finals = await say(livekit_server, ROOM, "carol", trim(speak(speech_cache, BOB)), "listener3", lead_s=1.5,
                       tail_s=2.5)
    assert connects
    assert 1 <= len(finals) <= 2 and wer(BOB, " ".join(f.text for f in finals)) <= 0.35
    body = urllib.request.urlopen(agent.metrics_url + "/metrics", timeout=5).read().decode()
    assert "livenexus_livekit_reconnects_total 0.0" not in body
