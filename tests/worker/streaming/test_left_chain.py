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


def _last_part(sentence: np.ndarray, options: object, background: float = 0.0, n: int = 3
               ) -> tuple[list[str], str, int, bool]:
    """``n`` sentences with 150 ms between them: each pause commits the sentence before it. Returns the finals,
    what the last part's final forced, and how many samples it heard. ``background``: the RMS of a room's
    noise under all of it. Last: was the stream read as noisy at the end."""
    from livenexus_worker.inference.engine import Hypothesis

    from .fakes import SentenceEngine, finals, pipeline, push, silence

    def speaker_only(audio: np.ndarray) -> np.ndarray:
        """The speaker's samples of ``audio``, digital silence elsewhere (the stand-in decoder reads pauses
        from it): :func:`room` marks them in the lowest bit, as no level can tell a pause in this much
        noise from a soft consonant."""
        return audio if not background else np.where(audio & 1, audio, 0).astype(np.int16)

    class Continuing(SentenceEngine):
        """A final with a forced start goes on from it, saying how much audio it heard in all."""

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            audio = speaker_only(audio)
            hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
            if max_new_tokens is not None or not prefix:
                return hyp
            n = len(prefix.split())
            ends = (*(i * 0.1 for i in range(1, n + 1)), audio.shape[0] / SR - 0.1, audio.shape[0] / SR)
            return Hypothesis(f"{prefix} heard {audio.shape[0]}.", 0.01, -0.1, "en", 0.0, 0.0, 0,
                              word_ends=ends if word_times else ())

    rng = np.random.default_rng(7)

    def room(audio: np.ndarray) -> np.ndarray:
        if not background:
            return audio
        noisy = np.clip(audio + rng.normal(0.0, background, audio.shape[0]), -32768, 32766).astype(np.int16)
        return (noisy & ~1) | (audio != 0)

    engine = Continuing()
    ctx, pipe, events = pipeline(engine, options)  # type: ignore[arg-type]
    for _ in range(n):
        push(pipe, room(np.concatenate([silence(150), sentence])), ctx)
        assert ctx.scheduler.wait_idle(10)
    push(pipe, room(silence(1000)), ctx)
    assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    said = [e.text for e in finals(events)]
    assert len(said) == n and said[-1].startswith("heard "), f"a commit at each pause, then the last final: {said}"
    heard = int(said[-1].split()[1].rstrip("."))
    (forced,) = {p for size, p in engine.calls if size == heard}
    return said, forced, heard, pipe.noisy


@pytest.mark.parametrize("chain", [False, True])
def test_a_third_part_hears_the_words_of_both_commits_before_it(sentence: np.ndarray, chain: bool) -> None:
    """Three sentences with 150 ms between them: each pause commits the sentence before it."""
    from livenexus_worker.streaming.pipeline import PipelineOptions

    said, forced, heard, _noisy = _last_part(sentence, PipelineOptions(final_left_context_s=12.0,
                                                                       final_left_context_chain=chain))
    assert forced == (f"{said[0]} {said[1]}" if chain else said[1]), "the third part's decode forced both commits"
    assert (heard > 2.5 * sentence.shape[0]) == chain, "and heard the audio of all three parts (or of two)"


@pytest.mark.parametrize("snr_db", [10.0, 26.0])
def test_a_noisy_stream_chains_its_left_context_by_itself(sentence: np.ndarray, snr_db: float) -> None:
    """In a room 10 dB under the speaker the pause detector reads the stream as noisy once 2 s of speech set
    its level (``noisy_below_db``): from then on a commit's words are timed, and the third commit's context
    reaches back over the second. At 26 dB the left context stays one part's."""
    from livenexus_worker.streaming.pipeline import PipelineOptions

    level = float(np.sqrt(np.mean(sentence.astype(np.float64) ** 2)))
    # Short parts chain by themselves (chain_short_left_s): off, to see the noise alone decide.
    o = PipelineOptions(final_left_context_s=12.0, chain_short_left_s=0.0)
    said, forced, heard, read = _last_part(sentence, o, background=level / 10 ** (snr_db / 20), n=4)
    noisy = snr_db < PipelineOptions().noisy_below_db
    assert read == noisy, "what the runtime counts as a noisy stream (livenexus_noisy_streams)"
    assert forced == (f"{said[1]} {said[2]}" if noisy else said[2])
    assert (heard > 2.5 * sentence.shape[0]) == noisy


def test_a_stream_near_the_line_does_not_switch_back_and_forth(monkeypatch: pytest.MonkeyPatch) -> None:
    from livenexus_worker.streaming.pipeline import PipelineOptions

    from .fakes import LengthEngine, pipeline

    o = PipelineOptions()
    ctx, pipe, _events = pipeline(LengthEngine(), o)
    readings: list[float | None] = []
    monkeypatch.setattr(pipe._pauses, "snr_db", lambda: readings[-1])
    below, line, margin = o.noisy_below_db - 1, o.noisy_below_db + 0.5, o.noisy_below_db + o.noisy_margin_db + 0.5
    got = []
    for snr in (None, line, below, line, None, margin, line):
        readings.append(snr)
        got.append(pipe._chain())
    assert got == [False, False, True, True, True, False, False], "in below the line, out only past the margin"
    ctx.scheduler.close()
    forced_ctx, forced, _ = pipeline(LengthEngine(), PipelineOptions(final_left_context_chain=True))
    monkeypatch.setattr(forced._pauses, "snr_db", lambda: below)
    assert forced._chain() and forced.noisy, "a chain forced on still reads the noise the runtime counts"
    monkeypatch.setattr(forced._pauses, "snr_db", lambda: margin)
    assert forced._chain() and not forced.noisy, "and stays chained when the room is clean"
    forced_ctx.scheduler.close()
    off_ctx, off, _ = pipeline(LengthEngine(), PipelineOptions(noisy_below_db=0))
    monkeypatch.setattr(off._pauses, "snr_db", lambda: 0.0)
    assert not off._chain(), "0: never"
    off_ctx.scheduler.close()
