"""Worker faults against the real livekit-server and the real model (issue 13): duplicate identity, hostile
data, a crowd of noisy participants, the server restarting mid-speech, SIGTERM mid-utterance.

One server for the session, one in-process agent with small caps for the module; the SIGTERM test runs the
real `livenexus-worker run` process, because the signal path and the exit are what it is about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from livenexus_dev.demo.bots import Listener, SpeakerBot
from livenexus_dev.livekit_server import LiveKitServer
from livenexus_worker.inference.textnorm import wer
from livenexus_worker.room.agent import AgentOptions, RoomAgent
from livenexus_worker.room.backoff import BackoffOptions
from livenexus_worker.room.settings import WorkerSettings

from .agentkit import ALICE, BOB, agent_env, say, trim, wait_ready, worker_process
from .conftest import RunningAgent, start_agent
from .faultkit import LightService, LoopLag, NoiseCrowd, send_garbage

pytestmark = [pytest.mark.livekit, pytest.mark.model]

ROOM = "faults"
MAX_STREAMS, MAX_SPEAKERS = 4, 2
# Joining costs seconds per participant on a loaded 2-core machine (each join is announced to everyone in the
# room; 50 took ~100 s there): 12 participants, three times the stream cap, keep the suite within minutes.
CROWD_PROCESSES, CROWD_PER_PROCESS = 2, 6
LONG = ("When the quarterly numbers finally arrive we will sit down together and go through every single line "
        "of the budget before anyone makes a decision about the new hires")


@pytest.fixture(scope="module")
def fault_agent(livekit_server: LiveKitServer) -> Iterator[RunningAgent]:
    a = start_agent(livekit_server, ROOM, LIVENEXUS_MAX_STREAMS=str(MAX_STREAMS),
                    LIVENEXUS_MAX_SPEAKERS=str(MAX_SPEAKERS), LIVENEXUS_POD_NAME="faults-pod")
    yield a
    a.shutdown()
    a.service.close()


def settings_for(server: LiveKitServer, room: str, **env: str) -> WorkerSettings:
    return WorkerSettings.from_env(agent_env(server, room, **env))


async def run_for(agents: list[RoomAgent], seconds: float, stagger_s: float = 1.0) -> None:
    """Run the agents together for ``seconds``, each started ``stagger_s`` after the previous (as pods are)."""
    stop = asyncio.Event()
    tasks = []
    for a in agents:
        tasks.append(asyncio.create_task(a.run(stop)))
        await asyncio.sleep(stagger_s)
    await asyncio.sleep(seconds)
    stop.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 30) == [0] * len(agents)


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` (the agent runs on another thread) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def partial_words(listener: Listener, speaker: str) -> int:
    """Words of the longest partial ``speaker`` has had so far."""
    return max((len(h.text.split()) for h in listener.heard if h.speaker == speaker and not h.final), default=0)


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_duplicate_identity_backs_off_instead_of_kicking_in_a_loop(livekit_server: LiveKitServer) -> None:
    # A misconfiguration (the same LIVENEXUS_IDENTITY twice): LiveKit lets the newer session replace the older.
    s = settings_for(livekit_server, "dup-identity", LIVENEXUS_IDENTITY="livenexus-agent-same")
    services = [LightService(), LightService()]
    agents = [RoomAgent(s, svc, AgentOptions(backoff=BackoffOptions(initial_s=0.5, max_s=30))) for svc in services]
    try:
        await run_for(agents, 4.0)  # 5 s from the first start
    finally:
        for svc in services:
            svc.close()
    connects = [a.connects for a in agents]
    reasons = [r for a in agents for r in a.disconnect_reasons]
    print(f"connects in 5 s with one identity: {connects}; reasons {reasons}")
    # Before: ~42 connects in 3 s (the delay reset on every connect, and a drop reconnected at once).
    assert sum(connects) <= 5
    assert "DUPLICATE_IDENTITY" in reasons
    body = services[0].metrics.exposition().decode() + services[1].metrics.exposition().decode()
    assert 'livenexus_livekit_disconnects_total{reason="DUPLICATE_IDENTITY"}' in body


async def test_two_workers_of_one_room_keep_their_own_identities(livekit_server: LiveKitServer) -> None:
    # Two pods of one room (a restart overlapping the old pod): distinct default identities, nobody is kicked.
    services = [LightService(), LightService()]
    agents = [RoomAgent(settings_for(livekit_server, "two-pods", LIVENEXUS_POD_NAME=pod), svc)
              for pod, svc in zip(("room-7d9f-a", "room-7d9f-b"), services, strict=True)]
    try:
        await run_for(agents, 2.0)
    finally:
        for svc in services:
            svc.close()
    assert [a.settings.identity for a in agents] == ["livenexus-agent-room-7d9f-a", "livenexus-agent-room-7d9f-b"]
    assert [a.connects for a in agents] == [1, 1] and not any(a.disconnect_reasons for a in agents)


async def test_a_noisy_crowd_stays_within_the_caps(fault_agent: RunningAgent, livekit_server: LiveKitServer) -> None:
    await wait_ready(fault_agent)
    ra = fault_agent.room_agent
    rss0 = rss_mb()
    crowd = NoiseCrowd(livekit_server, ROOM, CROWD_PROCESSES, CROWD_PER_PROCESS)
    try:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, crowd.wait_joined, 150)
        lag = LoopLag(fault_agent.loop).start()
        assert ra.tracks is not None
        tracks = ra.tracks
        # Every track is either transcribed or waiting (the server announces them at its own pace).
        assert await until(lambda: tracks.streams + tracks.waiting >= crowd.size, 120), \
            f"{tracks.streams} + {tracks.waiting} of {crowd.size} tracks seen"
        samples: list[tuple[int, int, int]] = []
        rss: list[float] = []
        for _ in range(4):  # 4 x 2 s with everyone making noise
            await asyncio.sleep(2.0)
            samples.append((tracks.streams, fault_agent.service.runtime.stream_count(), tracks.peak_speaking))
            rss.append(rss_mb())
        assert await until(lambda: tracks.speech_over_cap_s > 0.5, 30), "speech beyond the speaker cap is counted"
        waiting_before = tracks.waiting
        left = await loop.run_in_executor(None, crowd.leave, 0)  # slots free up: waiting tracks take them
        assert await until(lambda: tracks.waiting <= waiting_before - left + MAX_STREAMS and
                           tracks.streams == MAX_STREAMS and tracks.waiting < waiting_before, 60)
        after_leave = (tracks.streams, tracks.waiting)
        p50, p99 = lag.stop()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, crowd.close)
        # The next tests speak in this room: the crowd must be gone first, or it still holds the speaker slots.
        await until(lambda: ra.tracks is not None and ra.tracks.streams == 0, 60)
    print(f"{crowd.size} noisy participants: (tracks, streams, peak speaking) {samples}; refused {tracks.refused}; "
          f"speech over cap {tracks.speech_over_cap_s:.1f} s; {left} left: waiting {waiting_before} -> "
          f"{after_leave[1]}; RSS {rss0:.0f} -> {', '.join(f'{r:.0f}' for r in rss)} MiB; agent loop lag p50 "
          f"{p50:.1f} ms p99 {p99:.1f} ms")
    assert all(t <= MAX_STREAMS and s <= MAX_STREAMS and p <= MAX_SPEAKERS for t, s, p in samples)
    assert samples[-1][0] == MAX_STREAMS, "the cap is used, not undershot"
    assert tracks.refused >= crowd.size - MAX_STREAMS
    assert after_leave[0] == MAX_STREAMS and after_leave[1] < waiting_before
    assert rss[-1] - rss[1] < 150, "memory keeps growing under a steady load"
    body = urllib.request.urlopen(fault_agent.metrics_url + "/metrics", timeout=5).read().decode()
    assert "livenexus_streams_refused_total 0.0" not in body
    assert "livenexus_speech_over_cap_seconds_total 0.0" not in body
    assert fault_agent.thread.is_alive()


async def test_malformed_data_is_ignored_and_transcription_goes_on(fault_agent: RunningAgent,
                                                                   livekit_server: LiveKitServer,
                                                                   speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    await wait_ready(fault_agent)
    lk = livekit_server
    connects = fault_agent.room_agent.connects
    listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM, "f-listener")
    hostile = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM, "hostile")
    dave = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, ROOM, "dave")
    try:
        sent = await send_garbage(hostile.room)
        await dave.silence(1.0)
        await dave.play(trim(speak(speech_cache, ALICE)))
        tail = asyncio.create_task(dave.silence(2.5))
        await listener.wait_finals(1, 25, speaker="dave")
        await tail
        finals = listener.finals(speaker="dave")  # a sentence may be committed in two finals
    finally:
        for p in (dave, hostile, listener):
            await p.close()
    print(f"{sent} hostile messages; dave: {[f.text for f in finals]}")
    # Hostile data is judged here, not accuracy (a loaded machine may have stepped the tier down).
    assert finals and wer(ALICE, " ".join(f.text for f in finals)) <= 0.5
    assert fault_agent.room_agent.connects == connects, "hostile data must not cost the connection"


async def test_server_restart_mid_speech_resumes_without_duplicate_ids(fault_agent: RunningAgent,
                                                                      livekit_server: LiveKitServer,
                                                                      speech_cache: dict[str, np.ndarray],
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import speak

    caplog.set_level(logging.DEBUG, logger="livenexus_worker.streaming.pipeline")

    await wait_ready(fault_agent)
    lk, ra = livekit_server, fault_agent.room_agent
    pub = ra.publisher
    assert pub is not None
    published: list[tuple[str, str, bool, bool, float]] = []  # speaker, segment, final, delivered, when
    real = pub.publish

    async def recording(event, track_sid, room):  # type: ignore[no-untyped-def]
        ok = await real(event, track_sid, room)
        published.append((event.speaker, event.segment_id, event.is_final, ok, time.monotonic()))
        return ok

    pub.publish = recording  # type: ignore[method-assign]
    listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM, "r-listener")
    erin = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, ROOM, "erin")
    try:
        await erin.silence(1.0)
        speech = asyncio.create_task(erin.play(trim(speak(speech_cache, LONG))))
        assert await until(lambda: partial_words(listener, "erin") >= 3, 20), "no partial before the restart"
        erin_sid = erin.track_sid
        restarted_at = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, lk.restart)  # SIGKILL + start, mid-utterance
        speech.cancel()
    finally:
        for p in (erin, listener):
            with __import__("contextlib").suppress(Exception):
                await asyncio.wait_for(p.close(), 5)
    await wait_ready(fault_agent, timeout=60)
    finals = await say(lk, ROOM, "frank", trim(speak(speech_cache, BOB)), "r-listener2", lead_s=1.5, tail_s=2.5)
    # The SDK may re-join by itself (no "disconnected"), or the agent reconnects: either way erin's open
    # utterance ended with her track, and its final must go out once a connection is back.
    cut = [seg for who, seg, f, ok, t in published if who == "erin" and f and ok and t > restarted_at]
    final_ids = [seg for _who, seg, f, ok, _t in published if f and ok]
    print(f"erin's finals published after the restart: {len(cut)}; frank: {[f.text for f in finals]}; "
          f"disconnects {ra.disconnect_reasons}; publish failures {pub.failures}; erin: "
          f"{[(seg, f, ok, round(t - restarted_at, 1)) for who, seg, f, ok, t in published if who == 'erin']}")
    # The guards may reject a decode of audio cut mid-word (low log-probability on a starved machine): then the
    # worker says so, and the utterance was still ended and judged; otherwise its final went out.
    judged = any(erin_sid in r.getMessage() and ("dropped utterance" in r.getMessage() or "a click" in r.getMessage())
                 for r in caplog.records)
    assert cut or judged, "the utterance the restart cut got its final, published once the worker was back"
    # Recovery is judged here, not accuracy (a loaded machine may have stepped the tier down): a loose bound.
    assert finals and wer(BOB, " ".join(f.text for f in finals)) <= 0.5
    assert len(final_ids) == len(set(final_ids)), "a segment id was reused"


async def test_sigterm_mid_utterance_publishes_the_final_then_exits(livekit_server: LiveKitServer,
                                                                    speech_cache: dict[str, np.ndarray],
                                                                    tmp_path: Path) -> None:
    from tests.conftest import speak

    lk, room = livekit_server, "sigterm"
    log = tmp_path / "worker.log"
    proc, metrics = worker_process(lk, room, log)
    try:
        await wait_ready(metrics, timeout=90)
        listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, room, "t-listener")
        gina = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, room, "gina")
        await gina.silence(1.0)
        sentence = trim(speak(speech_cache, ALICE))
        tail = np.zeros(3 * 16000, dtype=np.int16)  # silence after it, as a microphone sends: the VAD ends it
        speech = asyncio.create_task(gina.play(np.concatenate([sentence, tail])))
        deadline = time.monotonic() + 20

        def words() -> int:  # of gina's latest partial: a few words make an utterance worth a final
            return max((len(h.text.split()) for h in listener.heard if h.speaker == "gina" and not h.final), default=0)

        while words() < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert words() >= 3, "no partial: the utterance never opened"
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        def wait_exit() -> tuple[int, float]:
            return proc.wait(40), time.monotonic()

        code, exited_at = await asyncio.get_running_loop().run_in_executor(None, wait_exit)
        await asyncio.sleep(1.0)  # anything the worker published before leaving has reached the listener
        finals = listener.finals(speaker="gina")
        heard = list(listener.heard)
        speech.cancel()
        await gina.close()
        await listener.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    print(f"SIGTERM → exit {exited_at - sigterm_at:.1f} s; finals {[f.text for f in finals]}; "
          f"{[ln for ln in text.splitlines() if 'shut down in' in ln]}")
    assert code == 0
    assert exited_at - sigterm_at < 30, "longer than the pod's default grace period"
    assert "shut down in" in text and "0 final(s) unpublished" in text
    # Nothing lost silently: each utterance gina's partials showed (the one open at SIGTERM among them) ends in a
    # final the listener got before the worker left, or in a log line saying why it has none (the guards may
    # reject a decode of audio cut mid-word on a starved machine). Under load the sentence may also have ended
    # by itself before the signal landed; the invariant holds either way.
    shown = {h.segment_id for h in heard if h.speaker == "gina" and not h.final}
    got = {f.segment_id for f in finals}
    assert shown, "no partial: the utterance never opened"
    unexplained = sorted(seg for seg in shown if seg not in got and f"utterance {seg}" not in text)
    assert not unexplained, f"utterances with neither a final nor a reason: {unexplained}"
    assert all(f.at <= exited_at for f in finals), "a final arrived after the worker left"
    if not [f for f in finals if f.at > sigterm_at]:
        return
    # This test is about the shutdown path, not accuracy: on a starved machine the pipeline may cut the sentence
    # at a pause and its guards reject a part (logged above). What was published must be gina's sentence.
    said = {w.strip(".,%").lower() for f in finals for w in f.text.split()}
    assert said & {w.strip(".").lower() for w in ALICE.split()}, f"unrelated text: {said}"
