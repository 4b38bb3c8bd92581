"""Where a sentence inside an open utterance ends, from a partial's text and the pauses heard (commit during
speech), and what of a final the part or utterance after it hears. Pure bookkeeping on the utterance; the
pipeline decodes and commits what this finds."""

from __future__ import annotations

import logging
import math
import re
from collections import deque

from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.rests import doubted, ends_sentence, ends_soon, note_reading, rest_of_sentence
from livenexus_worker.streaming.stream_state import OpenUtterance, PendingFinal

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"[.?!…][\"')\]]*\s+")
_MARKS = ",;:.?!…"
_VAD_LAG_MS = 200
"""How far webrtcvad's last voiced frame may trail the start of an energy pause (measured up to ~150 ms)."""
_NEXT_WORD_MIN_MS = 100  # the word after a full stop starts after its pause and lasts at least this long


def note_pause(op: OpenUtterance, o: PipelineOptions, pos: int, pause_ms: int, frame: int,
               now: float) -> float | None:
    """The stream is at ``pos`` after ``pause_ms`` of quiet: note the pause as a candidate cut for a partial to
    confirm (once per pause). Returns the wall time it began when it is to be committed right away instead
    (any pause, once the utterance is ``commit_any_after_s`` long). Caller holds the stream's lock."""
    shortest = o.commit_min_after_cut_s if op.hears_before else o.commit_min_s
    if not (o.commit_in_speech and pause_ms >= o.commit_pause_ms and op.utt.n >= shortest * SAMPLE_RATE
            and op.voiced_frames >= o.vad.min_speech_frames):
        return None
    if op.pause_seen_at >= pos - pause_ms * SAMPLES_PER_MS - frame:
        # Seen already: it goes on (when it is the latest candidate; noticed in a long utterance it is not one).
        if op.pauses and op.utt.start_sample + op.pauses[-1][0] == op.pause_seen_at:
            began = op.pauses[-1][1]
            op.pause_lengths[began] = max(op.pause_lengths.get(began, 0), pause_ms)
        return None
    op.pause_seen_at = pos
    began = now - pause_ms / 1000
    if op.utt.n < o.commit_any_after_s * SAMPLE_RATE:
        op.pauses.append((op.utt.n, began))
        op.pause_lengths = {w: op.pause_lengths.get(w, pause_ms) for _c, w in op.pauses}
        return None
    if op.commit_pending:
        return None
    op.pauses.clear()
    return began


def _guess_outlived(op: OpenUtterance, o: PipelineOptions) -> bool:
    """``op``'s speculative final is decoded, speech went on after all the audio it heard (not inside it), and
    no commit decode of the part is under way: the guess may be the final of the part up to its pause."""
    return (o.commit_speculative and op.speculative_done and not op.commit_pending
            and op.resumed_at >= op.utt.start_sample + op.speculative_samples)


def speculation_commits(op: OpenUtterance, o: PipelineOptions) -> bool:
    """``op``'s decoded speculative final may become the final of the part before its pause: speech went on
    after that pause (not inside the audio the guess heard), the part is long enough to be more than a
    breath inside a sentence, and the pause as long as a clause's without a mark
    (``commit_clause_unmarked_pause_ms``): no partial confirmed it, and a stop consonant's gap is enough for
    a guess ("a plan to avoid it next. | Time in the meantime": the guess ended at "next", and "time" was
    lost). Caller holds the stream's lock."""
    return (_guess_outlived(op, o) and op.utt.last_voiced_sample != op.speculated_at
            and _guess_may_cut(op, o, op.speculated_at, op.speculative_samples))


def outrun_guess_commits(op: OpenUtterance, o: PipelineOptions, marker: int, heard: int) -> bool:
    """A speculative final decoded over ``heard`` samples in the pause after ``marker`` (its last voiced sample)
    was outrun: the speaker went on and paused again before it was decoded, and a newer guess took its place.
    It still commits what it heard when it would have had it been decoded in time (:func:`speculation_commits`):
    on a busy lane 4-8 of ~50 guesses per meeting run were thrown away so, and a sentence whose guess it was
    waited for a later pause ("... about three hours." final 3.9 s late, 1.6 s when its guess was in time).
    Caller holds the stream's lock."""
    return (o.commit_speculative and not op.commit_pending and op.speculated_at > marker
            and op.resumed_at >= op.utt.start_sample + heard and _guess_may_cut(op, o, marker, heard))


