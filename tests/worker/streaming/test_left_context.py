"""A final after a commit hears the committed part before it, with that part's text forced as the decoder's
start, and keeps only what follows: no word of the committed part comes back, none of the new part is lost,
and word times stay those of the new part (stand-in decoders; the meeting benchmark measures the real one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.finals import FinalRequest, decode_final
from livenexus_worker.streaming.pipeline import PipelineOptions
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import LeftContext, OpenUtterance

from .fakes import Ctx, LengthEngine, SentenceEngine, finals, pipeline, push, silence

SR = 16000


class ContinuingEngine(LengthEngine):
    """Says the forced start, then "tail" words, one per second of audio after ``left_s``; word ends in
    seconds from the window's start. ``echo``: the forced start comes back changed (a tokenizer round trip
    that is not exact), as a real decoder may."""

    def __init__(self, left_s: float, echo: str | None = None) -> None:
        super().__init__()
        self.left_s = left_s
        self.echo = echo

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        dur = audio.shape[0] / SR
        left = self.left_s if prefix else 0.0
        forced = (self.echo if self.echo is not None and prefix else prefix).split()
        new = [f"w{i}" for i in range(int(dur - left))]
        ends = [left * (i + 1) / len(forced) for i in range(len(forced))] + [left + i + 1.0 for i in range(len(new))]
        return Hypothesis(" ".join([*forced, *new]), 0.01, -0.1, "en", 0.0, 0.0, 0,
                          word_ends=tuple(ends) if word_times else ())


def decode(engine: LengthEngine, left: LeftContext | None, audio_s: float, keep_until_s: float | None = None,
           agreed: tuple[str, ...] = ("w0", "w1", "w2"), after_commit: bool = False,
           levels: tuple[float, float] = (0.0, 0.0), word_times: bool = False, left_stop_p: float = 1.0,
           settled: bool = False):
    """``agreed``: what the part's partials agreed on (by default enough to make it speech for sure); the
    part's audio is all ones (RMS 1); ``levels``: the speaker's speech level and the background's;
    ``settled``: the speech level has been heard long enough to call a part quiet."""
    ctx = Ctx()
    ctx.engine = engine
    ctx.engine_for = lambda _i: (0, TierSpec("fake", "int8", 1, 250), engine)  # type: ignore[method-assign]
    utt = Utterance("s-2", 10 * SR)
    audio = np.ones(int(audio_s * SR), dtype=np.int16)
    utt.append(audio)
    op = OpenUtterance(utt, 0, left=left, after_commit=after_commit)
    op.agreement.committed.extend(agreed)
    op.left_stop_p = left_stop_p
    keep = None if keep_until_s is None else int(keep_until_s * SR)
    req = FinalRequest("s", "spk", "", word_times=word_times, levels=levels, settled=settled)
    result = decode_final(ctx, PipelineOptions(), req, op, audio, 0.0, keep)  # type: ignore[arg-type]
    ctx.scheduler.close()
    return result


def test_the_final_hears_the_committed_part_and_says_only_what_follows() -> None:
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "Okay, let's start.")
    engine = ContinuingEngine(left_s=2.0)
    result = decode(engine, left, 3.0)
    assert result is not None
    assert engine.calls == [(5 * SR, "Okay, let's start.")], "one decode over both parts, the first one forced"
    assert result.event.text == "w0 w1 w2", "none of the committed words again, all of the new ones"
    assert (result.event.start, result.event.end) == (10.0, 13.0), "the times are the new part's"


def test_a_commit_after_it_keeps_the_words_before_its_cut_in_the_new_part_s_time() -> None:
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "Okay, let's start.")
    result = decode(ContinuingEngine(left_s=2.0), left, 4.0, keep_until_s=2.5)
    assert result is not None
    # Word ends of the new part are 1, 2, 3, 4 s into it; a cut at 2.5 s keeps two of them (not five, which
    # it would with the left part's 2 s still counted in).
    assert result.event.text == "w0 w1"
    assert result.event.end == 12.5


def test_a_forced_start_that_comes_back_changed_is_decoded_again_without_it() -> None:
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "Okay, let's start.")
    engine = ContinuingEngine(left_s=2.0, echo="Okay let us start")
    result = decode(engine, left, 3.0)
    assert result is not None
    assert engine.calls == [(5 * SR, "Okay, let's start."), (3 * SR, "")], "then the new part alone"
    assert result.event.text == "w0 w1 w2", "never the committed words twice"


def test_punctuation_the_decoder_glues_to_the_last_forced_word_is_not_a_mismatch() -> None:
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "that one is mine")
    engine = ContinuingEngine(left_s=2.0, echo="that one is mine,")
    result = decode(engine, left, 3.0)
    assert result is not None and result.event.text == "w0 w1 w2"
    assert len(engine.calls) == 1, "no second decode"


class Looping(ContinuingEngine):
    """Goes on after what it said with ``then``: the window's start said again."""

    def __init__(self, left_s: float, then: str) -> None:
        super().__init__(left_s)
        self.then = then

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        return Hypothesis(f"{hyp.text} {self.then}", 0.01, -0.1, "en", 0.0, 0.0, 0)


