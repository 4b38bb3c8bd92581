"""Opt-in stage stamps (LIVENEXUS_TRACE_STAGES): which stamps a pipeline's events carry, in which order, and
nothing at all while tracing is off. Stand-in decoder (fakes.py's): this is about bookkeeping."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from livenexus_worker.core import stages
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline

from .fakes import Ctx, push, run, silence


@pytest.fixture
def tracing() -> Iterator[None]:
    stages.enable(True)
    yield
    stages.enable(False)


def _finals(events: list[TranscriptEvent]) -> list[TranscriptEvent]:
    return [e for e in events if e.is_final]


def test_off_by_default_no_trace_anywhere(word: np.ndarray) -> None:
    assert not stages.enabled()
    _ctx, events = run(np.concatenate([silence(500), word, silence(600)]))
    assert events and all(e.trace is None for e in events)
    assert "trace" not in events[-1].to_wire() and '"trace"' not in events[-1].to_json()


def test_final_stamps_in_order_and_point_at_the_last_voiced_audio(word: np.ndarray, tracing: None) -> None:
    lead = 500
    _ctx, events = run(np.concatenate([silence(lead), word, silence(600)]))
    (final,) = _finals(events)
    t = final.trace
    assert t is not None
    assert {"queued", "start", "decoded", "end", "emit", stages.VOICED} <= set(t)
    assert t["queued"] <= t["start"] <= t["decoded"] <= t["emit"] and t["end"] <= t["emit"]
    # The word's audio ends at lead + len(word); webrtcvad holds "voiced" for a few frames after it.
    word_end = lead * 16 + word.shape[0]
    assert word_end - 480 <= t[stages.VOICED] <= word_end + 200 * 16
    # Only the contract's stage names go on the wire (the position is internal).
    assert set(final.to_wire()["trace"]) == {"queued", "start", "decoded", "end", "emit"}


def test_partials_carry_decode_stamps_without_an_end(word: np.ndarray, tracing: None) -> None:
    ctx = Ctx()
    events: list[TranscriptEvent] = []
    pipe = StreamPipeline("s", "spk", ctx, events.append,  # type: ignore[arg-type]
                          PipelineOptions(min_partial_audio_ms=300, commit_in_speech=False))
    pipe.push(silence(300))
    for part in np.array_split(np.concatenate([word, word]), 4):
        time.sleep(0.3)  # partials are paced by the clock (the tier's 250 ms interval), not by the audio
        pipe.push(part)
    pipe.push(silence(600))
    assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    partials = [e for e in events if not e.is_final]
    assert partials
    for p in partials:
        assert p.trace is not None and "end" not in p.trace
        assert p.trace["queued"] <= p.trace["start"] <= p.trace["decoded"] <= p.trace["emit"]
        assert p.trace[stages.VOICED] == p.end * 16000  # the audio the partial heard ends there


def test_commit_final_end_is_when_the_commit_was_decided(word: np.ndarray, tracing: None) -> None:
    # A long utterance with short pauses: past commit_any_after_s any pause commits (no sentence end needed).

    opts = PipelineOptions(commit_any_after_s=2.0, commit_min_s=1.0)
    ctx = Ctx()
    events: list[TranscriptEvent] = []
    pipe = StreamPipeline("s", "spk", ctx, events.append, opts)  # type: ignore[arg-type]
    # Paced (the decoder catches up after every frame): fed all at once, the VAD could end the utterance
    # before a commit's decode ran, and there would be nothing to check (1 run in ~10 before).
    push(pipe, np.concatenate([silence(300)] + [np.concatenate([word, silence(150)])] * 4 + [silence(600)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    finals = _finals(events)
    assert len(finals) >= 2
    for f in finals:
        assert f.trace is not None and f.trace["end"] <= f.trace["emit"]