def _guess_may_cut(op: OpenUtterance, o: PipelineOptions, marker: int, heard: int) -> bool:
    """The guess after ``marker`` over ``heard`` samples may cut ``op`` alone: the part is long enough to be
    more than a breath inside a sentence, and its pause as long as an unmarked clause's."""
    if not o.commit_in_speech or op.ended or heard < o.commit_speculative_min_s * SAMPLE_RATE:
        return False
    return any(_in_pause_of(op, marker, heard, c) and op.pause_lengths.get(w, 0) >= o.commit_clause_unmarked_pause_ms
               for c, w in op.pauses)


def confirmed_speculation(op: OpenUtterance, cut: int, o: PipelineOptions) -> PendingFinal | None:
    """A partial confirmed a sentence end at the pause ``cut``: the speculative final decoded in that pause when
    it is the final of the part up to it, else None. It is when it is in (and the guards kept it), it heard the
    cut and only quiet after it (the VAD's last voiced frame lags the energy pause by up to a frame or two),
    and speech went on after what it heard. Then the commit costs no second decode and waits for none (on the
    meeting benchmark 14 of 76 confirmed pauses had one). Caller holds the stream's lock."""
    guess = op.speculative
    if guess is None or not _guess_outlived(op, o):
        return None
    return guess if _in_guess_pause(op, cut) else None


def guess_awaits(op: OpenUtterance, o: PipelineOptions) -> bool:
    """A speculative final decoded in the pause a partial asked for now would confirm (:func:`confirms_pause`)
    may become its commit: that partial then needs no final-grade decode of its own (``commit_confirm_final``).
    Not when it would also be the first to hear a later pause: "a plan to avoid it next. | time" was guessed at
    a gap inside the sentence, the partial that heard both that gap's and the sentence end's look-ahead was
    greedy and read no full stop at the end, and the sentence was final 3.8 s after it (every run of the
    meeting benchmark). Caller holds the lock."""
    fresh = [c for c, _ in _fresh(op, o)]
    return (op.speculative is not None and _guess_outlived(op, o) and any(_in_guess_pause(op, c) for c in fresh)
            and all(c <= op.speculative_samples for c in fresh))


def _in_guess_pause(op: OpenUtterance, c: int) -> bool:
    """The pause candidate at offset ``c`` is the one ``op``'s speculative final was decoded in."""
    return _in_pause_of(op, op.speculated_at, op.speculative_samples, c)


def _in_pause_of(op: OpenUtterance, marker: int, heard: int, c: int) -> bool:
    """The pause candidate at offset ``c`` is the one a guess after ``marker`` over ``heard`` samples was decoded
    in: the guess heard it, and only quiet after it (the VAD's last voiced frame lags the energy pause by up to a
    frame or two)."""
    last_voiced = marker - op.utt.start_sample
    return last_voiced - _VAD_LAG_MS * SAMPLES_PER_MS <= c <= heard


def confirms_pause(op: OpenUtterance, o: PipelineOptions) -> bool:
    """A partial asked for now would be the first to hear the look-ahead after one of ``op``'s pauses: it may
    commit a sentence, so it does not wait for the cadence stretched by the load (on a busy node that held
    commits back: 4 and 8 speakers, the slowest tenth of finals were queued 1.3-1.9 s after their pause). Never
    sooner than the tier's interval: on an idle node it comes soon anyway, and one speaker's meeting run asked
    for 24 % more partials (+0.11 CPU-s per audio-s) with no gain in final lag when it did. What a partial
    heard is noted when it runs: one dropped as stale or skipped in the pause leaves the next its way past."""
    return not op.commit_pending and bool(_fresh(op, o))


