"""A final guessed in a pause the speaker then talks on after becomes the final of what it heard, cut in the
pause, instead of being thrown away (stand-in decoders, as in test_commit.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import PipelineOptions

from .fakes import SR, LengthEngine, SentenceEngine, check_contiguous, decoded, finals, pipeline, push, silence


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
            self.started = threading.Event()

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            if max_new_tokens is None:
                self.started.set()
                assert self.release.wait(10)  # the guess is still decoding when the speaker goes on
            return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)

    engine = Held()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=0.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(240)]))
    # Unpaced pushes outrun the decoder thread: wait until the guess is decoding, or it would still be queued
    # (and replaced) when the speaker goes on, which is another case.
    assert engine.started.wait(10)
    push(pipe, sentence[: 800 * 16])
    assert pipe.in_utterance and not finals(events)
    engine.release.set()
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    assert pipe.in_utterance, "the second sentence goes on in its own part"
    lead = int((0.5 - first.start) * SR)
    assert lead + sentence.shape[0] <= decoded(first) <= lead + sentence.shape[0] + 240 * 16, "cut in the pause"
    ctx.scheduler.close()


@pytest.mark.parametrize("on", [True, False], ids=["the-guess-commits", "decoded-again"])
def test_a_partial_that_ends_the_sentence_at_a_guessed_pause_commits_the_guess(sentence: np.ndarray,
                                                                              on: bool) -> None:
    # The part is shorter than commit_speculative_min_s, so the guess alone is no cut; the partial that hears
    # the next words ends the sentence at the pause the guess was decoded in: that guess is the final, and
    # the part is not decoded a second time.
    engine = SentenceEngine()
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_speculative=on, commit_speculative_min_s=30.0,
                                                         final_left_context_s=0.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(240)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert len(engine.final_sized) == 1 and not finals(events), "a final is guessed in the pause"
    push(pipe, sentence[: 600 * 16], ctx)  # the look-ahead: the first words of the next sentence
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    assert pipe.in_utterance, "the second sentence goes on in its own part"
    if on:
        assert len(engine.final_sized) == 1, "the guess is the commit's final"
    else:
        assert len(engine.final_sized) >= 2, "the part is decoded again for its commit"
    lead = int((0.5 - first.start) * SR)
    assert lead + sentence.shape[0] <= (first.end - first.start) * SR <= lead + sentence.shape[0] + 240 * 16, \
        "cut in the pause"
    push(pipe, np.concatenate([sentence[600 * 16 :], silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    fs = finals(events)
    assert len(fs) == 2
    check_contiguous(fs)
    ctx.scheduler.close()


@pytest.mark.parametrize(("cut_ms", "resumed_ms", "kept", "pending", "commits"), [
    (1950, 2200, True, False, True),  # the energy pause began a little before the VAD's last voiced frame
    (2080, 2200, True, False, True),  # at the end of what the guess heard
    (1700, 2200, True, False, False),  # an earlier pause: the guess heard words after the sentence end
    (2200, 2400, True, False, False),  # a later pause: the guess did not hear the sentence's end
    (1950, 2050, True, False, False),  # speech resumed inside the audio the guess heard
    (1950, 2200, False, False, False),  # the guards dropped the guess
    (1950, 2200, True, True, False),  # a commit decode of this part is under way
])
def test_which_guess_a_confirmed_pause_may_take(cut_ms: int, resumed_ms: int, kept: bool, pending: bool,
                                               commits: bool) -> None:
    from livenexus_worker.core.events import TranscriptEvent
    from livenexus_worker.streaming.commits import confirmed_speculation
    from livenexus_worker.streaming.segmenter import Utterance
    from livenexus_worker.streaming.stream_state import OpenUtterance, PendingFinal

    start = 16000  # the part starts 1 s into the stream; the speaker went quiet at 2.0 s into it
    op = OpenUtterance(Utterance("u", start), 0, speculated_at=start + 2000 * 16, speculative_done=True,
                       speculative_samples=2090 * 16, resumed_at=start + resumed_ms * 16, commit_pending=pending)
    said = TranscriptEvent(stream_id="s", speaker="spk", segment_id="u", text="A sentence.", is_final=True,
                           start=1.0, end=3.09)
    guess = PendingFinal(said, 0.0)
    op.speculative = guess if kept else None
    found = confirmed_speculation(op, cut_ms * 16, PipelineOptions())
    assert found is (guess if commits else None)
    assert confirmed_speculation(op, cut_ms * 16, PipelineOptions(commit_speculative=False)) is None


@pytest.mark.parametrize(("pause_ms", "commits"), [(210, False), (240, True)], ids=["a-gap", "a-pause"])
def test_a_guess_commits_alone_only_at_a_pause_as_long_as_an_unmarked_clause_s(sentence: np.ndarray,
                                                                              pause_ms: int, commits: bool) -> None:
    # No partial confirms these cuts (LengthEngine never ends a sentence): a guess started in the gap of a
    # stop consonant ("avoid it next | time") would cut the phrase there. The quiet measured runs 20 ms past the
    # silence added (230 / 260 ms here), and the VAD lets a guess start from about 210 ms of it.
    class Finals(LengthEngine):
        def __init__(self) -> None:
            super().__init__()
            self.finals = 0

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            self.finals += max_new_tokens is None
            return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)

    engine = Finals()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=0.0,
                                                         commit_clause_unmarked_pause_ms=250))
    push(pipe, np.concatenate([silence(500), sentence, silence(pause_ms), sentence]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert engine.finals, "a final was guessed in the pause either way"
    assert len(finals(events)) == int(commits)
    ctx.scheduler.close()


@pytest.mark.parametrize(("pauses_ms", "awaits"), [
    ([1950], True),  # the partial would be the first to hear the guess's pause only: the guess is its commit
    ([1950, 2600], False),  # ...and a later pause's look-ahead, where the sentence may end: decoded as a final
    ([1400, 1950], True),  # an earlier pause too: a boundary there needs a commit decode whatever this one is
    ([2600], False),  # not the guess's pause
])
def test_a_guess_spares_the_confirming_decode_only_of_its_own_pause(pauses_ms: list[int], awaits: bool) -> None:
    from livenexus_worker.core.events import TranscriptEvent
    from livenexus_worker.streaming.commits import confirms_pause, guess_awaits
    from livenexus_worker.streaming.segmenter import Utterance
    from livenexus_worker.streaming.stream_state import OpenUtterance, PendingFinal

    start = 16000
    utt = Utterance("u", start)
    utt.append(np.zeros(3000 * 16, dtype=np.int16))  # every pause's 300 ms look-ahead is heard
    op = OpenUtterance(utt, 0, speculated_at=start + 2000 * 16, speculative_done=True,
                       speculative_samples=2090 * 16, resumed_at=start + 2200 * 16)
    said = TranscriptEvent(stream_id="s", speaker="spk", segment_id="u", text="A sentence.", is_final=True,
                           start=1.0, end=3.09)
    op.speculative = PendingFinal(said, 0.0)
    op.pauses.extend((ms * 16, float(ms)) for ms in pauses_ms)
    o = PipelineOptions()
    assert confirms_pause(op, o)
    assert guess_awaits(op, o) is awaits
    op.partial_heard = 3000 * 16  # a partial heard them all: none is left to confirm
    assert not confirms_pause(op, o) and not guess_awaits(op, o)


@pytest.mark.parametrize("speaks_on", [True, False], ids=["talks-on", "stops-in-the-second-pause"])
def test_a_guess_outrun_by_a_later_pause_still_commits_what_it_heard(sentence: np.ndarray, speaks_on: bool) -> None:
    # The guess of the first pause is still decoding when the speaker goes on and pauses again: a newer guess
    # replaces it. Decoded, it is still the final of the part before its own pause (it was thrown away, and
    # the first sentence waited for a later pause); the newer guess, over the uncut part, is skipped.
    class Held(LengthEngine):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()
            self.finals = 0
            self.started = threading.Event()

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            if max_new_tokens is None:
                self.finals += 1
                if self.finals == 1:
                    self.started.set()
                    assert self.release.wait(10)
            return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)

    engine = Held()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=0.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(240)]))
    # The first guess must be decoding (not still queued, where the second would replace it) before the
    # speaker goes on; unpaced pushes outrun the decoder thread otherwise (a fresh CI run caught that).
    assert engine.started.wait(10)
    push(pipe, np.concatenate([sentence, silence(240)]))
    if speaks_on:
        push(pipe, sentence[: 800 * 16])
    assert pipe.in_utterance and not finals(events)
    engine.release.set()
    assert ctx.scheduler.wait_idle(10)
    first = finals(events)[0]
    lead = int((0.5 - first.start) * SR)
    assert lead + sentence.shape[0] <= decoded(first) <= lead + sentence.shape[0] + 240 * 16, "cut in its pause"
    push(pipe, silence(1000), ctx)
    assert ctx.scheduler.wait_idle(10)
    fs = finals(events)
    check_contiguous(fs)
    assert (fs[-1].end - fs[0].start) * SR >= (2 + speaks_on * 0.2) * sentence.shape[0], "nothing lost"
    ctx.scheduler.close()
