"""Commit during speech: a short pause inside a long utterance turns the finished sentence before it into a
final while the speaker goes on, cut in that pause, with no audio lost or decoded twice across the cut (stand-in
decoder from fakes.py; the real model is exercised in test_runtime.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pauses import PauseDetector
from livenexus_worker.streaming.pipeline import PipelineOptions
from livenexus_worker.streaming.scheduler import Job

from .fakes import (
    SR,
    LengthEngine,
    SentenceEngine,
    check_contiguous,
    decoded,
    finals,
    finish_contiguous,
    pipeline,
    push,
    run,
    silence,
)


@pytest.mark.parametrize("from_partial", [False, True], ids=["decoded-again", "partial-text"])
def test_sentence_before_a_short_pause_is_final_while_the_speaker_goes_on(sentence: np.ndarray,
                                                                          from_partial: bool) -> None:
    # Without left context: a final after the commit would also hear the committed words before it (on
    # purpose, test_left_context.py), and this test checks that nothing else is decoded twice.
    ctx, pipe, events = pipeline(SentenceEngine(), PipelineOptions(commit_text_from_partial=from_partial,
                                                                   final_left_context_s=0.0))
    # 150 ms: a pause between sentences of someone who goes on talking (shorter than the 250 ms hangover).
    push(pipe, np.concatenate([silence(500), sentence, silence(150)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert finals(events) == [], "a pause alone is no sentence end: the next words decide"
    push(pipe, sentence[: 500 * 16], ctx)  # the look-ahead: the first words of the next sentence
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    assert pipe.in_utterance, "the utterance goes on: the VAD has not ended it"
    assert "Next" not in first.text, "the look-ahead words are not in the final"
    lead = int((0.5 - first.start) * SR)  # the pre-roll of silence before the sentence
    assert decoded(first) == lead + sentence.shape[0], "the final says the whole sentence"
    assert lead + sentence.shape[0] < (first.end - first.start) * SR <= lead + sentence.shape[0] + 150 * 16, \
        "cut inside the pause"
    partial_calls = len(ctx.engine.calls)
    push(pipe, np.concatenate([sentence[500 * 16 :], silence(150), sentence, silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    fs = finals(events)
    assert len(fs) == 3 and fs[0] is first
    check_contiguous(fs)
    assert fs[-1].end - fs[0].start >= 3 * sentence.shape[0] / SR, "all three sentences are in finals"
    # No decode after the first commit re-reads the first sentence: every window is about one sentence long.
    assert max(n for n, _p in ctx.engine.calls[partial_calls:]) < sentence.shape[0] + 1500 * 16
    ctx.scheduler.close()


@pytest.mark.parametrize("aligned", [True, False], ids=["word-times", "pace-estimate"])
def test_a_gap_inside_the_sentence_just_before_its_end_does_not_take_the_commit(sentence: np.ndarray,
                                                                                aligned: bool) -> None:
    # A 95 ms gap 0.2 s before the sentence ends (a stop consonant, a breath) is a pause too. It is still
    # waiting for its look-ahead when the real sentence end comes: the partial that ends the sentence must
    # cut at the real end's pause, the one its words point to, not at the first pause that was waiting.
    at = sentence.shape[0] - 200 * 16
    spoken = np.concatenate([sentence[:at], silence(95), sentence[at:]])
    det = PauseDetector()
    assert max(det.push(spoken[i : i + 480], True) for i in range(0, len(spoken) - 480, 480)) >= 80, "a pause"
    ctx, pipe, events = pipeline(SentenceEngine(aligned=aligned))
    push(pipe, np.concatenate([silence(500), spoken, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    lead = int((0.5 - first.start) * SR)
    assert lead + spoken.shape[0] < (first.end - first.start) * SR <= lead + spoken.shape[0] + 150 * 16, \
        "cut at the sentence end"
    ctx.scheduler.close()


def test_end_of_speech_during_a_commit_decode_uses_it_as_the_final(sentence: np.ndarray) -> None:
    # Past commit_any_after_s a pause commits at once, without waiting for a partial; if the speaker stops in
    # that pause, the commit decode becomes the utterance's final instead of decoding the same audio again.
    engine = SentenceEngine(hold=True)
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_any_after_s=2.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(1000)]))  # the VAD ends it; the decode is held
    assert not pipe.in_utterance
    engine.release.set()
    assert ctx.scheduler.wait_idle(10)
    (final,) = finals(events)
    assert engine.final_sized == [decoded(final)], "one final-sized decode for the utterance"
    ctx.scheduler.close()


def test_no_commit_without_a_sentence_end_or_when_disabled(sentence: np.ndarray) -> None:
    audio = np.concatenate([silence(500), sentence, silence(150), sentence, silence(1000)])
    for engine, opts in ((LengthEngine(), None), (SentenceEngine(), PipelineOptions(commit_in_speech=False))):
        ctx, pipe, events = pipeline(engine, opts)
        push(pipe, audio, ctx)
        assert ctx.scheduler.wait_idle(10)
        (final,) = finals(events)
        assert (final.end - final.start) * SR >= 2 * sentence.shape[0], "one utterance, one final over both"
        ctx.scheduler.close()


def test_pause_after_a_committed_sentence_is_not_an_utterance_of_its_own(sentence: np.ndarray) -> None:
    ctx, pipe, events = pipeline(SentenceEngine())
    push(pipe, np.concatenate([silence(500), sentence, silence(2000)]), ctx)  # one sentence, then silence
    assert ctx.scheduler.wait_idle(10)
    assert len(finals(events)) == 1
    ctx.scheduler.close()


def test_a_speaker_who_never_stops_for_90_s_gets_bounded_contiguous_finals(sentence: np.ndarray) -> None:
    # 90 s of speech with 120 ms pauses between sentences: the VAD never ends the utterance.
    reps = -(-90 * SR // (sentence.shape[0] + 120 * 16))
    speech = np.concatenate([np.concatenate([sentence, silence(120)]) for _ in range(reps)])
    ctx, pipe, events = pipeline(SentenceEngine())
    push(pipe, np.concatenate([silence(300), speech]), ctx)
    mid = finals(events)
    assert len(mid) >= reps // 2, "sentences turned final while the speaker was still talking"
    push(pipe, silence(1000))
    assert ctx.scheduler.wait_idle(20)
    fs = finals(events)
    check_contiguous(fs)
    assert max(decoded(f) for f in fs) <= 7 * SR, "every decode stayed short however long the talk"
    assert sum(f.end - f.start for f in fs) * SR >= speech.shape[0] - 200 * 16, "every sentence reached a final"
    ctx.scheduler.close()


def test_a_speaker_without_any_pause_is_still_cut_at_the_cap(sentence: np.ndarray) -> None:
    speech = np.concatenate([sentence] * 12)  # ~34 s, no pause at all
    _ctx, events = run(np.concatenate([silence(300), speech]), PipelineOptions())
    fs = finals(events)
    assert len(fs) >= 3
    assert max(decoded(f) for f in fs) <= 15 * SR


@pytest.mark.parametrize("aligned", [True, False], ids=["word-times", "pace-estimate"])
def test_with_word_times_a_lower_case_or_longer_continuation_still_commits(sentence: np.ndarray,
                                                                          aligned: bool) -> None:
    # Greedy partials often go on in lower case after a real full stop, and hear several words past the pause
    # before they are asked: with word times the cut is placed by the sentence's last word, so both commit.
    # (Greedy partials confirm pauses with commit_confirm_final off; a final-grade decode is always aligned.)
    engine = SentenceEngine(aligned=aligned, following="and then we four five")
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_confirm_final=False))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert len(finals(events)) == (1 if aligned else 0)
    ctx.scheduler.close()


class SkippingEngine(LengthEngine):
    """Partials hear the whole utterance; a final without a forced start skips all but its last word (Whisper
    sometimes drops the start of an abrupt window), and with one it continues it."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        words = ["we", "missed", "several", "obvious", "bugs"]
        if max_new_tokens is None and not prefix:
            return Hypothesis("bugs.", 0.01, -0.1, "en", 0.0, 0.0, 0)
        text = prefix if prefix and len(prefix.split()) >= len(words) else " ".join(words)
        return Hypothesis(text, 0.01, -0.1, "en", 0.0, 0.0, 0)