def confirm_worth(op: OpenUtterance, o: PipelineOptions) -> bool:
    """A pause whose look-ahead a partial asked for now would be the first to hear lasted
    ``commit_confirm_min_pause_ms``: worth decoding that partial as a final."""
    return any(op.pause_lengths.get(w, 0) >= o.commit_confirm_min_pause_ms for _c, w in _fresh(op, o))


def _fresh(op: OpenUtterance, o: PipelineOptions) -> list[tuple[int, float]]:
    """``op``'s pauses whose look-ahead a partial asked for now would be the first to hear."""
    lookahead = o.commit_lookahead_ms * SAMPLES_PER_MS
    return [(c, w) for c, w in op.pauses if op.utt.n - c >= lookahead > op.partial_heard - c]


def lookahead_heard(op: OpenUtterance, heard: int, o: PipelineOptions, early: bool = False) -> bool:
    """Do the first ``heard`` samples of ``op`` hold ``commit_lookahead_ms`` after one of its pauses? Only then
    can a partial over them end a sentence (:func:`find_boundary`), so only then are its words aligned.
    ``early``: a pause under ``commit_min_s`` into ``op``, where only the rest of a cut sentence may end
    (:func:`_clause`), so only then does it matter whether ``op`` is one."""
    lookahead = o.commit_lookahead_ms * SAMPLES_PER_MS
    within = o.commit_min_s * SAMPLE_RATE if early else math.inf
    return any(heard - c >= lookahead and c < within for c, _ in op.pauses)


def find_boundary(op: OpenUtterance, text: str, heard: int, word_ends: tuple[float, ...], o: PipelineOptions,
                  stream_id: str = "", word_probs: tuple[float, ...] = ()) -> tuple[int, float, str] | None:
    """A partial over ``heard`` samples said ``text``: does it end a sentence at one of ``op``'s recent pauses?
    Returns (cut offset, wall time the pause began, the text up to the sentence end) when it does and enough
    partials agreed; forgets pauses that can no longer be the boundary. ``word_ends``: end time (s) of each
    word of ``text`` when the decoder aligned them, ``word_probs`` their last tokens' probabilities. Caller holds
    the stream's lock."""
    lookahead = o.commit_lookahead_ms * SAMPLES_PER_MS
    if op.commit_pending or not lookahead_heard(op, heard, o):
        return None
    op.first_cut = False
    if word_ends:
        found = _aligned(op, text, word_ends, o, word_probs)
        if found is not None and heard - found[0] < lookahead:
            return None  # its look-ahead is not heard yet: a later partial decides (no older pause is taken)
        if found is None:
            found = _clause(op, text.split(), heard, word_ends, o, word_probs)
            if found:
                n = len(found[2].split())
                log.debug("stream %s: no sentence end, a clause at %.2f s (%r; its last token's p %s)", stream_id,
                          found[0] / SAMPLE_RATE, found[2][-40:],
                          f"{word_probs[n - 1]:.3f}" if n <= len(word_probs) else "unknown")
        if not found:
            log.debug("stream %s: no sentence end or agreed word at a pause (%r; pauses at %s)", stream_id,
                      text[-60:], [round(c / SAMPLE_RATE, 2) for c, _ in op.pauses])
            return None
        cut = found[0]
        op.vote_cut = op.pause_votes = 0
        while op.pauses and op.pauses[0][0] <= cut:
            op.pauses.popleft()
        return found
    words = text.split()
    word = heard / max(1, len(words))  # this speaker's pace, in samples per word
    ends = list(_SENTENCE_END.finditer(text))
    fragment = text[ends[-1].end():].split() if ends else []
    # Unaligned, the boundary is placed from the speaker's pace, so the look-ahead may hold a word or two of
    # the next sentence only (one more for each later partial): more, and Whisper's boundary is at an earlier
    # point. The next sentence starts with a capital: greedy partials also put full stops where a phrase
    # merely pauses ("the payment service. the invoice generator"), or inherit one from their forced prefix
    # ("results. while the"), and go on in lower case. Measured on the meeting benchmark, accepting those
    # split sentences at commas and cost 4 points of WER.
    limit = o.commit_max_fragment_words + op.pause_votes
    if not 1 <= len(fragment) <= limit or not fragment[0][0].isupper():
        log.debug("stream %s: no sentence end at a pause (%r)", stream_id, text[-60:])
        op.vote_cut = op.pause_votes = 0
        # Pauses this far back can no longer be the boundary of a short fragment: forget them.
        horizon = heard - (o.commit_max_fragment_words + 1) * word - lookahead
        while op.pauses and op.pauses[0][0] < horizon:
            op.pauses.popleft()
        return None
    # The boundary lies about ``len(fragment)`` words before the end of what the partial heard (the last
    # one only begun): the pause nearest that point is where the sentence ended; others are gaps inside
    # it. If that pause is too recent for the look-ahead, a later partial decides.
    head = text[: ends[-1].end()].strip()
    estimate = heard - (len(fragment) - 0.5) * word
    cut, wall = min(op.pauses, key=lambda p: abs(p[0] - estimate))
    if abs(cut - estimate) > 1.5 * word + lookahead or heard - cut < lookahead:
        return None
    op.pause_votes = op.pause_votes + 1 if cut == op.vote_cut else 1
    op.vote_cut = cut
    if op.pause_votes < o.commit_confirmations:
        return None
    op.vote_cut = op.pause_votes = 0
    while op.pauses and op.pauses[0][0] <= cut:
        op.pauses.popleft()
    return cut, wall, head


