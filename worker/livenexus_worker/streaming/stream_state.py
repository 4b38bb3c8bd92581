"""What a stream pipeline keeps between frames: the context it runs in and the bookkeeping of the utterance
in progress (speculative finals, pending commits). Its options are in ``options``."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import numpy as np

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.inference.engine import Hypothesis, WhisperEngine
from livenexus_worker.streaming.agreement import LocalAgreement
from livenexus_worker.streaming.scheduler import InferenceScheduler
from livenexus_worker.streaming.segmenter import Utterance

MAX_PAUSE_CANDIDATES = 8
"""Pauses kept per utterance for a partial to confirm; older ones are too far back for its look-ahead."""


class StreamContext(Protocol):
    """What a pipeline needs from the process-wide runtime."""

    scheduler: InferenceScheduler

    def tier_index(self) -> int: ...
    def active_speakers(self) -> int: ...
    def stream_count(self) -> int: ...
    def engine_for(self, tier_index: int) -> tuple[int, TierSpec, WhisperEngine]: ...
    def partial_engine_for(self, tier_index: int) -> WhisperEngine: ...
    def on_frames(self, frames: int, silent: int) -> None: ...
    def on_inference(self, kind: str, hyp: Hypothesis, audio_s: float) -> None: ...
    def on_emit(self, event: TranscriptEvent) -> None: ...
    def on_utterance(self, speech_s: float) -> None: ...


class SpeculationMark(IntEnum):
    """Values of :attr:`_Open.speculated_at` that are not a stream position (positions are never negative).

    A speculative final only emits while ``speculated_at`` still holds the position it was started for, so
    each of these also cancels one that is queued or running.
    """

    NONE = -1
    """No speculative final was started for the current end of speech."""
    CUT = -2
    """The utterance was cut at the length cap; a guess over the uncut audio must not emit."""
    CLICK = -3
    """The utterance ended as a click (too little voiced audio) and is dropped."""


@dataclass
class OpenUtterance:
    """Bookkeeping of the utterance in progress."""

    utt: Utterance
    tier: int
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    last_partial_request: float = 0.0
    partial_heard: int = 0
    """Samples of the utterance the latest partial that ran heard (later look-ahead is unconfirmed)."""
    last_voiced_wall: float = 0.0
    speculated_at: int = SpeculationMark.NONE
    """last_voiced_sample the speculative final was started for, or a :class:`SpeculationMark` value."""
    speculative: PendingFinal | None = None
    speculative_done: bool = False
    speculative_samples: int = 0
    """Audio (from the utterance start) the latest speculative final heard."""
    ended: bool = False
    emitted: bool = False
    after_commit: bool = False
    """Opened by a commit: it may hold nothing but the rest of the pause (dropped if it ends so)."""
    follows_first_cut: bool = False
    """Opened by a commit that ended a rest at its first clause end (``first_cut``): its own first pause won't."""
    voiced_frames: int = 0
    """VAD-voiced frames since this utterance (or this part after a commit) began."""
    commit_tried_at: int = -1
    """Stream position of the pause a commit decode was started for (also the token of the latest one)."""
    pause_seen_at: int = -1
    """Stream position where the latest pause was noticed (each pause is a candidate once)."""
    pause_lengths: dict[float, int] = field(default_factory=dict)
    """Longest quiet (ms) measured in each of ``pauses``, by the wall time it began (kept across a commit)."""
    pauses: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=MAX_PAUSE_CANDIDATES))
    """Recent pauses a partial may confirm as a sentence end: (offset in the utterance, wall time it began:
    a committed final's latency counts from there). Bounded: only the last few can still be confirmed."""
    resumed_at: int = -1
    """Stream position where speech resumed after the latest pause a speculative final was started in."""
    vote_cut: int = 0
    """The pause the last confirming partials chose (0: none)."""
    pause_votes: int = 0
    """Consecutive partials that ended a sentence at ``vote_cut``."""
    stops_read: tuple[int, ...] = ()
    """Where the previous reading with word times ended a sentence with a closing mark the decoder did not
    doubt: offsets in the part of those words' ends (:func:`rests.ends_soon` counts them with the newest
    reading's: "next time." read once, then "next time in the", held no cut under "next")."""
    first_cut: bool = False
    """The latest boundary found in it (:func:`commits.find_boundary`) ends a rest at its first clause end."""
    commit_pending: bool = False
    """A commit decode is queued or running: the end-of-speech guess waits for its answer instead of
    decoding the same audio a second time."""
    commit_with_context: bool = False
    """The pending commit decode also hears the look-ahead after its cut (it can never be the whole final)."""
    final_from_commit: bool = False
    """The utterance ended in the pause a commit decode is running for: that decode is its final."""
    ended_wall: float = 0.0
    """When its end was decided (VAD hangover, flush, cut or commit; monotonic): the ``end`` stage stamp."""
    left: LeftContext | None = None
    """The committed part this one follows, for its finals to hear (see ``final_left_context_s``)."""
    left_long: LeftContext | None = None
    """A longer left context, chained over the parts before (``hard_left_context_s``), for a final that reads
    badly after ``left``; None when it would be no longer."""
    reads_hard: bool = False
    """Its finals hear ``left_long`` at once: a final of it read badly after ``left`` and read better after
    ``left_long`` (``read_again``), or the part before it did."""
    read_again: bool = False
    """A final of it read badly after ``left`` and better after ``left_long``; the part after it then hears its
    longer context at once (one part: it is not passed on further)."""
    left_stop_p: float = 1.0
    """The probability the latest decode that heard ``left`` gave the last token of its forced text (the full
    stop the commit ended with): near 0, that decode, hearing what follows, reads no sentence end there."""
    left_unrated: bool = False
    """``left`` ends with a full stop no decode that heard what followed it has rated: the first partial that
    hears the look-ahead of a pause under ``commit_min_s`` rates it (``partial_rates_left``)."""
    partial_dropped: bool = False
    """A partial of it said nothing the guards kept: its next ones hear ``left`` (``partial_left_context``)."""
    timed: tuple[float, ...] = ()
    """Where each of the first agreed words ends (s from its start), as the latest partial that aligned them
    read it: where a partial may start decoding (``partial_trim``)."""
    timed_probs: tuple[float, ...] = ()
    """Each of those words' last token's probability, from the same partial."""
    trim_dropped: bool = False
    """A partial that started decoding inside it said nothing the guards kept: the rest of its partials decode
    all of it."""
    draft_asked: int = -1
    """The pause (cut offset) a draft partial last had the rung's own model decode: asked once, not per draft."""
    read_through: int = 0
    """Samples of it a confirming decode (``commit_confirm_final``) heard and cut nothing in: it read on through
    every pause whose look-ahead they hold, so later partials cut there only at a mark they read with words
    after it (:func:`commits._clause`)."""

    @property
    def hears_before(self) -> bool:
        """Opened right after a final its decodes hear as their left context (a commit's, or that of an
        utterance that ended within ``final_left_context_gap_ms``): it may be the short rest of a sentence cut
        there (``commit_min_after_cut_s``). The VAD too ends utterances inside sentences: at the gap inside
        "next time" through LiveKit, and "time. In the meantime …" was one utterance, final 5.0 s after "time"."""
        return self.left is not None


