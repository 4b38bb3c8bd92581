"""The audio tracks of one connection: which ones are transcribed, and how their frames reach the pipelines.

Two caps bound the work any room can make a worker do. ``max_streams`` tracks are transcribed at once; a
track beyond it is unsubscribed (no decoding of its Opus either), counted and logged, and subscribed again
when a slot frees. ``max_speakers`` streams may be inside an utterance at once; while that many speak, the
others' audio reaches their pipelines as silence (their clocks keep running) and their voiced audio is
counted in seconds and logged, never dropped unseen.

Frames are handled on one thread of their own, not on the event loop. Measured: a 30 ms frame costs ~17 µs in
a silent stream but ~0.5 ms on average (1.3 ms over some 5 s windows) in a long noisy utterance, and on a
loaded machine the agent's loop stalled 0.5-0.7 s inside ``push`` with a crowd in the room; a starved loop
delays publishing and can make the LiveKit FFI give up on the room (it panics when the loop does not answer
in time). One thread keeps the speaker cap exact (every push and its check happen in order there). Frames
reach it in batches through a bounded per-track buffer (``buffer_ms``, 3 s; past it the oldest frame is
dropped, counted and logged). LiveKit delivers 30 ms frames by default (LIVENEXUS_FRAME_MS): measured with
benchmarks/transport.py, 10 ms frames bring the last voiced audio ~50 ms sooner (p50, beside an idle reference
receiver) for ~0.015 core more per silent track (4 tracks: 0.11-0.13 → 0.17-0.19 cores).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc

from livenexus_worker.core import stages
from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.room.frame_feed import FrameFeed as _Feed
from livenexus_worker.room.frame_feed import FrameStamps as _FrameStamps
from livenexus_worker.room.frame_feed import log_jitter_buffer
from livenexus_worker.room.publisher import TranscriptPublisher
from livenexus_worker.room.room_metrics import RoomMetrics
from livenexus_worker.streaming.pipeline import StreamPipeline
from livenexus_worker.streaming.runtime import Runtime
from livenexus_worker.streaming.vad import WebRtcVad

log = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0  # cap warnings a hostile room could otherwise trigger per frame or per track


@dataclass(frozen=True)
class TrackLimits:
    """How much one room may ask of the worker."""

    max_streams: int = 32
    """Audio tracks transcribed at once (LIVENEXUS_MAX_STREAMS)."""
    max_speakers: int = 8
    """Streams inside an utterance at once (LIVENEXUS_MAX_SPEAKERS)."""
    max_waiting: int = 1024
    """Refused tracks remembered for a free slot; beyond it they stay unsubscribed until re-published."""
    frame_ms: int = 30
    """Frame length asked of LiveKit's AudioStream (LIVENEXUS_FRAME_MS: 10, 20 or 30)."""
    buffer_ms: int = 3000
    """Audio LiveKit buffers per track for us, and the frames thread may fall behind by; past it the oldest
    frame is dropped (counted, logged). Held in time, not frames: 100 frames were 3 s at 30 ms but 1 s at 10."""
    trace_stages: bool = False
    """LIVENEXUS_TRACE_STAGES: stamp each frame's arrival and push, and every transcript's stages."""
    traced_frames: int = 1024
    """Frames whose stamps are kept per track while tracing (the newest; ~30 s of 30 ms frames)."""

    @property
    def stream_capacity(self) -> int:
        """``buffer_ms`` in frames of ``frame_ms``."""
        return max(1, self.buffer_ms // max(1, self.frame_ms))


@dataclass
class _Track:
    task: asyncio.Task[None]
    pipe: StreamPipeline | None = None


class _Throttled:
    """One warning per ``_LOG_EVERY_S`` with the count of what happened since the last one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock, self._last, self._since = clock, -_LOG_EVERY_S, 0

    def warn(self, msg: str, *args: object) -> None:
        self._since += 1
        now = self._clock()
        if now - self._last >= _LOG_EVERY_S:
            log.warning(msg + " (%d time(s) since the last such message)", *args, self._since)
            self._last, self._since = now, 0


class TrackSet:
    """Subscribes, gates and consumes the audio tracks of one connected room."""

    def __init__(self, runtime: Runtime, publisher: TranscriptPublisher, metrics: object,
                 limits: TrackLimits | None = None) -> None:
        self.runtime = runtime
        self.publisher = publisher
        self.limits = limits or TrackLimits()
        self._metrics = metrics
        self._room_metrics = RoomMetrics.of(metrics)
        self._tracks: dict[str, _Track] = {}
        self._waiting: OrderedDict[str, rtc.RemoteTrackPublication] = OrderedDict()
        self._promoting: set[str] = set()
        self._gate_vad = WebRtcVad(runtime.options.pipeline.vad)
        self._frame = runtime.options.pipeline.vad.frame_samples
        self._frames = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livenexus-frames")
        if self.limits.trace_stages:
            stages.enable(True)  # process-wide: the pipelines stamp their events from now on
        self._closing = False  # shutting down: open utterances may end, no new one starts
        self._candidates: dict[str, int] = {}  # sid → quiet frames since its last voiced one (frames thread)
        vad = runtime.options.pipeline.vad
        self._release_ms = vad.hangover_ms + vad.frame_ms * 10  # longer than the VAD takes to start or end
        self._refused_log = _Throttled()
        self._over_cap_log = _Throttled()
        self._behind_log = _Throttled()
        self.frames_dropped = 0
        """Frames dropped because the frames thread fell ``stream_capacity`` frames behind (logged)."""
        self.refused = 0
        """Tracks refused at the stream cap (also counted in the metric)."""
        self.speech_over_cap_s = 0.0
        """Voiced seconds not transcribed at the speaker cap."""
        self.peak_speaking = 0
        """Most streams seen inside an utterance at once."""
        if self._room_metrics is not None:  # the latest track set is the one a worker runs
            self._room_metrics.streams.set_function(lambda: self.streams)
            self._room_metrics.streams_waiting.set_function(lambda: self.waiting)

    # ---- admission (event-loop callbacks) ------------------------------------------------------------
    def attach(self, room: rtc.Room) -> None:
        room.on("track_subscribed", self._on_subscribed)
        room.on("track_unsubscribed", self._on_unsubscribed)
        room.on("track_unpublished", self._on_unpublished)
        room.on("participant_disconnected", self._on_participant_left)
        room.on("track_muted", self._on_muted)
        for p in room.remote_participants.values():  # tracks subscribed before the handlers existed
            for pub in p.track_publications.values():
                if pub.track is not None and pub.subscribed:
                    self._on_subscribed(pub.track, pub, p)

    @property
    def streams(self) -> int:
        return len(self._tracks)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _on_subscribed(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO or pub.sid in self._tracks:
            return
        promoted = pub.sid in self._promoting
        self._promoting.discard(pub.sid)
        if not promoted and len(self._tracks) + len(self._promoting) >= self.limits.max_streams:
            self._refuse(pub, p.identity)
            return
        self._waiting.pop(pub.sid, None)
        entry = _Track(asyncio.get_running_loop().create_task(self._consume(track, pub.sid, p.identity)))
        self._tracks[pub.sid] = entry

    def _refuse(self, pub: rtc.RemoteTrackPublication, identity: str) -> None:
        self.refused += 1
        if self._room_metrics is not None:
            self._room_metrics.streams_refused.inc()
        self._refused_log.warn("track %s of %s not transcribed: %d tracks already are (LIVENEXUS_MAX_STREAMS); "
                               "it waits for a free slot", pub.sid, identity, len(self._tracks))
        if len(self._waiting) < self.limits.max_waiting:
            self._waiting[pub.sid] = pub
        pub.set_subscribed(False)  # stop receiving (and decoding) its audio at all

    def _on_unsubscribed(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if pub.sid in self._waiting:
            return  # our own refusal
        self._end(pub.sid)

    def _on_unpublished(self, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        self._waiting.pop(pub.sid, None)
        self._promoting.discard(pub.sid)
        self._end(pub.sid)

    def _on_participant_left(self, p: rtc.RemoteParticipant) -> None:
        for sid in list(p.track_publications):
            self._waiting.pop(sid, None)
            self._promoting.discard(sid)
            self._end(sid, promote=False)
        self._promote()

    def _on_muted(self, p: rtc.Participant, pub: rtc.TrackPublication) -> None:
        entry = self._tracks.get(pub.sid)
        if entry is not None and entry.pipe is not None:
            entry.pipe.flush()  # a mute ends the utterance: publish its final now

    def interrupted(self) -> None:
        """The connection is being resumed: no audio arrives meanwhile, so every open utterance ends here
        (its final is decoded now and published once the connection is back)."""
        for t in tuple(self._tracks.values()):
            if t.pipe is not None:
                self._frames.submit(t.pipe.flush)

    def resumed(self, room: rtc.Room) -> None:
        """The connection is back: tracks that vanished meanwhile (their participant left while we were
        away, with no event for it) end and free their slots."""
        present = {sid for p in room.remote_participants.values() for sid in p.track_publications}
        for sid in [sid for sid in self._tracks if sid not in present]:
            self._end(sid, promote=False)
        for sid in [sid for sid in self._waiting if sid not in present]:
            del self._waiting[sid]
        self._promote()

    def _end(self, sid: str, promote: bool = True) -> None:
        entry = self._tracks.pop(sid, None)
        if entry is not None:
            entry.task.cancel()  # the consumer's finally closes the stream: its final is still published
        if promote:
            self._promote()

    def _promote(self) -> None:
        while self._waiting and len(self._tracks) + len(self._promoting) < self.limits.max_streams:
            sid, pub = self._waiting.popitem(last=False)
            self._promoting.add(sid)
            try:
                pub.set_subscribed(True)
            except Exception as exc:  # the publication went away meanwhile
                self._promoting.discard(sid)
                log.debug("re-subscribing %s failed: %s", sid, exc)

    # ---- frames --------------------------------------------------------------------------------------
    def _speaking(self) -> int:
        # Called on the frames thread while the loop may add or remove tracks: copy first (atomic in C).
        in_utterance = {sid for sid, t in tuple(self._tracks.items()) if t.pipe is not None and t.pipe.in_utterance}
        return len(in_utterance | self._candidates.keys())

    def _gate(self, sid: str, pipe: StreamPipeline, pcm: np.ndarray, speaker: str) -> np.ndarray:
        """The frame a pipeline gets (frames thread): ``pcm``, or silence while the speaker cap is reached and
        it is not speaking yet (its voiced audio counted and logged).

        The pipeline's VAD needs several voiced frames before an utterance starts, so a stream that is given
        voiced audio holds a slot from its first voiced frame ("candidate") until it speaks or goes quiet
        again; otherwise several streams could start together past the cap."""
        if pipe.in_utterance:
            self._candidates.pop(sid, None)
            return pcm
        if self._closing:
            return np.zeros_like(pcm)
        n = self._frame
        voiced = sum(self._gate_vad.is_speech(pcm[i : i + n]) for i in range(0, pcm.shape[0] - n + 1, n))
        quiet = self._candidates.get(sid)
        if quiet is not None:
            quiet = 0 if voiced else quiet + 1
            if quiet * n * 1000 // SAMPLE_RATE > self._release_ms:
                del self._candidates[sid]
            else:
                self._candidates[sid] = quiet
            return pcm
        speaking = self._speaking()
        if not voiced:
            # The gate's VAD and the pipeline's can disagree on noise: at the cap, a frame the gate hears no voice
            # in still must not reach a stream without a slot, or its pipeline may start an utterance past the
            # cap (measured: 3 speaking with a cap of 2 under a noise flood).
            return pcm if speaking < self.limits.max_speakers else np.zeros_like(pcm)
        if speaking < self.limits.max_speakers:
            self._candidates[sid] = 0
            return pcm
        seconds = voiced * n / SAMPLE_RATE
        self.speech_over_cap_s += seconds
        if self._room_metrics is not None:
            self._room_metrics.speech_over_cap.inc(seconds)
        self._over_cap_log.warn("%s speaks while %d streams already do (LIVENEXUS_MAX_SPEAKERS): not "
                                "transcribed", speaker, speaking)
        return np.zeros_like(pcm)

    async def _consume(self, track: rtc.Track, sid: str, speaker: str) -> None:
        loop = asyncio.get_running_loop()
        publisher = self.publisher
        stamps = _FrameStamps(self.limits.traced_frames) if self.limits.trace_stages else None

        def on_event(event: TranscriptEvent) -> None:
            if stamps is not None and event.trace is not None:
                found = stamps.find(int(event.trace.pop(stages.VOICED, -1)))
                if found is not None:
                    event.trace["recv"], event.trace["push"] = found
            loop.call_soon_threadsafe(publisher.submit, event, sid)

        pipe = self.runtime.open_stream(sid, speaker, on_event)
        entry = self._tracks.get(sid)
        if entry is not None:
            entry.pipe = pipe
        # LiveKit resamples and downmixes for us (its own resampler): we receive 16 kHz mono int16.
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=self.limits.frame_ms,
                                 capacity=self.limits.stream_capacity)
        log.info("transcribing track %s of %s", sid, speaker)
        def handle(pcm: np.ndarray) -> None:  # on the frames thread
            try:
                pipe.push(self._gate(sid, pipe, pcm, speaker).copy())
            except Exception:
                self._metrics_bad_audio()
                log.exception("dropping a bad audio frame from %s", speaker)
            if pipe.in_utterance:
                self.peak_speaking = max(self.peak_speaking, self._speaking())

        def traced(item: tuple[np.ndarray, float]) -> None:  # on the frames thread, tracing only
            assert stamps is not None
            stamps.pushed(item[0].shape[0], item[1], time.monotonic())
            handle(item[0])

        jitter = loop.create_task(log_jitter_buffer(track, sid)) if stamps is not None else None
        cap = self.limits.stream_capacity
        feed: _Feed[Any] = _Feed(handle, self._frames, cap) if stamps is None else _Feed(traced, self._frames, cap)
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16)
                if not feed.put(pcm if stamps is None else (pcm, time.monotonic())):
                    self.frames_dropped += 1
                    self._behind_log.warn("frames of %s dropped: the frames thread is %d frames behind",
                                          speaker, self.limits.stream_capacity)
        except asyncio.CancelledError:
            pass
        finally:
            if jitter is not None:
                jitter.cancel()
            # After its last frames, on the same thread; flushing publishes the open utterance's final.
            def finish() -> None:
                feed.drain()
                self._close_stream(sid)

            try:
                await loop.run_in_executor(self._frames, finish)
            except RuntimeError:  # the frames thread is already shut down
                self._close_stream(sid)
            await stream.aclose()

    def _close_stream(self, sid: str) -> None:
        self._candidates.pop(sid, None)
        self.runtime.close_stream(sid)

    def _metrics_bad_audio(self) -> None:
        bad = getattr(self._metrics, "bad_audio_frame", None)
        if bad is not None:
            bad()

    async def settle(self, timeout: float) -> bool:
        """Shutting down: let open utterances end by themselves (a final of a sentence cut mid-word reads
        worse, and the guards may drop it) for up to ``timeout``, while no new one starts. True if all did."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while any(t.pipe is not None and t.pipe.in_utterance for t in tuple(self._tracks.values())):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        """Stop taking audio: every consumer ends and flushes its open utterance (finals are queued)."""
        tracks = list(self._tracks.values())
        self._tracks.clear()
        self._waiting.clear()
        self._promoting.clear()
        for t in tracks:
            t.task.cancel()
        await asyncio.gather(*(t.task for t in tracks), return_exceptions=True)
        self._frames.shutdown(wait=False)  # a push still running ends on its own; nothing new is queued
