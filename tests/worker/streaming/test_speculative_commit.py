"""A final guessed in a pause the speaker then talks on after becomes the final of what it heard, cut in the
pause, instead of being thrown away (stand-in decoders, as in test_commit.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import PipelineOptions

from .fakes import SR, LengthEngine, check_contiguous, decoded, finals, pipeline, push, silence


@pytest.mark.parametrize("on", [True, False], ids=["commits", "thrown-away"])
def test_a_guessed_final_the_speaker_talks_on_after_is_the_final_of_what_it_heard(sentence: np.ndarray,
                                                                                  on: bool) -> None:
    # Partials never end a sentence here (LengthEngine), so only the speculative final of the pause can cut.
    # 240 ms: long enough for a guess (90 ms of VAD silence), shorter than the 250 ms that ends an utterance.
    # No left context: the stand-in's text then names exactly the audio each final covers.
    engine = LengthEngine()
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_speculative=on, final_left_context_s=0.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(240), sentence]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert len(finals(events)) == (1 if on else 0), "the first part is final while the speaker goes on"
    push(pipe, silence(1000), ctx)
    assert ctx.scheduler.wait_idle(10)
    fs = finals(events)
    assert len(fs) == (2 if on else 1)
    check_contiguous(fs)
    if on:
        first = fs[0]
        lead = int((0.5 - first.start) * SR)
        assert lead + sentence.shape[0] <= decoded(first) <= lead + sentence.shape[0] + 240 * 16, "cut in the pause"
    assert (fs[-1].end - fs[0].start) * SR >= 2 * sentence.shape[0], "both sentences are in finals"
    ctx.scheduler.close()


def test_a_guessed_final_of_a_short_part_is_not_a_cut(sentence: np.ndarray) -> None:
    # A guess over less than commit_speculative_min_s is mostly a breath inside a sentence: it stays one part.
    ctx, pipe, events = pipeline(LengthEngine(), PipelineOptions(final_left_context_s=0.0,
                                                                 commit_speculative_min_s=5.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(240), sentence, silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (final,) = finals(events)
    assert (final.end - final.start) * SR >= 2 * sentence.shape[0]
    ctx.scheduler.close()


def test_a_guessed_final_decoded_after_the_speaker_went_on_still_commits(sentence: np.ndarray) -> None:
    class Held(LengthEngine):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            if max_new_tokens is None:
                assert self.release.wait(10)  # the guess is still decoding when the speaker goes on
            return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)

    engine = Held()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=0.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(240), sentence[: 800 * 16]]))
    assert pipe.in_utterance and not finals(events)
    engine.release.set()
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    assert pipe.in_utterance, "the second sentence goes on in its own part"
    lead = int((0.5 - first.start) * SR)
    assert lead + sentence.shape[0] <= decoded(first) <= lead + sentence.shape[0] + 240 * 16, "cut in the pause"
    ctx.scheduler.close()
