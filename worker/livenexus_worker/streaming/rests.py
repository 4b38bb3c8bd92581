"""The rest of a sentence a commit cut before its end: whether a part after a commit is one, and the left context
its decodes force (the commit's words, without a full stop the decoder doubts). Pure bookkeeping on the
utterance, shared by :mod:`commits` (where such a rest ends) and :mod:`finals` (what its decodes hear)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.stream_state import LeftContext, OpenUtterance

log = logging.getLogger("livenexus_worker.streaming.pipeline")  # the stream's story, as jobs tells it
_ENDS_SENTENCE = re.compile(r"[.?!…][\"')\]]*\s*$")


def heard_left(op: OpenUtterance, stop_p: float | None) -> None:
    """Note what a decode of ``op`` that heard its left context made of that context's full stop (``stop_p``;
    None: it did not hear a forced stop). The latest reading counts. Lock held."""
    if stop_p is not None:
        if op.left is not None:  # whether a part is a rest turns on these readings: the log tells a late one's story
            log.debug("utterance %s: the full stop of its left context %r read p %.3f", op.utt.segment_id,
                      op.left.text[-30:], stop_p)
        op.left_stop_p = stop_p


def rest_of_sentence(op: OpenUtterance, o: PipelineOptions) -> bool:
    """``op`` follows a final (:attr:`OpenUtterance.hears_before`) that ended without a sentence end (a clause
    cut), or with a full stop that a decode hearing it before ``op``'s own audio rated below
    ``commit_rest_stop_prob``: it starts with the rest of that sentence. A cut in a gap inside the sentence
    ends with a full stop too (Whisper ends any audio it is given with one, and a speculative final is such a
    decode): "the email confirmation stat. | taking too long", "a plan to avoid it next. | time", whose stops
    the next part's decodes rated 0.009 and 0.000-0.002 (at real sentence ends 0.08 and more, on the meeting
    benchmark as received through LiveKit). Its words then waited for the next sentence's end, 2.5-5.0 s."""
    if op.left is None:
        return False
    return not ends_sentence(op.left.text) or op.left_stop_p < o.commit_rest_stop_prob


def ends_sentence(text: str) -> bool:
    """Does ``text`` end with a sentence's closing mark (a full stop, question or exclamation mark)?"""
    return _ENDS_SENTENCE.search(text) is not None


def forced_left(op: OpenUtterance, o: PipelineOptions, long: bool = False) -> LeftContext | None:
    """``op``'s left context as its decodes force it: without its closing full stop once a decode rated that
    stop a cut inside the sentence (:func:`rest_of_sentence`). Forced, the stop made the decoder start a new
    sentence and drop the rest's first word: "a plan to avoid it next. | time. In the meantime" was final as
    "In the meantime" in every run (the word lost, the sentence final only with the next one, 4.3-4.6 s).
    ``long``: the longer context (``OpenUtterance.left_long``) where there is one; it ends with the same words."""
    left = (op.left_long or op.left) if long else op.left
    if left is None or not ends_sentence(left.text) or op.left_stop_p >= o.commit_rest_stop_prob:
        return left
    bare = _ENDS_SENTENCE.sub("", left.text).rstrip()
    return replace(left, text=bare) if bare else left


def doubted(word_probs: tuple[float, ...], i: int, o: PipelineOptions) -> bool:
    """The decoder gave word ``i``'s last token (its closing mark) under ``commit_stop_min_prob``; False when
    that probability is unknown."""
    return i < len(word_probs) and word_probs[i] < o.commit_stop_min_prob


def stops(words: list[str], word_ends: tuple[float, ...], word_probs: tuple[float, ...],
          o: PipelineOptions) -> tuple[int, ...]:
    """Where a reading ends sentences (offsets of the words' ends) with a closing mark the decoder gave
    ``commit_stop_min_prob`` or more (or an unknown probability)."""
    return tuple(int(end * SAMPLE_RATE) for i, (word, end) in enumerate(zip(words, word_ends, strict=False))
                 if ends_sentence(word) and not doubted(word_probs, i, o))


def note_reading(op: OpenUtterance, words: list[str], word_ends: tuple[float, ...], word_probs: tuple[float, ...],
                 o: PipelineOptions) -> tuple[int, ...]:
    """The sentence ends of this reading and the previous one (:attr:`OpenUtterance.stops_read`), which this
    reading's become. Lock held."""
    now = stops(words, word_ends, word_probs, o)
    both, op.stops_read = (*op.stops_read, *now), now
    return both


def ends_soon(ends: tuple[int, ...], c: int, o: PipelineOptions) -> bool:
    """Does a reading end its sentence (``ends``: :func:`note_reading`) after the pause noticed at offset ``c``
    and at most ``commit_rest_end_within_ms`` after it? Then the rest of a cut sentence waits for that end
    (``PipelineOptions``). The previous reading counts too: a partial that read "next time." and the next one
    that ran on ("next time in the") hear the same end a word after the pause."""
    if not o.commit_rest_end_within_ms:
        return False
    top = c + o.commit_rest_end_within_ms * SAMPLES_PER_MS
    return any(c < end <= top for end in ends)
