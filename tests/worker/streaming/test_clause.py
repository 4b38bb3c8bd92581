"""The clause rule of commit during speech: where partials put no full stop at a pause, a long utterance is cut
after an agreed word that ends in it; only a marked word (a comma) or a long pause may end a clause early, and
the short rest of a cut sentence may commit at its own pause (stand-in decoder from fakes.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import PipelineOptions
from livenexus_worker.streaming.stream_state import PendingFinal

from .fakes import SR, SentenceEngine, check_contiguous, decoded, finals, finish_contiguous, pipeline, push, silence


class NoStopEngine(SentenceEngine):
    """Decodes that never end a sentence where the speaker pauses ("samples P w0 w1 next"): greedy decoding
    of a sentence that runs on, or a clause; with ``mark``, the clause's last word carries it ("w1, next")."""

    def __init__(self, mark: str = "") -> None:
        super().__init__()
        self.mark = mark

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        # A final that hears the pause's look-ahead (a confirming partial decoded as a final) runs on too.
        if max_new_tokens is None and not hyp.text.endswith(" " + self.following):
            return hyp
        return replace(hyp, text=hyp.text.replace(".", self.mark))


@pytest.mark.parametrize("clause_after_s", [0.0, 2.0, 30.0], ids=["off", "long-enough", "too-short"])
def test_a_long_utterance_commits_at_an_aligned_pause_without_a_sentence_end(sentence: np.ndarray,
                                                                            clause_after_s: float) -> None:
    # Partials put no full stop at the pause: without the clause rule the sentence waits for the
    # any-pause bound (10 s); with it, a pause that a stable word ends in commits once the utterance is long.
    engine = NoStopEngine()
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_clause_after_s=clause_after_s,
                                                         commit_clause_unmarked_after_s=clause_after_s))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    committed = finals(events)
    assert len(committed) == (1 if clause_after_s == 2.0 else 0)
    if committed:
        # Cut in the pause: the final holds the first sentence's speech and nothing of the next one.
        assert abs(decoded(committed[0]) - (500 * 16 + sentence.shape[0])) <= 200 * 16
        pipe.flush()
        assert ctx.scheduler.wait_idle(10)
        check_contiguous(finals(events))
    ctx.scheduler.close()


@pytest.mark.parametrize(("mark", "pause_ms", "unmarked_after_s", "commits"),
                         [(",", 120, 30.0, True), ("", 120, 30.0, False), ("", 250, 30.0, True),
                          ("", 120, 2.0, True)],
                         ids=["comma", "no-mark-short-pause", "no-mark-long-pause", "no-mark-long-utterance"])
def test_a_clause_ends_at_a_word_without_a_mark_only_at_a_long_pause_or_in_a_long_utterance(
        sentence: np.ndarray, mark: str, pause_ms: int, unmarked_after_s: float, commits: bool) -> None:
    # A short pause under a word the partial gave no mark is as often a gap inside a phrase ("drop the dark |
    # theme"): there only a marked word, or a pause as long as people leave between clauses, ends a clause.
    engine = NoStopEngine(mark)
    # The quiet measured runs a frame or two past the silence added (the sentence's fade in and out).
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_clause_after_s=2.0,
                                                         commit_clause_unmarked_pause_ms=200,
                                                         commit_clause_unmarked_after_s=unmarked_after_s))
    push(pipe, np.concatenate([silence(500), sentence, silence(pause_ms), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert len(finals(events)) == int(commits)
    ctx.scheduler.close()


class CommaEngine(SentenceEngine):
    """Reads every sentence end as a comma, as Whisper does where a sentence seems to flow on: commits come
    from the clause rule only (an agreed word that ends at a pause)."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        return replace(hyp, text=hyp.text.replace(". ", ", ").rstrip("."))


@pytest.mark.parametrize("after_cut_s", [0.3, 1.5], ids=["short-part-commits", "as-any-utterance"])
@pytest.mark.parametrize("engine", [SentenceEngine, CommaEngine], ids=["full-stop", "comma"])
def test_the_short_rest_of_a_sentence_cut_before_its_end_commits_at_its_own_pause(
        sentence: np.ndarray, after_cut_s: float, engine: type[SentenceEngine]) -> None:
    # A commit cut inside a sentence; its rest ("... to be.", 0.5 s) ends at a pause of its own. That part
    # hears the commit as its left context, so its pause may commit it although it is short; otherwise its
    # words wait for the next sentence's end. Its partials may read that end as a comma.
    ctx, pipe, events = pipeline(engine(), PipelineOptions(commit_min_after_cut_s=after_cut_s))
    rest = sentence[: 500 * 16]
    push(pipe, np.concatenate([silence(500), sentence, silence(150), rest, silence(150), sentence[: 500 * 16]]),
         ctx)
    assert ctx.scheduler.wait_idle(10)
    fs = finals(events)
    assert pipe.in_utterance, "the speaker goes on"
    if after_cut_s < 0.5:
        assert len(fs) == 2 and "Next" not in fs[1].text
        # The rest, from inside the pause before it to inside its own.
        assert 0.5 * SR <= (fs[1].end - fs[1].start) * SR <= (0.15 + 0.5 + 0.15) * SR + 1
    else:
        assert len(fs) == 1
    finish_contiguous(ctx, pipe, events, sentence[500 * 16 :])


@pytest.mark.parametrize("first_cut", [False, True])
def test_the_part_after_a_rest_ended_at_its_first_long_pause_knows_it(sentence: np.ndarray, first_cut: bool) -> None:
    # Its own first long pause alone does not end it (commits._clause): each such cut left another rest.
    ctx, pipe, _events = pipeline(SentenceEngine(), PipelineOptions(commit_in_speech=False))
    push(pipe, np.concatenate([silence(500), sentence]), ctx)
    with pipe._lock:
        op = pipe._open
        assert op is not None
        op.first_cut = first_cut
        cut = op.utt.n // 2
        start = op.utt.start_sample / SR
        event = TranscriptEvent(stream_id="s", speaker="s", segment_id=op.utt.segment_id, text="the rest",
                                is_final=True, start=start, end=start + cut / SR)
        pipe._commit(op, cut, PendingFinal(event, 0.0))
        assert pipe._open is not None and pipe._open is not op
        assert pipe._open.follows_first_cut == first_cut
    ctx.scheduler.close()
