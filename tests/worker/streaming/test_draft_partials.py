"""A rung's partial model (``TierSpec.partial_model``) drafts its partials; the rung's own model makes every final
and decides every commit during speech (stand-in decoders from fakes.py; the real models in test_runtime.py)."""

from __future__ import annotations

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import PipelineOptions

from .fakes import SR, LengthEngine, SentenceEngine, check_contiguous, decoded, finals, pipeline, push, silence


class NoStops(LengthEngine):
    """The rung's own model, hearing no sentence end anywhere ("samples N and so on"); counts its decodes."""

    def __init__(self) -> None:
        super().__init__()
        self.finals = 0
        self.partials = 0

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        if max_new_tokens is None:
            self.finals += 1
        else:
            self.partials += 1
        return Hypothesis(f"samples {audio.shape[0]} and so on", 0.01, -0.1, "en", 0.0, 0.0, 0)


def test_drafts_are_shown_and_the_rungs_model_commits(sentence: np.ndarray) -> None:
    own, draft = SentenceEngine(), SentenceEngine()
    ctx, pipe, events = pipeline(own, PipelineOptions(final_left_context_s=0.0))
    ctx.draft = draft
    # 120 ms: a pause between sentences, shorter than the one after which every partial is a confirming one.
    push(pipe, np.concatenate([silence(500), sentence, silence(120), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    assert pipe.in_utterance, "committed while the speaker goes on"
    lead = int((0.5 - first.start) * SR)
    assert decoded(first) == lead + sentence.shape[0], "the final says the whole sentence"
    assert draft.calls and not draft.final_sized, "the draft only drafts partials"
    assert own.final_sized, "the rung's own model decoded the commit"
    assert any(not e.is_final for e in events), "drafts are shown"
    push(pipe, np.concatenate([sentence[500 * 16 :], silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    fs = finals(events)
    assert len(fs) == 2
    check_contiguous(fs)
    assert not draft.final_sized
    ctx.scheduler.close()


@pytest.mark.parametrize("drafted", [True, False], ids=["a-draft-sees-a-stop", "no-draft"])
def test_a_stop_only_the_draft_reads_commits_nothing(sentence: np.ndarray, drafted: bool) -> None:
    # The draft ends a sentence at the pause (a smaller model misreads stops); the rung's own model, asked to
    # decode that audio, hears none there: nothing is cut until the speaker stops. No end-of-speech guess
    # (commit_speculative) either: it would cut in the pause on its own; and no confirming partials (the pause
    # measures 140 ms or more with the sentence's fading end), which the rung's own model decodes anyway.
    own = NoStops()
    ctx, pipe, events = pipeline(own, PipelineOptions(final_left_context_s=0.0, commit_speculative=False,
                                                      commit_confirm_final=False))
    if drafted:
        ctx.draft = SentenceEngine()
    push(pipe, np.concatenate([silence(500), sentence, silence(120), sentence]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert not finals(events) and pipe.in_utterance
    # Asked: the draft's stop had the rung's model decode the audio (a final-sized decode during speech).
    # Asked once for that pause, not again by every later draft that still reads the stop.
    assert own.finals == (1 if drafted else 0)
    assert (own.partials == 0) is drafted, "every partial was drafted"
    push(pipe, silence(1000), ctx)
    assert ctx.scheduler.wait_idle(10)
    (final,) = finals(events)
    assert final.text.startswith("samples ") and final.text.endswith("and so on"), "the rung's model's words"
    assert (final.end - final.start) * SR >= 2 * sentence.shape[0]
    ctx.scheduler.close()
