"""Partials that decode only what is still unstable (``partial_trim``).

A partial forces the part's agreed words as the decoder's start, and CTranslate2 runs a forced token as a
full decoder step: on the meeting benchmark a partial forced 7.9 tokens on average, ~7 ms each (one core of
an AMD EPYC), about 40 % of its decoder time, for words that could no longer change. Whisper's previous-text
slot is read in one pass instead. So once the agreed words are timed (by a partial that aligned its words), a partial
decodes only the audio from inside one of them on, hears the agreed words before that one as previous text,
and shows them in front of what it reads.

The audio starts inside an agreed word, and that word is forced: the fragment of it at the start of the
window is read as that word whether the alignment put its end a little early or late, so no word is lost or
said twice across the cut. Finals and confirming partials still decode the whole part: this changes what
partials cost and show, not what becomes final.
"""

from __future__ import annotations

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.inference.engine import Hypothesis, WhisperEngine
from livenexus_worker.streaming import finals
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.stream_state import LeftContext, OpenUtterance, PartialTrim

_INTO_WORD_MS = 120
"""The cut is this far before the aligned end of the word it is in: alignment steps are 20 ms and a word's end
is aligned up to ~60 ms off, so the cut stays inside the word."""
_WORD_MIN_MS = 250
"""A word is cut into only when it is aligned this long at least (from the end of the word before it)."""
_UNTIMED_WORDS = 2
"""A partial aligns its words when this many agreed words are not timed yet (one more decoder pass, ~25 ms)."""


def wants_times(op: OpenUtterance, o: PipelineOptions) -> bool:
    """Should the next partial align its words, so more of the agreed words are timed?"""
    return o.partial_trim and len(op.agreement.committed) - len(op.timed) >= _UNTIMED_WORDS


def timed(op: OpenUtterance, words: list[str], ends: tuple[float, ...], probs: tuple[float, ...]) -> None:
    """A partial read ``words``, aligned to ``ends``: keep the times of those of them that are agreed. Caller
    holds the stream's lock."""
    agreed = len(op.agreement.committed)
    if ends and len(ends) == len(words) == len(probs) and len(ends) >= max(agreed, len(op.timed)):
        op.timed, op.timed_probs = ends[:agreed], probs[:agreed]


def pick(op: OpenUtterance, o: PipelineOptions, committed: list[str], heard: int) -> PartialTrim | None:
    """Where a partial of ``heard`` samples of ``op``, whose agreed words are ``committed``, starts decoding:
    inside the latest timed agreed word that leaves ``partial_trim_tail_s`` of audio after the cut and
    ``partial_trim_head_s`` before it; None to decode the whole part. Caller holds the stream's lock."""
    if not o.partial_trim or op.trim_dropped or len(committed) < len(op.timed):
        return None
    ends = op.timed
    for j in range(len(ends) - 1, 0, -1):
        cut = int(ends[j] * SAMPLE_RATE) - _INTO_WORD_MS * SAMPLES_PER_MS
        if heard - cut < o.partial_trim_tail_s * SAMPLE_RATE:
            continue
        if cut < o.partial_trim_head_s * SAMPLE_RATE:
            return None
        if ends[j] - ends[j - 1] >= _WORD_MIN_MS / 1000:
            return PartialTrim(cut, j, ends[:j], op.timed_probs[:j])
    return None


def decode(engine: WhisperEngine, o: PipelineOptions, audio: np.ndarray, committed: list[str], trim: PartialTrim,
           aligned: bool) -> tuple[Hypothesis, str, tuple[float, ...], tuple[float, ...]] | None:
    """A partial of the part ``audio`` decoded after ``trim``: the hypothesis of the audio after the cut, the
    text of the whole part (the agreed words before the cut, then what it read), and word times (from the
    part's start) and last-token probabilities ((), () when unaligned). None when it read nothing: the part
    is then decoded whole."""
    head, rest = committed[: trim.words], committed[trim.words :]
    hyp = engine.transcribe(audio[trim.cut :], beam_size=1, language=o.language, prefix=" ".join(rest),
                            context=" ".join(head), max_new_tokens=o.partial_max_new_tokens, word_times=aligned)
    if not hyp.text.split():
        return None
    text = f"{' '.join(head)} {hyp.text}"
    if not hyp.word_ends:
        return hyp, text, (), ()
    shift = trim.cut / SAMPLE_RATE
    return hyp, text, trim.ends + tuple(e + shift for e in hyp.word_ends), trim.probs + hyp.word_probs


def decode_partial(engine: WhisperEngine, o: PipelineOptions, audio: np.ndarray, committed: list[str],
                   trim: PartialTrim | None, left: LeftContext | None, aligned: bool, stream_id: str
                   ) -> tuple[Hypothesis, str, tuple[float, ...], tuple[float, ...], bool, bool]:
    """A partial of the part ``audio``: after ``trim`` (:func:`decode`) when there is one and it reads
    something, else as :func:`finals.decode_partial` does. The last item says whether it was decoded after the
    cut."""
    if trim is not None and (cut := decode(engine, o, audio, committed, trim, aligned)) is not None:
        return *cut, False, True
    return *finals.decode_partial(engine, o, audio, " ".join(committed), left, aligned, stream_id), False
