"""A final that ends a stream's speech does not wait for the stream's own partial, begun while the speaker still
talked: with one thread per decode it runs on the other lane, and the partial's late words are dropped."""

from __future__ import annotations

import threading
import time

import numpy as np

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import StreamPipeline
from livenexus_worker.streaming.scheduler import InferenceScheduler
from tests.worker.streaming.fakes import SentenceEngine, check_contiguous, decoded, finals, pipeline, silence


class HeldPartials(SentenceEngine):
    """Partials block until released; finals decode at once."""

    def __init__(self) -> None:
        super().__init__()
        self.partial_started = threading.Event()
        self.partial_release = threading.Event()

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        if max_new_tokens is not None:
            self.partial_started.set()
            assert self.partial_release.wait(10)
        return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)


def _speak_until_a_partial_runs(pipe: StreamPipeline, engine: HeldPartials, speech: np.ndarray) -> int:
    """Push ``speech`` in 30 ms frames, a little slower than the 1 ms partial interval, until a partial holds its
    lane; returns the samples pushed."""
    for i in range(0, speech.shape[0], 480):
        pipe.push(speech[i : i + 480])
        time.sleep(0.002)
        if engine.partial_started.is_set():
            return i + 480
    raise AssertionError("no partial started")


def test_the_final_of_speech_runs_while_its_own_partial_still_decodes(sentence: np.ndarray) -> None:
    engine = HeldPartials()
    ctx, pipe, events = pipeline(engine)
    ctx.scheduler.close()
    ctx.scheduler = InferenceScheduler(workers=2)  # two one-thread lanes, one speaker
    try:
        pushed = _speak_until_a_partial_runs(pipe, engine, sentence)
        assert pushed < sentence.shape[0]
        pipe.push(sentence[pushed:])
        pipe.push(silence(1000))  # the pause, the guess in it, the hangover
        deadline = time.monotonic() + 5
        while not finals(events) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.partial_release.is_set()
        fs = finals(events)
        assert len(fs) == 1, events  # decoded on the other lane while the partial held its own
        engine.partial_release.set()
        assert ctx.scheduler.wait_idle(10)
        # The partial began before the speech ended: its words, in late, are not shown after the final.
        assert events[-1] is fs[0] and finals(events) == fs
        check_contiguous(fs)
        assert decoded(fs[0]) >= sentence.shape[0]  # all of the speech, which went on after the partial began
    finally:
        engine.partial_release.set()
        ctx.scheduler.close()
