"""A final that reads badly after its left context is decoded again hearing a longer one
(``hard_left_context_s``, ``hard_logprob``): only then, that reading is the final, and a longer context that
says nothing new or fails is never used (stand-in decoders; the meeting benchmark measures the real one)."""

from __future__ import annotations

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.finals import FinalRequest, decode_final
from livenexus_worker.streaming.left import longer
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import LeftContext, OpenUtterance, PendingFinal

from .fakes import Ctx, LengthEngine, SentenceEngine, finals, pipeline, push, silence

SR = 16000


def ones(seconds: float) -> np.ndarray:
    return np.ones(int(seconds * SR), dtype=np.int16)


def result(text: str, ends: tuple[float, ...]) -> PendingFinal:
    event = TranscriptEvent(stream_id="s", speaker="spk", segment_id="s-1", text=text, is_final=True,
                            start=0.0, end=2.0)
    return PendingFinal(event, 0.0, ends)


class Reading(LengthEngine):
    """Says the forced words, then the part's own words: "short" ones at ``short_logprob`` after a context of
    ``short_s``, "long" ones at -0.1 after any longer one. ``echo_long``: after the longer context it says the
    context's words again in the part's place (a reading :func:`finals.after_left` refuses)."""

    def __init__(self, short_s: float, short_logprob: float, echo_long: bool = False, long_says: str | None = None,
                 long_logprob: float = -0.1) -> None:
        super().__init__()
        self.short_s = short_s
        self.short_logprob = short_logprob
        self.echo_long = echo_long
        self.long_says = long_says
        self.long_logprob = long_logprob

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        forced = prefix.split()
        heard_s = audio.shape[0] / SR
        left_s = heard_s - 2.0 if prefix else 0.0
        long = left_s > self.short_s + 0.5
        long_own = self.long_says.split() if self.long_says is not None else ["long", "reading."]
        own = (forced if self.echo_long else long_own) if long else ["a", "short", "reading."]
        own_ends = [left_s + e for e in (0.5, 1.0, 1.9)][-len(own):]  # the part's last word ends at 1.9 s
        ends = [left_s * (i + 1) / len(forced) for i in range(len(forced))] + own_ends
        logprob = self.long_logprob if long else self.short_logprob
        return Hypothesis(" ".join([*forced, *own]), 0.01, logprob, "en", 0.0, 0.0, 0,
                          word_ends=tuple(ends[: len(forced) + len(own)]) if word_times else ())


def decode(engine: LengthEngine, left: LeftContext | None, left_long: LeftContext | None,
           options: PipelineOptions | None = None, times: int = 1) -> PendingFinal | None:
    """A final of a 2 s part (all ones) whose partials agreed on nothing, decoded ``times`` times (a guess,
    then the confirmed final); the last one's."""
    ctx = Ctx()
    ctx.engine = engine
    ctx.engine_for = lambda _i: (0, TierSpec("fake", "int8", 5, 250), engine)  # type: ignore[method-assign]
    utt = Utterance("s-2", 10 * SR)
    audio = ones(2.0)
    utt.append(audio)
    op = OpenUtterance(utt, 0, left=left, left_long=left_long, after_commit=True)
    req = FinalRequest("s", "spk", "", word_times=True)
    for _ in range(times):
        got = decode_final(ctx, options or PipelineOptions(), req, op, audio, 0.0)  # type: ignore[arg-type]
    ctx.scheduler.close()
    return got


SHORT = LeftContext(ones(2.0), "we only had four volunteers", (0.4, 0.8, 1.2, 1.6, 2.0))
LONG = LeftContext(ones(8.0), "last time we only had four volunteers", (1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0))


def test_a_final_that_reads_badly_after_its_context_is_decoded_again_after_the_longer_one() -> None:
    engine = Reading(short_s=2.0, short_logprob=-0.6)
    got = decode(engine, SHORT, LONG)
    assert got is not None and got.event.text == "long reading.", "the longer context's reading is the final"
    assert engine.calls == [(4 * SR, SHORT.text), (10 * SR, LONG.text)], "the short context first, then the long"
    assert got.word_ends == pytest.approx((1.0, 1.9)), "its word times are the part's own"


def test_once_read_again_the_part_s_later_finals_hear_the_longer_context_at_once() -> None:
    engine = Reading(short_s=2.0, short_logprob=-0.6)
    got = decode(engine, SHORT, LONG, times=3)
    assert got is not None and got.event.text == "long reading."
    assert engine.calls == [(4 * SR, SHORT.text), (10 * SR, LONG.text), (10 * SR, LONG.text), (10 * SR, LONG.text)]


@pytest.mark.parametrize("logprob", [-0.1, -0.29])
def test_a_final_that_reads_well_is_not_decoded_again(logprob: float) -> None:
    engine = Reading(short_s=2.0, short_logprob=logprob)
    got = decode(engine, SHORT, LONG)
    assert got is not None and got.event.text == "a short reading."
    assert engine.calls == [(4 * SR, SHORT.text)]