@dataclass(frozen=True)
class LeftContext:
    """Audio committed just before an utterance, and the final text that was emitted for it."""

    audio: np.ndarray
    """int16 samples, ending where the utterance starts."""
    text: str
    """Its final's text: forced as the decoder's start, so the decode goes on from there."""
    ends: tuple[float, ...] = ()
    """Where each word of ``text`` ends (s from the audio's start); () when unknown."""


@dataclass(frozen=True)
class PartialTrim:
    """Where a partial of a part starts decoding: inside an agreed word, heard again and forced; the agreed
    words before it are Whisper's previous text (:mod:`trims`)."""

    cut: int
    """Samples from the part's start where the partial's audio begins."""
    words: int
    """The agreed words before the cut."""
    ends: tuple[float, ...]
    """Where each of them ends (s from the part's start)."""
    probs: tuple[float, ...]
    """Each of them's last token's probability."""


@dataclass(frozen=True)
class PendingFinal:
    """A decoded final waiting to be emitted; latency is measured at emission."""

    event: TranscriptEvent
    speech_end_wall: float
    word_ends: tuple[float, ...] = ()
    """End time (s from the utterance start) of each word of the text, when the decode aligned them."""
    left_stop_p: float | None = None
    """When it was decoded after the utterance's left context: the probability of that context's last forced
    token (see :attr:`OpenUtterance.left_stop_p`)."""
    word_probs: tuple[float, ...] = ()
    """With ``word_ends``, of a final of the whole audio decoded: each word's last token's probability
    (:attr:`Hypothesis.word_probs`)."""


def speakers_contend(ctx: StreamContext) -> bool:
    """Whether more streams are speaking than decodes can run at once: only then do one speaker's decodes wait
    for another's, so only then is a busy CPU a sign of load (the tier policy's ``contended``) and do the
    partials' CPU over budget count per core (:func:`cadence.partial_share`)."""
    return ctx.active_speakers() > ctx.scheduler.parallel
