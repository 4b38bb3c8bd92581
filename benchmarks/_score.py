"""Scoring of the continuous-speech benchmark: what a system emitted, aligned to the meeting's script.

A system's transcript updates (:class:`Emission`, stamped on arrival) are replayed in arrival order; each
reference word is aligned to the transcript as it stood at each moment, which gives per sentence the time its
words were first visible and the time they were all in finals (:func:`score`), plus the WER of the finals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from _meeting import Meeting
from livenexus_worker.core.audio import SAMPLE_RATE


@dataclass
class Emission:
    """One transcript update as the benchmark received it."""

    at: float
    """time.monotonic() on arrival."""
    key: str
    """Utterance id: emissions with one key replace each other, and a final closes the key."""
    text: str
    final: bool
    start: float
    """Stream seconds of the utterance start; orders the transcript."""


@dataclass
class Capture:
    """What one system produced on one path, plus what it cost."""

    system: str
    t0: float
    """time.monotonic() at which sample 0 of the meeting audio was sent."""
    emissions: list[Emission]
    cpu_s: float = float("nan")
    """CPU seconds of the system's process while the meeting was streamed to it."""
    rss_peak_mib: float = float("nan")
    others_cores: float = float("nan")
    """CPU cores busy with everything else on the machine meanwhile (this benchmark's bots included)."""
    info: dict[str, object] | None = None


def _words(text: str) -> list[str]:
    from livenexus_worker.inference.textnorm import normalize

    return normalize(text).split()


def align(ref: list[str], hyp: list[str]) -> list[int | None]:
    """For each reference word, the hypothesis word it lines up with (a match or a substitution), or None."""
    import difflib

    out: list[int | None] = [None] * len(ref)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
        if tag in ("equal", "replace"):
            for k in range(min(i2 - i1, j2 - j1)):
                out[i1 + k] = j1 + k
    return out


def _transcript(*groups: Iterable[Emission]) -> tuple[list[str], list[float], list[int]]:
    """Words of the finals, then of the open partials, each group in stream order; with their arrival times,
    and where each emission's words end (the index of its last word, for those that said any)."""
    words: list[str] = []
    times: list[float] = []
    ends: list[int] = []
    for group in groups:
        for e in sorted(group, key=lambda e: (e.start, e.at)):
            w = _words(e.text)
            words += w
            times += [e.at] * len(w)
            if w:
                ends.append(len(words) - 1)
    return words, times, ends


@dataclass
class SentenceScore:
    index: int
    stretch: int
    end_of_stretch: bool
    final_lag_s: float | None
    """Sentence audio end → all its words are in finals (a word the finals lack: once a later word is in them);
    None when its last word never got there."""
    visible_lag_s: float | None
    """Sentence audio end → its last word (or a later one) first appears in any transcript."""
    words: int
    final_words: int
    """How many of its words line up with a word of the finals (0: the finals skipped the whole sentence)."""
    ends_a_final: bool
    """A final ends at its last word: it did not go into the next final (a final ends there when its own last
    word, or the nearest before it that lined up with the script, lines up with that word)."""


def score(meeting: Meeting, cap: Capture) -> tuple[list[SentenceScore], float]:
    """Per-sentence lags and the WER of all finals against the script."""
    from livenexus_worker.inference.textnorm import wer

    ref: list[str] = []
    owner: list[int] = []
    for s in meeting.sentences:
        w = _words(s.text)
        ref += w
        owner += [s.index] * len(w)
    finals: dict[tuple[str, str], Emission] = {}
    open_: dict[str, Emission] = {}
    seen: list[float | None] = [None] * len(ref)
    last: tuple[list[str], int] | None = None
    ordered = sorted(cap.emissions, key=lambda e: e.at)
    for i, e in enumerate(ordered):
        if e.final:  # a re-sent final counts once; it closes what was open under its key
            finals.setdefault((e.key, e.text), e)
            open_.pop(e.key, None)
        else:  # a partial replaces the one open under its key (and may reopen a key after its final)
            open_[e.key] = e
        if i + 1 < len(ordered) and ordered[i + 1].at == e.at:
            continue  # one message, several emissions: look once it is all in
        words, _, _ = _transcript(finals.values(), open_.values())
        # Only words already being spoken can be shown: a stray "a" in a partial must not match a sentence
        # that comes a minute later, so the reference is cut after the sentence under way at this moment.
        pos = (e.at - cap.t0) * SAMPLE_RATE
        cut = max((r + 1 for r in range(len(ref)) if meeting.sentences[owner[r]].start <= pos), default=0)
        if (words, cut) == last or not cut:
            continue
        last = (words, cut)
        for r, h in enumerate(align(ref[:cut], words)):
            if h is not None and seen[r] is None:
                seen[r] = e.at
    fwords, ftimes, fends = _transcript(finals.values())
    inf = float("inf")
    aligned = align(ref, fwords)
    tf = [inf if h is None else ftimes[h] for h in aligned]
    to_ref: list[int | None] = [None] * len(fwords)
    for r, h in enumerate(aligned):
        if h is not None:
            to_ref[h] = r
    closed = set()  # reference words a final ends at
    for j in fends:
        while j >= 0 and to_ref[j] is None:
            j -= 1
        if j >= 0:
            closed.add(to_ref[j])
    # A word the finals never show (deleted, or not finalised yet) counts as final once a later word is:
    # finals arrive in order, so that is when they passed it. The same for the first sight of a word.
    passed_f = np.minimum.accumulate(np.asarray([*tf, inf])[::-1])[::-1]
    passed_v = np.minimum.accumulate(np.asarray([*(inf if t is None else t for t in seen), inf])[::-1])[::-1]
    ends = meeting.stretch_ends()
    rows: list[SentenceScore] = []
    for s in meeting.sentences:
        idx = [r for r in range(len(ref)) if owner[r] == s.index]
        end_wall = cap.t0 + s.end / SAMPLE_RATE
        final_t = max([float(passed_f[idx[-1]]), *(tf[r] for r in idx if tf[r] < inf)])
        vis_t = min(float(passed_v[idx[-1]]), final_t)
        rows.append(SentenceScore(s.index, s.stretch, s.index in ends,
                                  None if final_t == inf else final_t - end_wall,
                                  None if vis_t == inf else vis_t - end_wall,
                                  len(idx), sum(tf[r] < inf for r in idx), idx[-1] in closed))
    hyp = " ".join(e.text for e in sorted(finals.values(), key=lambda e: (e.start, e.at)))
    return rows, wer(meeting.reference, hyp)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def rolling_recovery(lags: list[tuple[float, float | None]], start: float, end: float, threshold: float,
                     window: float) -> tuple[float | None, float]:
    """(first sentence end t >= start from which the rolling p50 stays under ``threshold`` up to ``end``, relative
    to start; 0.0 when it never went over; None when it never came back), and the peak rolling p50."""
    pts = sorted((t, math.inf if lag is None else lag) for t, lag in lags if start <= t <= end)
    rolling = [(t, float(np.median([lag for u, lag in pts if t - window <= u <= t]))) for t, _ in pts]
    if not rolling:
        return None, math.nan
    peak = max(r for _, r in rolling)
    if peak < threshold:
        return 0.0, peak
    over = max(i for i, (_, r) in enumerate(rolling) if r >= threshold)
    return (None if over + 1 >= len(rolling) else rolling[over + 1][0] - start), peak