class Says(ContinuingEngine):
    """After its forced start, says ``with_left`` when it was given one (a left context) and ``alone`` when not."""

    def __init__(self, with_left: str, alone: str) -> None:
        super().__init__(left_s=2.0)
        self.with_left = with_left
        self.alone = alone

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        said = self.with_left if prefix else self.alone
        return Hypothesis(f"{prefix} {said}".strip(), 0.01, -0.1, "en", 0.0, 0.0, 0)


@pytest.mark.parametrize("then", ["May have a mark.", "May have a murk"], ids=["whole", "cut-short-misspelt"])
def test_the_forced_words_said_again_at_the_end_are_not_kept(then: str) -> None:
    # The loop may also run out of tokens part-way through the forced words, and misspell them.
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "May have a mark.")
    result = decode(Looping(left_s=2.0, then=then), left, 3.0)
    assert result is not None and result.event.text == "w0 w1 w2", "the loop back to the forced words is dropped"


def test_a_one_word_left_context_said_again_inside_the_part_is_no_loop() -> None:
    # After the commit "time." (the rest of a cut sentence): "In the meantime ... a shorter time out" was cut
    # at "time" as a loop back to the context.
    left = LeftContext(np.ones(SR, dtype=np.int16), "time.")
    result = decode(Looping(left_s=1.0, then="time out on our side."), left, 3.0)
    assert result is not None and result.event.text == "w0 w1 w2 time out on our side."


def test_a_decode_that_says_the_context_in_place_of_its_part_is_decoded_again_alone() -> None:
    # "Thanks." after the rest "but we still have a few less ends." came back as "But we still have a few less
    # ends." (capitalised): kept, that was too many words for 0.6 s and the part was dropped, "Thanks" lost.
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "but we still have a few less ends.")
    engine = Says(with_left="But we still have a few less ends.", alone="Thanks.")
    result = decode(engine, left, 0.6, agreed=("thanks",))
    assert result is not None and result.event.text == "Thanks."
    assert engine.calls == [(round(2.6 * SR), left.text), (round(0.6 * SR), "")]


def test_a_part_that_starts_like_its_context_mid_sentence_is_kept() -> None:
    # Only a restart at the part's own start is a reading of the context again; later, it is a loop (cut there).
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "We need more people.")
    result = decode(Looping(left_s=2.0, then="we need more"), left, 3.0)
    assert result is not None and result.event.text == "w0 w1 w2", "the loop back (any case) is cut"


def test_a_decode_that_says_its_part_twice_is_decoded_again_without_the_context() -> None:
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "Please review it.")
    engine = Says(with_left="We will deploy in an Uber. We will deploy the new version.", alone="We will deploy it.")
    result = decode(engine, left, 3.0)
    assert result is not None and result.event.text == "We will deploy it."
    assert engine.calls == [(5 * SR, "Please review it."), (3 * SR, "")]


def test_without_a_committed_part_nothing_changes() -> None:
    engine = ContinuingEngine(left_s=0.0)
    result = decode(engine, None, 3.0)
    assert result is not None and result.event.text == "w0 w1 w2"
    assert engine.calls == [(3 * SR, "")]