def test_a_short_reply_that_reads_badly_is_not_decoded_again() -> None:
    engine = Reading(short_s=2.0, short_logprob=-0.6)
    got = decode(engine, SHORT, LONG, PipelineOptions(hard_min_words=4))
    assert got is not None and got.event.text == "a short reading." and len(engine.calls) == 1, "three words"
    engine = Reading(short_s=2.0, short_logprob=-0.6)
    got = decode(engine, SHORT, LONG, PipelineOptions(hard_min_words=3))
    assert got is not None and got.event.text == "long reading." and len(engine.calls) == 2


def test_without_a_longer_context_or_with_it_off_a_bad_reading_stays() -> None:
    engine = Reading(short_s=2.0, short_logprob=-0.6)
    got = decode(engine, SHORT, None)
    assert got is not None and got.event.text == "a short reading." and len(engine.calls) == 1
    engine = Reading(short_s=2.0, short_logprob=-0.6)
    got = decode(engine, SHORT, LONG, PipelineOptions(hard_logprob=-1.0))
    assert got is not None and got.event.text == "a short reading." and len(engine.calls) == 1


@pytest.mark.parametrize(("says", "logprob"), [("", -0.1), ("long reading.", -0.6), ("long reading.", -0.7)])
def test_a_longer_reading_with_no_words_or_no_better_leaves_the_first_one(says: str, logprob: float) -> None:
    engine = Reading(short_s=2.0, short_logprob=-0.6, long_says=says, long_logprob=logprob)
    got = decode(engine, SHORT, LONG)
    assert got is not None and got.event.text == "a short reading."
    assert len(engine.calls) == 2


def test_a_longer_reading_that_fails_leaves_the_first_one() -> None:
    engine = Reading(short_s=2.0, short_logprob=-0.6, echo_long=True)
    got = decode(engine, SHORT, LONG, times=2)
    assert got is not None and got.event.text == "a short reading.", "the context said again is no reading"
    assert engine.calls == [(4 * SR, SHORT.text), (10 * SR, LONG.text)] * 2, "and the next final tries both again"


def test_the_longer_context_chains_back_and_is_kept_only_when_a_second_longer() -> None:
    before = LeftContext(ones(5.0), "one two three four five.", (1.0, 2.0, 3.0, 4.0, 4.9))
    head = ones(2.0)
    said = result("six seven.", (0.9, 1.9))
    short = LeftContext(head, "six seven.", (0.9, 1.9))
    got = longer(short, head, said, before, PipelineOptions(hard_left_context_s=10.0))
    assert got is not None and got.text == "one two three four five. six seven." and got.audio.shape[0] == 7 * SR
    cut = longer(short, head, said, before, PipelineOptions(hard_left_context_s=4.5))
    assert cut is not None and cut.text == "four five. six seven." and cut.audio.shape[0] == 4 * SR
    assert longer(short, head, said, before, PipelineOptions(hard_left_context_s=2.5)) is None, \
        "2.5 s would hold no more than the short context: nothing new to hear"
    assert longer(short, head, said, before, PipelineOptions(hard_left_context_s=0.0)) is None, "off"
    assert longer(None, head, said, before, PipelineOptions()) is None, "no context, no longer one"


class Poor(SentenceEngine):
    """Finals that hear a left context read "<forced> heard N." (N samples), at log-prob -0.6 unless they hear
    more than ``better_after`` samples (-0.1); each such final's (samples, forced text) is kept in ``finals``."""

    def __init__(self, better_after: int) -> None:
        super().__init__()
        self.better_after = better_after
        self.finals: list[tuple[int, str]] = []

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        if max_new_tokens is not None or not prefix:
            return hyp
        self.finals.append((audio.shape[0], prefix))
        n = len(prefix.split())
        ends = (*(i * 0.1 for i in range(1, n + 1)), audio.shape[0] / SR - 0.1, audio.shape[0] / SR)
        poor = -0.1 if audio.shape[0] > self.better_after else -0.6
        return Hypothesis(f"{prefix} heard {audio.shape[0]}.", 0.01, poor, "en", 0.0, 0.0, 0,
                          word_ends=ends if word_times else ())


def run_sentences(engine: Poor, sentence: np.ndarray, n: int) -> list[str]:
    """``n`` sentences with 150 ms between them, each pause a commit, then a second of silence; the finals."""
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=12.0, hard_left_context_s=20.0,
                                                     hard_min_words=1))
    for _ in range(n):
        push(pipe, np.concatenate([silence(150), sentence]), ctx)
        assert ctx.scheduler.wait_idle(10)
    push(pipe, silence(1000), ctx)
    assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    return [e.text for e in finals(events)]


