"""Partials that decode only the audio from inside the latest timed agreed word on (``partial_trim``): where the
cut goes, what such a partial hears and shows, and, through the pipeline, that no word is lost or said twice
across the cut while the words before it are no longer forced (stand-in decoder that reads words from audio)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming import trims
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import OpenUtterance, PartialTrim

from .fakes import SR, LengthEngine, finals, pipeline, push, silence

WORDS = ["one", "two", "three", "four", "five", "six"]
ENDS = (0.3, 0.6, 1.1, 1.5, 1.8, 2.1)
PROBS = (0.9,) * 6
LONG = PipelineOptions(partial_trim_head_s=1.0, partial_trim_tail_s=1.0)


def _op(agreed: list[str], ends: tuple[float, ...] = ()) -> OpenUtterance:
    op = OpenUtterance(Utterance("u", 0), 0)
    for _ in range(2):  # two partials that agree commit the words
        op.agreement.update(" ".join(agreed))
    op.timed, op.timed_probs = ends, (0.9,) * len(ends)
    return op


def test_the_cut_is_inside_the_latest_long_agreed_word_that_leaves_the_tail() -> None:
    # "six" and "five" end too close to the end (under a second after a cut in them); "four" is cut 120 ms
    # before its end, to be heard again, forced.
    trim = trims.pick(_op(WORDS, ENDS), LONG, WORDS, int(2.6 * SR))
    assert trim == PartialTrim(int(1.5 * SR) - 120 * 16, 3, ENDS[:3], PROBS[:3])
    # By default a cut leaves 0.8 s: "five".
    trim = trims.pick(_op(WORDS, ENDS), PipelineOptions(), WORDS, int(2.6 * SR))
    assert trim == PartialTrim(int(1.8 * SR) - 120 * 16, 4, ENDS[:4], PROBS[:4])


@pytest.mark.parametrize(("ends", "committed", "o", "why"), [
    ((0.3, 0.6, 1.1, 1.3, 1.8, 2.1), WORDS, LONG, "a word too short to cut into, then the head is"),
    (ENDS, WORDS[:4], LONG, "the agreement was reset under the timed words"),
    (ENDS, WORDS, replace(LONG, partial_trim=False), "off"),
    (ENDS, WORDS, replace(LONG, partial_trim_tail_s=2.0), "no word leaves the tail"),
    ((), WORDS, LONG, "no word is timed"),
])
def test_no_cut(ends: tuple[float, ...], committed: list[str], o: PipelineOptions, why: str) -> None:
    assert trims.pick(_op(WORDS, ends), o, committed, int(2.6 * SR)) is None, why


def test_no_cut_after_a_cut_partial_was_dropped() -> None:
    op = _op(WORDS, ENDS)
    assert trims.pick(op, LONG, WORDS, int(2.6 * SR)) is not None
    op.trim_dropped = True
    assert trims.pick(op, LONG, WORDS, int(2.6 * SR)) is None


def test_agreed_words_are_timed_by_an_aligned_partial_asked_for_every_few_words() -> None:
    o = PipelineOptions()
    assert not trims.wants_times(_op(WORDS[:1]), o)
    op = _op(WORDS[:4])
    assert trims.wants_times(op, o)
    assert not trims.wants_times(op, replace(o, partial_trim=False))
    trims.timed(op, WORDS, ENDS, PROBS)
    assert (op.timed, op.timed_probs) == (ENDS[:4], PROBS[:4])  # only the agreed words' times are kept
    assert not trims.wants_times(op, o)
    trims.timed(op, WORDS[:3], ENDS[:3], PROBS[:3])  # a reading of fewer words than are timed
    trims.timed(op, WORDS, ENDS[:5], PROBS[:5])  # times that are not the words'
    assert op.timed == ENDS[:4]


class Recording(LengthEngine):
    def __init__(self, new: str) -> None:
        super().__init__()
        self.new = new

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        text = f"{prefix} {self.new}".strip()
        n = len(text.split())
        ends = tuple(0.2 * (i + 1) for i in range(n)) if word_times and n else ()
        return Hypothesis(text, 0.01, -0.2, "en", 0.0, 0.0, 0, word_ends=ends, word_probs=(0.5,) * len(ends))


def test_decode_hears_the_head_as_previous_text_and_shows_it() -> None:
    engine = Recording("five six")
    cut = int(1.2 * SR)
    trim = PartialTrim(cut, 3, ENDS[:3], PROBS[:3])
    audio = np.ones(int(2.3 * SR), dtype=np.int16)
    out = trims.decode(engine, PipelineOptions(), audio, WORDS[:4], trim, aligned=True)  # type: ignore[arg-type]
    assert out is not None
    hyp, text, ends, probs = out
    # Only the audio after the cut, the agreed words before it as previous text, the agreed one after forced.
    assert engine.calls == [(audio.shape[0] - cut, "four")]
    assert engine.contexts == ["one two three"]
    assert hyp.text == "four five six"
    assert text == "one two three four five six"
    assert ends == pytest.approx((*ENDS[:3], 1.4, 1.6, 1.8))  # the tail's times from the part's start
    assert probs == (0.9, 0.9, 0.9, 0.5, 0.5, 0.5)
    out = trims.decode(engine, PipelineOptions(), audio, WORDS[:4], trim, aligned=False)  # type: ignore[arg-type]
    assert out is not None and out[2:] == ((), ())
    assert trims.decode(Recording(""), PipelineOptions(), audio, WORDS[:3], trim, True) is None  # type: ignore[arg-type]


# ---- through the pipeline -------------------------------------------------------------------------------------

class WordEngine(LengthEngine):
    """Reads words from audio as a decoder would: each run of sound is a word, known by its first samples. A run
    the window starts inside is heard as a fragment of a word: "?" unless the decoder was forced to a word
    there. Forced words come back first, as CTranslate2 returns them."""

    def __init__(self, names: dict[bytes, str]) -> None:
        super().__init__()
        self.names = names

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        loud = np.nonzero(audio)[0]
        words: list[str] = []
        ends: list[float] = []
        if loud.size:
            gaps = np.nonzero(np.diff(loud) > 20 * 16)[0]
            starts = [loud[0], *loud[gaps + 1]]
            stops = [*loud[gaps] + 1, loud[-1] + 1]
            for s, e in zip(starts, stops, strict=True):
                words.append(self.names.get(audio[s : s + 64].tobytes(), "?"))
                ends.append(e / SR)
        forced = prefix.split()
        out = forced + words[len(forced):]
        timed = word_times and len(words) >= len(out)
        return Hypothesis(" ".join(out), 0.01, -0.1, "en", 0.0, 0.0, 0,
                          word_ends=tuple(ends[: len(out)]) if timed else (),
                          word_probs=(0.9,) * len(out) if timed else ())


def _talk(sentence: np.ndarray, n: int) -> tuple[np.ndarray, list[str], dict[bytes, str]]:
    """``n`` words of 280 ms cut from real speech, 40 ms apart (no pause a commit would cut at)."""
    size = 280 * 16
    pieces = [sentence[i * size : (i + 1) * size] for i in range(sentence.shape[0] // size)]
    assert len(pieces) >= 8
    parts: list[np.ndarray] = [silence(300)]
    truth: list[str] = []
    names: dict[bytes, str] = {}
    for i in range(n):
        piece = pieces[i % len(pieces)].copy()
        piece[0] = i + 1  # the piece's word: the same speech stands for several
        piece[piece == 0] = 1  # no digital silence inside a word
        names[piece[:64].tobytes()] = f"w{i}"
        truth.append(f"w{i}")
        parts += [piece, silence(40)]
    parts.append(silence(1500))
    return np.concatenate(parts), truth, names


@pytest.mark.parametrize("on", [True, False], ids=["cut", "whole"])
def test_a_long_run_of_words_loses_none_across_the_cut(sentence: np.ndarray, on: bool) -> None:
    audio, truth, names = _talk(sentence, 30)
    engine = WordEngine(names)
    ctx, pipe, events = pipeline(engine, PipelineOptions(partial_trim=on))
    push(pipe, audio, ctx)
    assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    partials = [e for e in events if not e.is_final]
    assert len(partials) > 50
    for e in partials:  # every partial reads the words said so far, in order, none twice, no fragment
        assert e.text.split() == truth[: len(e.text.split())], e.text
    assert " ".join(e.text for e in finals(events)) == " ".join(truth)
    calls = list(zip(engine.calls, engine.contexts, strict=True))
    cut = [(n, prefix) for (n, prefix), context in calls if context]
    if on:
        assert len(cut) > 20
        # The words before the cut are heard as previous text, not forced: far fewer forced words in all.
        forced = sum(len(prefix.split()) for (_n, prefix), _context in calls)
        assert forced < 0.5 * sum(len(p.split()) + len(c.split()) for (_n, p), c in calls)
    else:
        assert not cut
