"""The speaker cap of the track set: never more streams in an utterance than allowed, speech beyond it
counted, and a stream that fell quiet gives its slot back."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.room.publisher import TranscriptPublisher
from livenexus_worker.room.tracks import TrackLimits, TrackSet, _Track
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions

FRAME = 480  # 30 ms


class SlowStartPipe:
    """Like the pipeline's VAD: it classifies its own 30 ms frames, which straddle pushes (a stream's first
    frame is not where the gate's are: ``offset``), starts an utterance after ``start`` loud frames of the last
    ``window`` and ends it after ``end`` quiet ones."""

    def __init__(self, offset: int = 160, start: int = 4, window: int = 6, end: int = 10) -> None:
        self.residual = np.zeros(offset, dtype=np.int16)
        self.start, self.window, self.end = start, window, end
        self.recent: list[bool] = []
        self.quiet = 0
        self.in_utterance = False

    def push(self, pcm: np.ndarray) -> None:
        data = np.concatenate([self.residual, pcm])
        n = data.shape[0] // FRAME
        self.residual = data[n * FRAME :]
        for i in range(n):
            loud = bool(np.abs(data[i * FRAME : (i + 1) * FRAME].astype(np.int32)).mean() > 500)
            self.recent = [*self.recent[-(self.window - 1) :], loud]
            self.quiet = 0 if loud else self.quiet + 1
            if not self.in_utterance and sum(self.recent) >= self.start:
                self.in_utterance = True
            elif self.in_utterance and self.quiet >= self.end:
                self.in_utterance, self.recent = False, []


@pytest.fixture
def tracks() -> Iterator[TrackSet]:
    rt = Runtime(RuntimeOptions())
    ts = TrackSet(rt, TranscriptPublisher(), WorkerMetrics(), TrackLimits(max_speakers=2))
    yield ts
    ts._frames.shutdown()
    rt.close()


def install(ts: TrackSet, n: int) -> dict[str, SlowStartPipe]:
    pipes = {f"TR_{i}": SlowStartPipe() for i in range(n)}
    for sid, pipe in pipes.items():
        ts._tracks[sid] = _Track(task=None, pipe=pipe)  # type: ignore[arg-type]
    return pipes


def feed(ts: TrackSet, pipes: dict[str, SlowStartPipe], frame: np.ndarray, frames: int) -> int:
    """Everyone sends ``frame`` at once, frame by frame; returns the most streams ever in an utterance."""
    peak = 0
    for _ in range(frames):
        for sid, pipe in pipes.items():
            pipe.push(ts._gate(sid, pipe, frame, sid))  # type: ignore[arg-type]
        peak = max(peak, sum(p.in_utterance for p in pipes.values()))
    return peak


def test_simultaneous_speakers_never_exceed_the_cap(tracks: TrackSet) -> None:
    noise = np.clip(np.random.default_rng(1).standard_normal(FRAME) * 3000, -32000, 32000).astype(np.int16)
    pipes = install(tracks, 6)
    # Six start at the same frame: the VAD needs a few frames to start, so a check of "who speaks now"
    # alone would let all six in.
    assert feed(tracks, pipes, noise, 100) == 2
    assert tracks.speech_over_cap_s == pytest.approx(4 * 100 * 0.03, rel=0.05), "the others' speech is counted"


def test_a_stream_that_stops_frees_its_slot(tracks: TrackSet) -> None:
    noise = np.clip(np.random.default_rng(2).standard_normal(FRAME) * 3000, -32000, 32000).astype(np.int16)
    pipes = install(tracks, 3)
    feed(tracks, {k: pipes[k] for k in ("TR_0", "TR_1")}, noise, 20)  # two speak
    assert feed(tracks, {"TR_2": pipes["TR_2"]}, noise, 20) == 0 and tracks.speech_over_cap_s > 0
    silence = np.zeros(FRAME, dtype=np.int16)
    feed(tracks, {"TR_0": pipes["TR_0"]}, silence, 40)  # one falls silent: its utterance and slot end
    assert not pipes["TR_0"].in_utterance
    feed(tracks, {"TR_2": pipes["TR_2"]}, noise, 20)
    assert pipes["TR_2"].in_utterance, "the freed slot is taken"


def test_noise_the_gate_hears_no_voice_in_cannot_start_an_utterance_past_the_cap(tracks: TrackSet) -> None:
    # A loud 7.9 kHz whine: the pipeline's stand-in VAD (level) calls it loud, webrtcvad in the gate no voice;
    # the two VADs disagree on noise like that. Before, such frames went through whatever the cap, and a third
    # stream started an utterance (measured under a noise flood: 3 speaking with a cap of 2).
    voice = np.clip(np.random.default_rng(3).standard_normal(FRAME) * 3000, -32000, 32000).astype(np.int16)
    hum = (np.sin(np.arange(FRAME) * 2 * np.pi * 7900 / 16000) * 6000).astype(np.int16)
    pipes = install(tracks, 3)
    assert not tracks._gate_vad.is_speech(hum[:FRAME])
    feed(tracks, {k: pipes[k] for k in ("TR_0", "TR_1")}, voice, 20)  # two speak: the cap is reached
    assert feed(tracks, {"TR_2": pipes["TR_2"]}, hum, 40) == 0, "no utterance beyond the cap"
    silence = np.zeros(FRAME, dtype=np.int16)
    feed(tracks, {"TR_0": pipes["TR_0"]}, silence, 40)  # below the cap again: the hum reaches the pipeline
    assert feed(tracks, {"TR_2": pipes["TR_2"]}, hum, 20) == 1


def test_feed_batches_in_order_and_drops_the_oldest_past_its_bound() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from livenexus_worker.room.tracks import _Feed

    got: list[int] = []
    gate = threading.Event()

    def handle(pcm: np.ndarray) -> None:
        gate.wait(10)  # the frames thread is busy: frames pile up
        got.append(int(pcm[0]))

    with ThreadPoolExecutor(max_workers=1) as ex:
        feed = _Feed(handle, ex, limit=5)
        kept = [feed.put(np.full(4, i, dtype=np.int16)) for i in range(20)]
        gate.set()
        ex.submit(feed.drain).result(10)
    assert kept.count(False) == feed.dropped >= 10, "a bounded buffer: the excess is counted"
    assert got == sorted(got) and got[-5:] == [15, 16, 17, 18, 19], "in order, newest kept"


def test_streams_and_waiting_are_gauges_on_metrics() -> None:
    rt = Runtime(RuntimeOptions())
    metrics = WorkerMetrics()
    ts = TrackSet(rt, TranscriptPublisher(), metrics, TrackLimits(max_speakers=2))
    try:
        install(ts, 3)
        ts._waiting["TR_w"] = object()  # type: ignore[assignment]
        body = metrics.exposition().decode()
        assert "livenexus_streams 3.0" in body and "livenexus_streams_waiting 1.0" in body
    finally:
        ts._frames.shutdown()
        rt.close()