def draft_sees_boundary(op: OpenUtterance, text: str, heard: int, word_ends: tuple[float, ...], o: PipelineOptions,
                        stream_id: str, probs: tuple[float, ...]) -> bool:
    """Does a draft partial end a sentence at a pause the rung's own model was not asked about yet? Only asks:
    the pauses and their votes are left as they were, for that model to decide on. Caller holds the stream's
    lock."""
    saved = (deque(op.pauses, maxlen=op.pauses.maxlen), op.vote_cut, op.pause_votes, op.stops_read)
    found = find_boundary(op, text, heard, word_ends, o, stream_id, probs)
    op.pauses, op.vote_cut, op.pause_votes, op.stops_read = saved
    if found is None or found[0] == op.draft_asked:
        return False
    op.draft_asked = found[0]
    return True


def _aligned(op: OpenUtterance, text: str, word_ends: tuple[float, ...], o: PipelineOptions,
             word_probs: tuple[float, ...] = ()) -> tuple[int, float, str] | None:
    """With word times: the latest sentence end of ``text`` under whose last word one of ``op``'s pauses
    begins (:func:`_under_word`), as (cut, wall time the pause began, text up to it); the caller
    waits for its look-ahead before it takes it or any other. Not only the last one: Whisper
    also puts a full stop where the next sentence flows on ("in review the invoice. Generators"), or at the
    end of the window, and the sentence end that has a pause under it came before. A full stop at a real
    pause is a boundary to cut at whatever follows (a capital is not needed as evidence), a sentence's or a
    clause's, and the decode that commits it hears both sides. Of several pauses there, the one
    nearest where a pause that began at the word's end is noticed: nearest the end itself cut "the | latest."
    at a gap inside the word its alignment put 60 ms early, and the next part read the rest as "is".

    Not a full stop the decoder gives under ``commit_stop_min_prob`` (``word_probs``, when given):
    one forced from an earlier partial's agreed words, which the decoder would not make hearing what follows
    ("avoid it next. In", p 0.000 while the audio says "next time"; in one LiveKit meeting run all 12 full
    stops read under 0.02 were inside a sentence, "the whole. Release slips", "much. Better", and of 73 at
    real sentence ends none was under 0.049)."""
    noticed = o.commit_pause_ms * SAMPLES_PER_MS
    for end in reversed(list(_SENTENCE_END.finditer(text))):
        head = text[: end.end()].strip()
        n = len(head.split())
        if n > len(word_ends):
            continue
        if doubted(word_probs, n - 1, o):
            continue
        spoken = word_ends[n - 1] * SAMPLE_RATE
        following = word_ends[n] if n < len(word_ends) else None
        near = [(c, w) for c, w in op.pauses if _under_word(op, o, c, w, word_ends[n - 1], following)]
        if near:
            cut, wall = min(near, key=lambda p: abs(p[0] - spoken - noticed))
            if cut - spoken > 400 * SAMPLES_PER_MS:
                log.debug("a full stop aligned %.0f ms before its pause at %.2f s: %r", (cut - spoken) / SAMPLES_PER_MS,
                          cut / SAMPLE_RATE, text[max(0, len(head) - 40): len(head) + 20])
            return cut, wall, head
    return None


