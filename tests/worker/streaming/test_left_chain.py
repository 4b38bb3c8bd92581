"""A left context that reaches back over several committed parts (``final_left_context_chain``): the words
fit from the head and the context its decodes heard, cut only where a word's end is known."""

from __future__ import annotations

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.streaming.left import left_context
from livenexus_worker.streaming.stream_state import LeftContext, PendingFinal

SR = 16000


def result(text: str, ends: tuple[float, ...] = ()) -> PendingFinal:
    event = TranscriptEvent(stream_id="s", speaker="spk", segment_id="s-1", text=text, is_final=True,
                            start=0.0, end=2.0)
    return PendingFinal(event, 0.0, ends)


def ramp(seconds: float, first: int) -> np.ndarray:
    return (np.arange(int(seconds * SR), dtype=np.int64) % 30000 + first).astype(np.int16)


def test_a_short_head_is_heard_after_the_context_before_it() -> None:
    before = LeftContext(ramp(3, 0), "alpha beta gamma.", (1.0, 2.0, 2.9))
    head = ramp(2, 1000)
    got = left_context(head, result("delta epsilon.", (0.8, 1.9)), 6.0, before)
    assert got is not None and got.text == "alpha beta gamma. delta epsilon."
    assert got.audio.shape[0] == 5 * SR and got.audio[0] == before.audio[0] and got.audio[-1] == head[-1]
    assert got.ends == pytest.approx((1.0, 2.0, 2.9, 3.8, 4.9)), "the head's word ends move by the context's length"
    alone = left_context(head, result("delta epsilon.", (0.8, 1.9)), 6.0)
    assert alone is not None and alone.text == "delta epsilon.", "without it, only the head (the shipped rule)"


def test_the_chain_is_cut_at_the_word_end_that_makes_it_fit() -> None:
    before = LeftContext(ramp(4, 0), "one two three four.", (1.0, 2.0, 3.0, 3.9))
    head = ramp(2, 500)
    got = left_context(head, result("five six.", (1.0, 1.9)), 3.5, before)
    # 6 s in all: from the end of "two" (2.0 s) 4 s are left, from the end of "three" (3.0 s) 3 s fit.
    assert got is not None and got.text == "four. five six."
    assert got.audio.shape[0] == 3 * SR and got.audio[0] == before.audio[3 * SR]
    assert got.ends == pytest.approx((0.9, 2.0, 2.9))


def test_a_context_or_head_without_word_times_is_never_cut_blind() -> None:
    head = ramp(2, 0)
    untimed = LeftContext(ramp(3, 0), "alpha beta gamma.")
    got = left_context(head, result("delta epsilon.", (0.8, 1.9)), 6.0, untimed)
    assert got is not None and got.text == "delta epsilon.", "a context without times is not chained"
    timed = LeftContext(ramp(3, 0), "alpha beta gamma.", (1.0, 2.0, 2.9))
    whole = left_context(head, result("delta epsilon."), 6.0, timed)
    assert whole is not None and whole.text == "alpha beta gamma. delta epsilon." and whole.ends == (), \
        "all of it fits: heard, but its times are unknown, so the next chain stops at it"
    cut = left_context(head, result("delta epsilon."), 2.5, timed)
    assert cut is not None and cut.text == "delta epsilon." and cut.audio.shape[0] == 2 * SR + SR // 10, \
        "cut where the context's last word ends: the head's own word ends are not needed"
    assert left_context(head, result("delta epsilon."), 1.5, timed) is None, "inside the head: no safe cut"


def test_the_chain_stays_within_the_limit_however_long_the_speaker_goes_on() -> None:
    left: LeftContext | None = None
    for i in range(30):
        head = ramp(1.5, i)
        left = left_context(head, result(f"w{i}a w{i}b.", (0.7, 1.4)), 5.0, left)
        assert left is not None and left.audio.shape[0] <= 5 * SR
        assert len(left.ends) == len(left.text.split()) and left.text.endswith(f"w{i}a w{i}b.")
    assert left is not None and left.text.split()[0] != "w0a", "old words fall out of the chain"


@pytest.mark.parametrize("chain", [False, True])
def test_a_third_part_hears_the_words_of_both_commits_before_it(sentence: np.ndarray, chain: bool) -> None:
    """Three sentences with 150 ms between them: each pause commits the sentence before it."""
    from livenexus_worker.inference.engine import Hypothesis
    from livenexus_worker.streaming.pipeline import PipelineOptions

    from .fakes import SentenceEngine, finals, pipeline, push, silence

    class Continuing(SentenceEngine):
        """A final with a forced start goes on from it, saying how much audio it heard in all."""

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
            if max_new_tokens is not None or not prefix:
                return hyp
            n = len(prefix.split())
            ends = (*(i * 0.1 for i in range(1, n + 1)), audio.shape[0] / SR - 0.1, audio.shape[0] / SR)
            return Hypothesis(f"{prefix} heard {audio.shape[0]}.", 0.01, -0.1, "en", 0.0, 0.0, 0,
                              word_ends=ends if word_times else ())

    engine = Continuing()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=12.0, final_left_context_chain=chain))
    for _ in range(3):
        push(pipe, np.concatenate([silence(150), sentence]), ctx)
        assert ctx.scheduler.wait_idle(10)
    push(pipe, silence(1000), ctx)
    assert ctx.scheduler.wait_idle(10)
    said = [e.text for e in finals(events)]
    assert len(said) == 3 and said[2].startswith("heard "), "two commits, then the third part's final"
    heard = int(said[2].split()[1].rstrip("."))
    (forced,) = {p for size, p in engine.calls if size == heard}
    assert forced == (f"{said[0]} {said[1]}" if chain else said[1]), "the third part's decode forced both commits"
    assert (heard > 2.5 * sentence.shape[0]) == chain, "and heard the audio of all three parts (or of two)"
    ctx.scheduler.close()