def test_after_three_commits_a_bad_reading_of_the_last_part_hears_both_before_it(sentence: np.ndarray) -> None:
    """The left context is the last part's (not chained), and every reading after it is poor, so the last
    part's final is decoded again after the longer context (where it reads better): the words of both commits,
    and their audio."""
    engine = Poor(better_after=int(2.5 * sentence.shape[0]))
    said = run_sentences(engine, sentence, 3)
    assert len(said) == 3 and said[-1].startswith("heard "), f"a commit at each pause, then the last final: {said}"
    heard = int(said[-1].split()[1].rstrip("."))
    forced = {p for size, p in engine.calls if size == heard}
    assert forced == {f"{said[0]} {said[1]}"}, "the reading kept forced both commits"
    assert heard > 2.5 * sentence.shape[0], "and heard the audio of all three parts"
    assert any(p == said[1] for _size, p in engine.finals), "after first reading it after the last commit alone"


def test_the_part_after_one_read_again_hears_the_longer_context_from_its_first_final(sentence: np.ndarray) -> None:
    """Four sentences: the third part reads badly after the second alone and better after both before it (as
    above). The fourth part's finals then hear the longer context from the first: none hears the third
    part alone. Passed on once only: the part after one that was not read again itself starts short."""
    engine = Poor(better_after=int(2.5 * sentence.shape[0]))
    said = run_sentences(engine, sentence, 4)
    assert len(said) == 4, f"a commit at each pause, then the last final: {said}"
    third = [p for _size, p in engine.finals if p.endswith(said[1])]
    assert said[1] in third and f"{said[0]} {said[1]}" in third, \
        f"the third part was read after the second alone, then after both: {third}"
    fourth = [p for _size, p in engine.finals if p.endswith(said[2])]
    assert fourth, "the fourth part's finals heard the third"
    assert all(p == f"{said[0]} {said[1]} {said[2]}" for p in fourth), \
        f"every final of the fourth part heard the three parts before it: {fourth}"


def test_being_read_with_the_longer_context_is_passed_on_to_one_part_only(sentence: np.ndarray) -> None:
    """Five sentences; the fourth reads well after the longer context it was given at once, so it was not read
    again itself: the fifth part's first final hears the fourth alone."""
    engine = Poor(better_after=int(2.5 * sentence.shape[0]))
    said = run_sentences(engine, sentence, 5)
    assert len(said) == 5, said
    assert any(p == said[3] for _size, p in engine.finals), "the fifth part heard the fourth alone first"


def follows_a_final(o: PipelineOptions) -> OpenUtterance:
    """An utterance that starts 300 ms after the last final's audio (``final_left_context_gap_ms``), offered
    that final: 2 s of "six seven." (ends 0.9, 1.9 s), which itself heard 5 s of "one two three four five."."""
    from livenexus_worker.streaming.left import FollowOn

    before_utt = Utterance("s-1", 0)
    before_utt.append(ones(2.0))
    before = OpenUtterance(before_utt, 0, left=LeftContext(ones(5.0), "one two three four five.",
                                                           (1.0, 2.0, 3.0, 4.0, 4.9)))
    event = TranscriptEvent(stream_id="s", speaker="spk", segment_id="s-1", text="six seven.", is_final=True,
                            start=0.0, end=2.0)
    follow = FollowOn(o)
    follow.record(before, PendingFinal(event, 0.0, (0.9, 1.9)))
    nxt = Utterance("s-2", int(2.3 * SR))
    nxt.append(ones(1.0))
    op = OpenUtterance(nxt, 0)
    follow.offer(op, chain=False)
    return op


def test_an_utterance_that_follows_a_final_gets_the_longer_context_too() -> None:
    """The VAD ended the last utterance at a pause and the next starts 300 ms after its final's audio: it hears
    that final as its left context, and the longer one reaches back over the context that final heard."""
    op = follows_a_final(PipelineOptions(hard_left_context_s=10.0, chain_short_left_s=0.0))
    assert op.left is not None and op.left.text == "six seven.", "the last final, alone (not chained)"
    assert op.left_long is not None and op.left_long.text == "one two three four five. six seven."
    assert op.left_long.audio.shape[0] == 7 * SR


@pytest.mark.parametrize(("short_s", "chained"), [(3.0, True), (2.0, False), (0.0, False)])
def test_a_short_last_part_leaves_a_context_chained_over_the_one_before(short_s: float, chained: bool) -> None:
    """The last final's 2 s of words alone are under ``chain_short_left_s`` (3 s): the next part hears them
    chained over the context that final heard, up to ``final_left_context_s`` (6 s) cut at a word's end; 2 s
    is not under 2 s, and 0 turns it off. The longer context (10 s) is still a second longer or none."""
    op = follows_a_final(PipelineOptions(hard_left_context_s=10.0, chain_short_left_s=short_s))
    assert op.left is not None and op.left_long is not None
    if chained:
        assert op.left.text == "two three four five. six seven." and op.left.audio.shape[0] == 6 * SR
        assert op.left.ends == pytest.approx((1.0, 2.0, 3.0, 3.9, 4.9, 5.9))
    else:
        assert op.left.text == "six seven." and op.left.audio.shape[0] == 2 * SR
    assert op.left_long.text == "one two three four five. six seven."