def _marked(words: list[str], i: int, word_probs: tuple[float, ...], o: PipelineOptions) -> bool:
    """Does word ``i`` end with a mark that ends a clause? A sentence's closing mark must not be
    :func:`rests.doubted`, as in :func:`_aligned`."""
    word = words[i]
    return word[-1] in _MARKS and not (ends_sentence(word) and doubted(word_probs, i, o))


def _under_word(op: OpenUtterance, o: PipelineOptions, c: int, wall: float, word_end_s: float,
                next_end_s: float | None = None) -> bool:
    """A pause noticed at offset ``c`` (begun at ``wall``) begins under a word that ends at ``word_end_s``: the
    word ends up to 400 ms before it is noticed (a pause is noticed ``commit_pause_ms`` into the quiet), or
    inside it, or a frame or two after it was noticed.

    Inside it: with ``commit_word_end_in_pause``, anywhere up to the pause's end (its longest length heard).
    The decoder's alignment often gives a sentence's last word the quiet after it, up to where the next word
    begins: "several obvious bugs." read "smuggs." was aligned 120-140 ms past where its 200 ms pause was
    noticed, in three partials running, so no sentence end was found there and the sentence was final 5.7 s
    late, with the next one. Over three traced runs this found 3 more real sentence ends and 1 gap inside a
    word ("by Thurs | day."), a commit :func:`finals.keep_before` declines when the decode that commits it
    also ends that word after the cut.

    Before it: up to 400 ms; for a full stop (``next_end_s``, the end of the word after it, given) up to
    ``commit_stop_lead_ms`` while the pause is noticed before the next word is over. Through Opus a
    sentence's last consonant fades into the noise and its end is aligned early: "that really helps. Now"
    ended 440 ms before its pause was noticed, so the sentence waited 5.5 s for the one after it."""
    after = 60
    if o.commit_word_end_in_pause:
        after = max(after, op.pause_lengths.get(wall, 0) - o.commit_pause_ms + 60)
    lead = c - word_end_s * SAMPLE_RATE
    if -after * SAMPLES_PER_MS <= lead <= 400 * SAMPLES_PER_MS:
        return True
    return (next_end_s is not None and lead <= o.commit_stop_lead_ms * SAMPLES_PER_MS
            and c + _NEXT_WORD_MIN_MS * SAMPLES_PER_MS <= next_end_s * SAMPLE_RATE)