def test_a_final_that_skips_what_partials_agreed_on_is_decoded_from_it(sentence: np.ndarray) -> None:
    engine = SkippingEngine()
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_in_speech=False))
    push(pipe, np.concatenate([silence(300), sentence, silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (final,) = finals(events)
    assert final.text == "we missed several obvious bugs", "the agreed words are in the final"
    assert [p for _n, p in engine.calls if p][-1] == "we missed several obvious bugs"
    ctx.scheduler.close()


@pytest.mark.parametrize(("final_text", "guess"), [
    ("our quarterly revenue grew by twelve", "I would orderly rent the new"),  # as many other words
    ("they had a backlog that lasted", "may have a mark on at last it"),  # the start read otherwise, fewer words
], ids=["as-many-other-words", "start-read-otherwise"])
def test_a_final_that_reads_the_window_otherwise_is_not_forced_to_the_partials(sentence: np.ndarray,
                                                                                final_text: str, guess: str) -> None:
    class Rereading(SkippingEngine):
        """Partials agree on a wrong guess; the final hears the whole window and says other words."""

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "",
                       word_times: bool = False) -> Hypothesis:
            if max_new_tokens is None:
                self.calls.append((audio.shape[0], prefix))  # finals only
                if not prefix:
                    return Hypothesis(final_text, 0.01, -0.1, "en", 0.0, 0.0, 0)
            return Hypothesis(prefix or guess, 0.01, -0.1, "en", 0.0, 0.0, 0)

    engine = Rereading()
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_in_speech=False))
    push(pipe, np.concatenate([silence(300), sentence, silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (final,) = finals(events)
    assert final.text == final_text
    assert engine.calls and not [p for _n, p in engine.calls if p], "no final forced to the partials' guess"
    ctx.scheduler.close()


class KindEngine(LengthEngine):
    """Records whether each decode was a partial (capped tokens) or a final."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[str] = []

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.kinds.append("partial" if max_new_tokens is not None else "final")
        return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)


def test_a_partial_asked_for_in_speech_but_starting_in_the_pause_is_skipped(sentence: np.ndarray) -> None:
    # The decoder cannot be interrupted: a partial that starts once the speaker has paused would make the
    # end-of-speech final wait behind it, and it would only show what that final is about to say.

    engine = KindEngine()
    ctx, pipe, _events = pipeline(engine)
    busy = threading.Event()
    ctx.scheduler.submit_final(Job(lambda: busy.wait(10), "final"))  # the inference thread is busy meanwhile
    audio = np.concatenate([silence(300), sentence])
    for i in range(0, audio.shape[0], 480):  # paced past the partial interval: partials are asked for
        pipe.push(audio[i : i + 480])
        time.sleep(0.0011)
    pipe.push(silence(240))  # a pause past the speculation point (webrtcvad hears ~0.1 s more), within the hangover
    busy.set()
    assert ctx.scheduler.wait_idle(10)
    assert engine.kinds == ["final"], engine.kinds  # the speculative final only
    pipe.push(sentence[: 1500 * 16])  # speech again: partials as before
    for i in range(0, 1500 * 16, 480):
        pipe.push(sentence[i : i + 480])
        time.sleep(0.0011)
        assert ctx.scheduler.wait_idle(10)
    assert "partial" in engine.kinds
    ctx.scheduler.close()


class CappedEngine(SentenceEngine):
    """Partials as SentenceEngine's, each flagged as cut by its token cap (a long unstable tail)."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        return replace(hyp, truncated=max_new_tokens is not None)


@pytest.mark.parametrize("aligned", [True, False], ids=["word-times", "pace-estimate"])
def test_a_partial_cut_by_its_token_cap_confirms_a_pause_only_when_aligned(sentence: np.ndarray,
                                                                          aligned: bool) -> None:
    # Cut text may stop before the audio does: its word count says nothing of where its sentence ended, but
    # its aligned words still do. Refusing those too left long utterances without commits (meeting benchmark,
    # lag p95 6.7 s) once the engine flagged its cap. (The greedy path: commit_confirm_final off.)
    ctx, pipe, events = pipeline(CappedEngine(aligned=aligned), PipelineOptions(commit_confirm_final=False))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert len(finals(events)) == (1 if aligned else 0)
    ctx.scheduler.close()


def test_with_word_times_an_earlier_sentence_end_at_a_pause_commits_when_the_last_has_none(
        sentence: np.ndarray) -> None:
    # Whisper also puts a full stop where the next sentence flows on ("in review the invoice. Generators"):
    # the last full stop has no pause under it, the one before it does; seven words follow that one.
    engine = SentenceEngine(following="and then six more words here. Next")
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=0.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    assert pipe.in_utterance and "then" not in first.text
    assert decoded(first) == int((0.5 - first.start) * SR) + sentence.shape[0], "cut at the sentence's own pause"
    finish_contiguous(ctx, pipe, events, sentence[500 * 16 :])