def test_after_a_commit_the_next_final_hears_the_last_words_before_the_cut(sentence: np.ndarray) -> None:

    class Continuing(SentenceEngine):
        """A final with a forced start goes on from it, saying how much audio it heard in all."""

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
            if max_new_tokens is not None or not prefix or prefix.startswith("samples"):
                return hyp  # a partial, or a final forced to start with the words the partials agreed on
            return Hypothesis(f"{prefix} heard {audio.shape[0]}.", 0.01, -0.1, "en", 0.0, 0.0, 0)

    engine = Continuing()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=2.0))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    head = round((first.end - first.start) * SR)
    push(pipe, np.concatenate([sentence[500 * 16 :], silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    second = finals(events)[1]
    # The commit's words end at N/2 and N samples ("samples N."): 2 s holds only the last one.
    n = int(first.text.split()[1].rstrip("."))
    left = head - int(n / 2 / SR * SR)
    assert left <= 2 * SR
    prefixed = [(size, p) for size, p in engine.calls if p]
    assert prefixed and prefixed[-1][1] == first.text.split()[1], "the committed part's last word is forced"
    rest = round((second.end - second.start) * SR)
    assert second.text == f"heard {prefixed[-1][0]}." and abs(prefixed[-1][0] - (left + rest)) <= 1, \
        "the final heard the left context and its own part, and says only its own words"
    ctx.scheduler.close()


def test_the_left_context_is_the_last_words_that_fit_from_where_the_word_before_them_ended() -> None:
    from livenexus_worker.streaming.left import left_context
    from livenexus_worker.streaming.stream_state import PendingFinal

    def result(text: str, ends: tuple[float, ...] = ()) -> PendingFinal:
        event = TranscriptEvent(stream_id="s", speaker="spk", segment_id="s-1", text=text, is_final=True,
                                start=0.0, end=4.0)
        return PendingFinal(event, 0.0, ends)

    head = np.arange(4 * SR, dtype=np.int64).astype(np.int16)
    got = left_context(head, result("one two three four.", (1.0, 2.0, 3.0, 3.8)), 2.0)
    assert got is not None and got.text == "three four."
    assert got.audio.shape[0] == 2 * SR and got.audio[0] == head[2 * SR], "from where 'two' ended to the cut"
    short = left_context(head[: SR], result("one."), 2.0)
    assert short is not None and short.text == "one." and short.audio.shape[0] == SR, "a short head is all heard"
    assert left_context(head, result("one two three four."), 2.0) is None, "no word times: no safe split"
    assert left_context(head, result("one two three four.", (1.0, 2.0, 3.0, 3.8)), 0.0) is None, "off"
    assert left_context(head, result("one two.", (0.5, 3.9)), 2.0) is None, "not even the last word fits"


def test_a_partial_of_the_part_after_a_cut_hears_the_words_before_it() -> None:
    from livenexus_worker.streaming.finals import decode_partial

    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "Okay, let's start.")
    audio = np.ones(3 * SR, dtype=np.int16)
    engine = ContinuingEngine(left_s=2.0)
    _hyp, said, ends, _probs, heard = decode_partial(engine, PipelineOptions(), audio, "", left, True, "s")  # type: ignore[arg-type]
    assert engine.calls == [(5 * SR, "Okay, let's start.")], "one decode over both parts, the first one forced"
    assert said == "w0 w1 w2" and ends == (1.0, 2.0, 3.0) and heard, "only the new part's words, in its own time"
    # Forced words that do not come back: the part alone, with its own agreed words forced.
    engine = ContinuingEngine(left_s=2.0, echo="Okay let us start")
    _hyp, said, _ends, _probs, heard = decode_partial(engine, PipelineOptions(), audio, "", left, False, "s")  # type: ignore[arg-type]
    assert engine.calls == [(5 * SR, "Okay, let's start."), (3 * SR, "")]
    assert "Okay" not in said and not heard

    class Timed(ContinuingEngine):
        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
            return dataclasses.replace(hyp, encode_s=0.05, decode_s=0.1)

    hyp, _said, _ends, _probs, heard = decode_partial(Timed(left_s=2.0, echo="Okay let us start"), PipelineOptions(),  # type: ignore[arg-type]
                                              audio, "", left, False, "s")
    assert not heard and (hyp.encode_s, hyp.decode_s) == pytest.approx((0.1, 0.2)), \
        "the partial cost both decodes: its cadence and the stream's CPU budget count them"
    hyp, *_rest = decode_partial(Timed(left_s=2.0), PipelineOptions(), audio, "", left, False, "s")  # type: ignore[arg-type]
    assert (hyp.encode_s, hyp.decode_s) == pytest.approx((0.05, 0.1)), "one decode, counted once"
    # With agreed words of its own, they follow the context in the forced start.
    engine = ContinuingEngine(left_s=2.0)
    decode_partial(engine, PipelineOptions(), audio, "w0", left, False, "s")  # type: ignore[arg-type]
    assert engine.calls == [(5 * SR, "Okay, let's start. w0")]


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
def test_after_a_dropped_partial_the_part_s_partials_hear_its_left_context(sentence: np.ndarray, on: bool) -> None:

    class AbruptStart(SentenceEngine):
        """After the cut (``cut``), a partial of the part alone reads nothing (no-speech), as Whisper did for
        a part that started inside a word; with the words before it forced, it reads the part."""

        def __init__(self) -> None:
            super().__init__()
            self.cut = False
            self.partial_prefixes: list[str] = []

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en",
                       prefix: str = "", max_new_tokens: int | None = None, context: str = "",
                       word_times: bool = False) -> Hypothesis:
            if max_new_tokens is None or not self.cut:
                return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
            self.partial_prefixes.append(prefix)
            if not prefix:
                return Hypothesis("you", 0.95, -1.2, "en", 0.0, 0.0, 0)
            # Heard with the words before it, it reads the part, still rated as doubtful as Whisper rated a
            # real one (no-speech 0.7, log-prob -0.9): the VAD heard speech all along, so it is shown.
            return Hypothesis(f"{prefix} the lazy dog", 0.7, -0.9, "en", 0.0, 0.0, 0)

    engine = AbruptStart()
    ctx, pipe, events = pipeline(engine, PipelineOptions(partial_left_context=on))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    engine.cut = True
    push(pipe, sentence[500 * 16 :], ctx)
    assert ctx.scheduler.wait_idle(10)
    prefixes = engine.partial_prefixes
    assert len(prefixes) >= 2 and prefixes[0] == "", "the part's first partial is decoded alone"
    shown = [e.text for e in events if not e.is_final and e.segment_id != first.segment_id]
    if on:
        assert prefixes[1] == first.text, "after it was dropped, the next one hears the words before the cut"
        assert "the lazy dog" in shown, "and says the part's own words only"
    else:
        assert first.text not in prefixes and not shown
    ctx.scheduler.close()


def test_a_final_after_its_left_context_reports_how_likely_the_decoder_found_the_context_s_full_stop() -> None:
    # The forced "stat." gets 0.009 from a decoder that hears the words after it ("...stat. Taking too long").

    class Doubting(ContinuingEngine):
        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False
                       ) -> Hypothesis:
            hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
            n = len(prefix.split())
            probs = tuple(0.009 if i == n - 1 else 0.9 for i in range(len(hyp.text.split())))
            return dataclasses.replace(hyp, word_probs=probs if word_times else ())

    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "the email confirmation stat.")
    result = decode(Doubting(left_s=2.0), left, 3.0, keep_until_s=2.5)
    assert result is not None and result.event.text == "w0 w1" and result.left_stop_p == 0.009
    alone = decode(Doubting(left_s=2.0), None, 3.0, keep_until_s=2.5)
    assert alone is not None and alone.left_stop_p is None, "no context, nothing to rate"
    # A confirming decode (the whole part, aligned) also gives its own words' probabilities, for the stops
    # it reads (``commit_stop_min_prob``); a commit's are not needed.
    whole = decode(Doubting(left_s=2.0), left, 3.0, word_times=True)
    assert whole is not None and whole.event.text == "w0 w1 w2" and whole.word_probs == (0.9, 0.9, 0.9)
    assert result.word_probs == ()