def _clause(op: OpenUtterance, words: list[str], heard: int, word_ends: tuple[float, ...],
            o: PipelineOptions, word_probs: tuple[float, ...] = ()) -> tuple[int, float, str] | None:
    """No sentence end: the latest pause that a word ending a clause ends in (:func:`_under_word`, as for a
    sentence end), with the look-ahead heard after it, ``commit_min_s`` or more into the part (the head a pause of a
    part without a commit must leave too).

    A word the partial marked (a comma, a colon...) ends a clause, agreed or not, from ``commit_min_s``: the
    mark is the evidence and only the newest partial has it (agreement ignores punctuation), and the
    commit's decode reads the words again. Waiting for a second partial to agree on the word, or for the
    part to be ``commit_clause_after_s`` long, held such commits back by one or two partials' cadence: with 8
    speakers on 2 cores those were the slowest finals ("Good morning everyone, | thanks for joining",
    queued 1.1-1.9 s after their pause). A word without a mark must be agreed and the part long.

    The rest of a sentence the last commit cut before its end may commit sooner, from
    ``commit_min_after_cut_s``, at a marked word: its partials do not hear the words before it and read its
    end as a comma ("closed within a day, so overall"), also before ``commit_min_s``. Marked, because any
    agreed word at any pause cut such rests again and again into finals of a word or two ("were closed |
    within the day | so overall I would").

    A sentence's closing mark the decoder gave under ``commit_stop_min_prob`` (``word_probs``) is no mark here
    either, as in :func:`_aligned`: a full stop on the partial's last word, with no words after it, comes this
    way. In one file run all three such stops under 0.02 were inside a sentence ("avoid it next. | time",
    "done by Thursday. | at the latest", "a written explanation. | and a plan", 0.000-0.009), and each was cut
    there; the lowest at a real sentence end was 0.294.

    A rest also ends at its first pause as long as an unmarked clause's under an agreed word, from
    ``commit_min_s``: through LiveKit "Taking to a long support told me" had no mark, and was cut once 3 s
    long at the later pause (inside the next sentence) or waited for the next sentence's end (5.4-5.6 s).
    Not right after such a cut (``follows_first_cut``): each left another rest ("Support | told me"). Nor where
    the reading, or the one before it, ends the sentence a word or two later (:func:`rests.ends_soon`: "next |
    time.").

    Where a confirming decode read on through the pause (``read_through``: final-grade, it heard the look-ahead
    and cut nothing), a later reading (a greedy partial, mostly) cuts only at a mark it read with words after it,
    never at an unmarked word or at a mark on its last word: through LiveKit all three of one meeting run's
    unmarked cuts there were inside a sentence ("the email confirmation step | taking too long"), and with 8
    speakers the clause cuts at a full stop the partial ended with ("We moved the launch to the 12. |") were among
    the slowest finals. Not in a rest, whose confirming decode may have heard too little to end it ("next | time
    in the meantime": it heard 1.05 s, under ``commit_min_s``; blocked, the sentence was final 4.65 s late)."""
    if not o.commit_clause_after_s or not word_ends:
        return None
    long = heard >= o.commit_clause_after_s * SAMPLE_RATE
    rest = rest_of_sentence(op, o) and heard >= o.commit_min_after_cut_s * SAMPLE_RATE
    first = rest and not op.follows_first_cut and heard >= o.commit_min_s * SAMPLE_RATE
    unmarked = long and heard >= o.commit_clause_unmarked_after_s * SAMPLE_RATE
    lookahead = o.commit_lookahead_ms * SAMPLES_PER_MS
    ends = note_reading(op, words, word_ends, word_probs, o)
    said = min(len(word_ends), len(words))
    stable = min(len(op.agreement.committed), said)
    found: tuple[int, float, int] | None = None
    for c, wall in op.pauses:
        if heard - c < lookahead:
            break
        early = c < o.commit_min_s * SAMPLE_RATE
        if early and not rest:
            # A head of a word or two barely shortens the window, and both sides are then read without
            # the words around them: "We shift | the new onboarding fuller" for "We shipped the new
            # onboarding flow", "The search | pages still slow" (a part after a commit, long enough that any
            # pause under an agreed word could end a clause, whose partials agreed on two words only).
            continue
        long_pause = op.pause_lengths.get(wall, 0) >= o.commit_clause_unmarked_pause_ms
        read = not rest and c <= op.read_through - lookahead
        free = not read and ((not early and (unmarked or (long and long_pause)))
                             or (first and long_pause and not ends_soon(ends, c, o)))
        ending = [i for i in range(said) if _under_word(op, o, c, wall, word_ends[i])
                  and ((_marked(words, i, word_probs, o) and not (read and i + 1 >= len(words)))
                       or (free and i < stable))]
        if ending:
            found = (c, wall, ending[-1])
            if early or first:
                # The rest of a cut sentence ends at its first clause end: a later pause is inside the next
                # sentence ("Taking too long, | support | told me", where the part's pause under "support"
                # was a stop consonant's gap and the rest waited for the sentence after it).
                break
    if found is None:
        return None
    cut, wall, last = found
    op.first_cut = first
    return cut, wall, " ".join(words[: last + 1])
