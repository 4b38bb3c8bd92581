"""The left context a part's decodes hear: the committed words before it (the last part's, or with
``final_left_context_chain`` several parts'), cut only where a word's end is known, and the last final kept for
an utterance that starts right after it (:class:`FollowOn`)."""

from __future__ import annotations

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.rests import ends_sentence, forced_left
from livenexus_worker.streaming.stream_state import LeftContext, OpenUtterance, PendingFinal


class FollowOn:
    """The stream's last final, kept as the left context of an utterance that starts right after its audio
    (``final_left_context_gap_ms``). Caller holds the stream's lock."""

    def __init__(self, o: PipelineOptions) -> None:
        self._o = o
        # Where its audio ends (stream sample), its utterance, the final and how many samples it heard. The
        # context itself is cut only for an utterance that gets it: most finals are followed by none.
        self._last: tuple[int, OpenUtterance, PendingFinal, int] | None = None

    def record(self, op: OpenUtterance, result: PendingFinal) -> None:
        """``result`` was emitted as the final of ``op``."""
        heard = round((result.event.end - result.event.start) * SAMPLE_RATE)
        self._last = (op.utt.start_sample + heard, op, result, heard)

    def offer(self, op: OpenUtterance, chain: bool) -> None:
        """Give ``op`` the last final as its left context when it started within the gap after that final's
        audio, with that final's own context before it when ``chain``. Not to the part after a commit (its
        context is the commit's), nor to one that has it."""
        gap = self._o.final_left_context_gap_ms * SAMPLES_PER_MS
        if self._last is None or op.left is not None or op.after_commit or not gap:
            return
        end, before, result, heard = self._last
        if 0 <= op.utt.start_sample - end <= gap:
            hear_before(op, before, before.utt.audio()[:heard], result, chain, self._o)


def hear_before(op: OpenUtterance, before: OpenUtterance, head: np.ndarray, result: PendingFinal, chain: bool,
                o: PipelineOptions, rated: bool = False) -> None:
    """Give ``op`` the final ``result`` of ``head`` (``before``'s audio) as its left context, chained over
    ``before``'s own when ``chain`` or when ``head``'s words alone are short (``chain_short_left_s``), and the
    longer one a bad reading is decoded again with (:func:`longer`). ``rated``: a decode that heard past
    ``head`` read where its sentence ends; else a closing full stop is still to be rated (``left_unrated``)."""
    op.left = left_context(head, result, o.final_left_context_s, forced_left(before, o) if chain else None)
    if not chain and op.left is not None and op.left.audio.shape[0] < o.chain_short_left_s * SAMPLE_RATE:
        op.left = left_context(head, result, o.final_left_context_s, forced_left(before, o)) or op.left
    op.left_long = longer(op.left, head, result, forced_left(before, o, long=True), o)
    # In every session-41 meeting run that read "… several obvious bugs." again, the part after it ("Could each
    # team send …", read "Codec team Chen") was read again too: the part after one read again hears the longer
    # context at once, which saves its first decode (~0.35 s of the final's lag). Read once, here: a reading of
    # ``before`` that ends after this (a confirming decode) does not reach this part.
    op.reads_hard = before.read_again and op.left_long is not None
    op.left_unrated = not rated and op.left is not None and ends_sentence(op.left.text)


def left_context(head: np.ndarray, result: PendingFinal | None, limit_s: float,
                 before: LeftContext | None = None) -> LeftContext | None:
    """What the part after a commit hears before itself: the last words of the committed ``head`` that fit
    in ``limit_s`` seconds (from where the word before them ended), or all of it when it is that short; None
    when nothing fits or the commit's words have no times. With ``before`` (the head's own left context, as
    its decodes forced it), the words fit from both: a short head does not leave the next part with a short
    context."""
    limit = int(limit_s * SAMPLE_RATE)
    if result is None or not head.size or limit <= 0:
        return None
    words = result.event.text.split()
    ends: list[float | None] = [*result.word_ends] if len(result.word_ends) == len(words) else [None] * len(words)
    audio = head
    if before is not None and before.ends and len(before.ends) == len(before.text.split()) and words:
        offset = before.audio.shape[0] / SAMPLE_RATE
        audio = np.concatenate([before.audio, head])
        words = [*before.text.split(), *words]
        ends = [*before.ends, *(None if e is None else offset + e for e in ends)]
    if audio.shape[0] <= limit:
        return LeftContext(audio.copy(), " ".join(words), _known(ends, 0.0))
    for k in range(1, len(words)):
        cut = ends[k - 1]
        if cut is not None and audio.shape[0] - int(cut * SAMPLE_RATE) <= limit:
            return LeftContext(audio[int(cut * SAMPLE_RATE):].copy(), " ".join(words[k:]), _known(ends[k:], cut))
    return None


def longer(short: LeftContext | None, head: np.ndarray, result: PendingFinal, before: LeftContext | None,
           o: PipelineOptions) -> LeftContext | None:
    """The ``hard_left_context_s`` context of the part after ``head`` (chained over ``before``), or None when
    it is off, or would not be at least a second longer than ``short``: a decode again would hear nothing new."""
    if o.hard_left_context_s <= 0 or short is None:
        return None
    long = left_context(head, result, o.hard_left_context_s, before)
    if long is None or long.audio.shape[0] < short.audio.shape[0] + SAMPLE_RATE:
        return None
    return long


def _known(ends: list[float | None], start: float) -> tuple[float, ...]:
    """``ends`` from ``start`` on, or () when one of them is unknown."""
    if any(e is None for e in ends):
        return ()
    return tuple(e - start for e in ends if e is not None)