@pytest.mark.parametrize(("text", "stop_p", "threshold", "forced"),
                         [("a plan to avoid it next.", 0.0, 0.03, "a plan to avoid it next"),
                          ("did it ship?", 0.01, 0.03, "did it ship"),
                          ("a plan to avoid it next.", 0.3, 0.03, "a plan to avoid it next."),
                          ("a plan to avoid it next.", 0.0, 0.0, "a plan to avoid it next."),
                          ("behind where we wanted", 0.0, 0.03, "behind where we wanted")],
                         ids=["doubted-stop", "doubted-question", "stop-kept", "rule-off", "clause-cut"])
def test_a_stop_a_decode_doubted_is_not_forced_again(text: str, stop_p: float, threshold: float,
                                                        forced: str) -> None:
    # "a plan to avoid it next. | time. In the meantime": forced with its stop, the decoder began a new sentence
    # and lost "time"; without it, the sentence can go on.
    from livenexus_worker.streaming.rests import forced_left

    op = OpenUtterance(Utterance("s-2", 0), 0, after_commit=True, left=LeftContext(np.ones(SR, dtype=np.int16), text))
    op.left_stop_p = stop_p
    left = forced_left(op, PipelineOptions(commit_rest_stop_prob=threshold))
    assert left is not None and left.text == forced and left.audio is op.left.audio


def test_a_final_after_a_doubted_stop_forces_the_words_without_it_and_rates_no_stop() -> None:
    left = LeftContext(np.ones(2 * SR, dtype=np.int16), "a plan to avoid it next.")
    engine = ContinuingEngine(left_s=2.0)
    result = decode(engine, left, 3.0, keep_until_s=2.5, after_commit=True, left_stop_p=0.0)
    assert result is not None and result.event.text == "w0 w1", "its own words, after the forced ones"
    assert engine.calls[0][1] == "a plan to avoid it next"
    assert result.left_stop_p is None, "no stop was forced, so none was rated: the rest stays a rest"
    engine = ContinuingEngine(left_s=2.0)
    kept = decode(engine, left, 3.0, keep_until_s=2.5, after_commit=True)
    assert kept is not None and engine.calls[0][1] == "a plan to avoid it next."
