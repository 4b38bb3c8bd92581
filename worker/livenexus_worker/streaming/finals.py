"""Decoding an utterance as a final: the tier's beam, the agreed words as a safety net, and (for a commit) the
look-ahead that is heard but not kept.

Runs on the inference thread, without the stream's lock: it reads only what a final's job captured.
"""

from __future__ import annotations

import logging
import string
import time
from dataclasses import dataclass, replace

import numpy as np

from livenexus_worker.core import stages
from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.inference.engine import Hypothesis, WhisperEngine
from livenexus_worker.inference.guards import check, cut_restart_word
from livenexus_worker.streaming.agreement import coverage, forced_words, word_key
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.pauses import loud_ms
from livenexus_worker.streaming.rests import ends_sentence, forced_left, rest_of_sentence
from livenexus_worker.streaming.stream_state import LeftContext, OpenUtterance, PendingFinal, StreamContext

log = logging.getLogger("livenexus_worker.streaming.pipeline")  # one logger for the stream's story


@dataclass(frozen=True)
class FinalRequest:
    """What one final decode needs from its stream."""

    stream_id: str
    """The stream, for events and logs."""
    speaker: str
    """Who spoke, as the events say it."""
    context: str
    """Recent finals of the stream, given to the decoder as earlier text ('' for none)."""
    word_times: bool = False
    """Align the final's words (for the committed part a later final hears as its left context)."""
    head_last: str = ""
    """A commit's: the last word of what the confirming partial said before the cut. When the
    commit's own decode ends that word after the cut, the cut is inside it ("the | latest.": a gap in the
    word, which the partial's alignment put a little early): the commit is declined, not cut there."""
    levels: tuple[float, float] = (0.0, 0.0)
    """The speaker's speech level and the background's (RMS, :class:`PauseDetector`) as the decode starts:
    how loud a word said here is."""
    settled: bool = False
    """The speech level has been heard long enough (``snr_after_ms``) to call a part that never reaches it
    quiet: see ``PipelineOptions.quiet_no_speech``."""


def respell_agreed(op: OpenUtterance, text: str, o: PipelineOptions, stream_id: str) -> None:
    """A final's decode of ``op`` from its start read ``text``: later partials are forced to the words agreed
    so far as it spelled them (``partials_spelled_by_finals``, :meth:`LocalAgreement.respell`). Lock held."""
    if o.partials_spelled_by_finals and (changed := op.agreement.respell(text)):
        log.debug("stream %s: a final's decode respelled the agreed words: %s", stream_id,
                  ", ".join(f"{a!r} -> {b!r}" for a, b in changed))


def final_audio(op: OpenUtterance, o: PipelineOptions) -> np.ndarray:
    """A copy of ``op``'s audio up to its last voiced frame and ``tail_ms`` of what followed."""
    end = min(op.utt.n, op.utt.last_voiced_sample - op.utt.start_sample + o.tail_ms * SAMPLES_PER_MS)
    return op.utt.audio()[:end].copy()


def decode_final(ctx: StreamContext, o: PipelineOptions, req: FinalRequest, op: OpenUtterance, audio: np.ndarray,
                 speech_end_wall: float, keep_until: int | None = None) -> PendingFinal | None:
    """Decode ``audio`` as a final; with ``keep_until``, only its words that end before that sample (the rest
    is look-ahead that belongs to the next utterance). None: dropped (logged), or no word could be kept."""
    _idx, tier, engine = ctx.engine_for(op.tier)
    dur = audio.shape[0] / SAMPLE_RATE
    timed = keep_until is not None or req.word_times

    heard_left = False
    stop_p: float | None = None

    def run(prefix: list[str]) -> tuple[Hypothesis, str, tuple[float, ...], tuple[float, ...]]:
        nonlocal heard_left, stop_p
        left = forced_left(op, o, long=op.reads_hard)
        hyp = _decode(engine, tier.beam_size, o, req, audio, prefix, timed, left)
        ctx.on_inference("final", hyp, dur)
        if left is None:
            return hyp, hyp.text, hyp.word_ends, hyp.word_probs
        own = after_left(hyp, left, req.stream_id)
        if own is not None:
            heard_left = True
            stop_p = forced_stop_p(hyp, left)
            if (op.reads_hard or op.left_long is None or hyp.avg_logprob >= o.hard_logprob
                    or len(own[0].split()) < o.hard_min_words):
                return hyp, *own
            long = forced_left(op, o, long=True)
            assert long is not None  # left_long is set
            again = _decode(engine, tier.beam_size, o, req, audio, prefix, timed, long)
            ctx.on_inference("final", again, dur)
            more = after_left(again, long, req.stream_id)
            log.debug("stream %s: final %r read at log-prob %.2f after %.1f s, again after %.1f s: %r (%.2f)",
                      req.stream_id, own[0][:40], hyp.avg_logprob, left.audio.shape[0] / SAMPLE_RATE,
                      long.audio.shape[0] / SAMPLE_RATE, more[0][:40] if more else None, again.avg_logprob)
            if more is None or not more[0].strip() or again.avg_logprob <= hyp.avg_logprob:
                # No words (the decoder ended at the forced text: "Let's write netdown and a decision so no"
                # came back empty once), or read no better: the first reading stands.
                return hyp, *own
            # Its later finals (the guess, then the confirmed one) hear the longer context at once: decoding
            # twice again would add the second decode to their lag too. Set without the stream's lock: a flag
            # that only ever turns on, and a decode that read it a moment before only decodes twice.
            op.reads_hard = op.read_again = True
            stop_p = forced_stop_p(again, long)
            return again, *more
        hyp = _decode(engine, tier.beam_size, o, req, audio, prefix, timed, None)
        ctx.on_inference("final", hyp, dur)
        return hyp, hyp.text, hyp.word_ends, hyp.word_probs

    hyp, said, word_ends, probs = run([])
    agreed = op.agreement.forced
    forced = (forced_words(agreed, said, o.guards.evidence_words)
              if len(agreed) >= o.guards.evidence_words and coverage(agreed, said) < o.final_min_coverage else [])
    if forced:
        # Whisper sometimes skips the first seconds of a window that starts abruptly (measured on the meeting
        # benchmark: a final of 5 s of speech said only its last sentence). The words the partials agreed on
        # were heard: decode again from them, so the final can only add to what was stable. Only when the
        # final starts later than they do: a final that says as many *other* words heard the whole window,
        # and the partials' guess from its first second ("I would orderly rent the new" for "Our quarterly
        # revenue grew") was the worse one (seen in the agent test, WER 0.64); so was "May have a mark on
        # on Tuesday afternoon. At last. It" against the final's "They had a mark on on Tuesday afternoon
        # that lasted" (one word fewer: forced to the partials' words, every file run lost 5 words there).
        log.debug("stream %s: final %r misses the agreed %r; decoding from %r", req.stream_id, said[:60],
                  " ".join(agreed)[:60], " ".join(forced)[:60])
        hyp, said, word_ends, probs = run(forced)
    if (heard_left and keep_until is None and len(agreed) < o.guards.evidence_words and said.strip()
            and dur <= o.left_noise_check_s and not rest_of_sentence(op, o)
            and loud_ms(audio, *req.levels, o.pauses) < o.left_noise_loud_ms):
        # A decode that hears a left context rates no-speech over the whole window, the context's speech
        # included: noise right after a final, read as "Thank you." four times at the end of the meeting
        # benchmark, passed the guards that way. Without agreed words a short part must pass them alone too
        # (a long one is speech the VAD kept hearing; alone, Whisper may skip most of it). Not a commit: a
        # partial read a sentence end in it and the speaker went on; alone, the rest of a cut sentence ("to
        # be.", 0.4 s) was rated no-speech and its commit declined, so it waited 3-4 s for the next one. Nor
        # the rest of a sentence its commit cut before the end: the speaker was mid-sentence ("the release |
        # plan for next month.", 1.4 s, ended by the VAD, was dropped: four words lost). Nor a part as loud as
        # the speaker's words for a while: alone, Whisper rated a lone "Thanks." or "Okay." no-speech or
        # low-confidence and it was dropped, 1-4 words a run; noise is never that loud.
        alone = _decode(engine, tier.beam_size, o, req, audio, [], False, None)
        ctx.on_inference("final", alone, dur)
        _text, why = check(alone.text, alone.no_speech_prob, alone.avg_logprob, dur, o.guards)
        plain = why in ("no-words", "no-speech", "low-logprob")
        if plain or (req.settled and _unsure(alone, o)):
            log.debug("stream %s dropped utterance %s after its left context (%r): %s alone", req.stream_id,
                      op.utt.segment_id, said[:40], why if plain else "quiet and unsure")
            return None
    elif (not heard_left and keep_until is None and len(agreed) < o.guards.evidence_words and req.settled
            and _unsure(hyp, o) and loud_ms(audio, *req.levels, o.pauses) < o.left_noise_loud_ms):
        # Alone, with no words its partials agreed on and nothing in it as loud as the speaker's words: the
        # background the VAD kept hearing. The babble after the meeting benchmark's last sentence, through
        # LiveKit at 17 dB SNR, came out as a final "Thank you." (no-speech 0.58, log-prob -0.9: inside the
        # plain guards).
        log.debug("stream %s dropped utterance %s: %r quiet and unsure (no-speech %.2f, log-prob %.2f)",
                  req.stream_id, op.utt.segment_id, said[:40], hyp.no_speech_prob, hyp.avg_logprob)
        return None
    if keep_until is not None:
        before = keep_before(said, word_ends, keep_until, req.head_last, req.stream_id)
        if before is None:
            return None
        said, word_ends = before
        dur = keep_until / SAMPLE_RATE
    aligned = said  # the words word_ends times; the guards below may shorten what is said
    if keep_until is None:  # a commit's words end before its cut: a word after its full stop is not in them
        said = cut_restart_word(said)
    evidence = len(agreed)
    if (keep_until is not None and evidence < o.guards.evidence_words
            and loud_ms(audio[:keep_until], *req.levels, o.pauses) >= o.left_noise_loud_ms):
        # A commit: a partial read a sentence end at this pause and the speaker went on, and the words before
        # it were as loud as the speaker's. Decoded alone (its decode with the commit before it had read
        # its part twice), "from this release." was rated no-speech in every run on the meeting as received
        # through LiveKit; the commit was declined and the words waited 4-5 s for the next sentence's final.
        evidence = o.guards.evidence_words
    text, why = check(said, hyp.no_speech_prob, hyp.avg_logprob, dur, o.guards, evidence_words=evidence)
    if text is None:
        log.debug("stream %s dropped utterance %s: %s", req.stream_id, op.utt.segment_id, why)
        return None
    start = op.utt.start_sample / SAMPLE_RATE
    event = TranscriptEvent(
        stream_id=req.stream_id, speaker=req.speaker, segment_id=op.utt.segment_id, text=text, is_final=True,
        start=start, end=start + dur, stable=text, unstable="", language=hyp.language, tier=tier.name,
        processing_ms=(hyp.encode_s + hyp.decode_s) * 1000, latency_ms=0.0,
    )
    ends, word_probs = times_of(text, aligned, word_ends, probs)
    return PendingFinal(event, speech_end_wall, ends, stop_p, word_probs if keep_until is None else ())


def times_of(text: str, said: str, word_ends: tuple[float, ...], probs: tuple[float, ...]
             ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The end times (and last-token probabilities, when there is one per word) of ``text``'s words, ``text`` being
    what the guards left of ``said``, whose words ``word_ends`` times. A loop or a first reading cut away leaves
    a run of ``said``'s words, and their times still name them; a text changed otherwise has none (they would
    name other words). Without times a confirming decode cannot commit: a base decode that looped ("Good morning
    everyone. Thanks." three times over 2 s of audio) had its sentence end declined, and a second decode of the
    same audio made that final 1.28 s late instead of 0.55."""
    words, full = text.split(), said.split()
    timed_probs = len(probs) == len(word_ends)
    if len(word_ends) != len(full):  # times of another reading: they name these words only if as many
        same = len(word_ends) == len(words)
        return (word_ends, probs if timed_probs else ()) if same else ((), ())
    n = len(words)
    for i in range(len(full) - n + 1):
        if full[i : i + n] == words:
            return word_ends[i : i + n], probs[i : i + n] if timed_probs else ()
    return (), ()


def forced_stop_p(hyp: Hypothesis, left: LeftContext) -> float | None:
    """The probability ``hyp``, decoded after ``left`` (its text forced), gave the sentence end that closes that
    text; None when it has no word probabilities, or the text was forced without one (:func:`forced_left`)."""
    if not ends_sentence(left.text):
        return None
    n = len(left.text.split())
    return hyp.word_probs[n - 1] if 0 < n <= len(hyp.word_probs) else None


def keep_before(said: str, word_ends: tuple[float, ...], cut: int, head_last: str, stream_id: str
                ) -> tuple[str, tuple[float, ...]] | None:
    """The words of ``said`` (aligned: ``word_ends``) that end before sample ``cut``, with their times; None
    when the commit there is declined: no word ends before it, or ``head_last`` (the confirming partial's
    last word before the cut) ends after it, i.e. the cut is inside that word."""
    # A word may end a frame or two past the cut (20 ms alignment steps); one that ends later is the next
    # sentence's. Without word times nothing can be kept safely: the commit is declined.
    limit = (cut + 40 * SAMPLES_PER_MS) / SAMPLE_RATE
    kept = sum(1 for end in word_ends if end <= limit)
    rest = said.split()[kept:]
    if rest and head_last and word_key(rest[0]) == word_key(head_last):
        log.debug("stream %s: commit declined, %r ends after the cut at %.2f s", stream_id, rest[0],
                  cut / SAMPLE_RATE)
        return None
    if not kept:
        log.debug("stream %s: commit declined, no word ends before %.2f s (%s) %r", stream_id, cut / SAMPLE_RATE,
                  word_ends[:3], said[:80])
        return None
    return " ".join(said.split()[:kept]), word_ends[:kept]


def decode_partial(engine: WhisperEngine, o: PipelineOptions, audio: np.ndarray, committed: str,
                   left: LeftContext | None, aligned: bool, stream_id: str
                   ) -> tuple[Hypothesis, str, tuple[float, ...], tuple[float, ...], bool]:
    """A partial of ``audio``: the hypothesis, what it says of this audio, its word times and last-token
    probabilities ('', () and () when unknown), and whether it heard ``left``. Only the unstable tail is
    generated (the ``committed`` words are forced), and it is capped, so a partial cannot hold up the next
    final for long. With ``left``, the words before the cut are heard and forced first: a part that starts
    abruptly, or in a voice Whisper rates as noise, had every partial dropped as no-speech for 9-13 s of the
    meeting benchmark. When the forced words do not come back, the part is decoded alone, as before; the
    hypothesis then carries the time of both decodes (what the partial cost, for its cadence and the
    stream's CPU budget)."""
    spent = (0.0, 0.0)
    if left is not None:
        hyp = engine.transcribe(np.concatenate([left.audio, audio]), beam_size=1, language=o.language,
                                prefix=f"{left.text} {committed}".strip(),
                                max_new_tokens=o.partial_max_new_tokens, word_times=aligned)
        own = after_left(hyp, left, stream_id)
        if own is not None:
            return hyp, *own, True
        spent = (hyp.encode_s, hyp.decode_s)
    hyp = engine.transcribe(audio, beam_size=1, language=o.language, prefix=committed,
                            max_new_tokens=o.partial_max_new_tokens, word_times=aligned)
    hyp = replace(hyp, encode_s=hyp.encode_s + spent[0], decode_s=hyp.decode_s + spent[1])
    return hyp, hyp.text, hyp.word_ends, hyp.word_probs, False


def partial_event(ctx: StreamContext, stream_id: str, speaker: str, op: OpenUtterance, heard: int,
                  said: tuple[str, str], hyp: Hypothesis, tier: str, requested: float) -> TranscriptEvent:
    """The partial event of ``op``'s first ``heard`` samples: ``said`` is its (stable, unstable) text;
    ``requested`` when the partial was asked for (monotonic)."""
    stable, unstable = said
    start = op.utt.start_sample / SAMPLE_RATE
    return TranscriptEvent(
        stream_id=stream_id, speaker=speaker, segment_id=op.utt.segment_id,
        text=f"{stable} {unstable}".strip(), is_final=False, start=start, end=start + heard / SAMPLE_RATE,
        stable=stable, unstable=unstable, language=hyp.language, tier=tier,
        processing_ms=(hyp.encode_s + hyp.decode_s) * 1000, latency_ms=(time.monotonic() - requested) * 1000,
        trace=decode_stamps(ctx, op.utt.start_sample + heard),
    )


def as_hypothesis(result: PendingFinal) -> Hypothesis:
    """What a partial event needs of a decode, from a final's result."""
    return Hypothesis(result.event.text, 0.0, 0.0, result.event.language, result.event.processing_ms / 1000, 0.0, 0)


def after_left(hyp: Hypothesis, left: LeftContext, stream_id: str
               ) -> tuple[str, tuple[float, ...], tuple[float, ...]] | None:
    """What ``hyp``, decoded with ``left`` before its own audio (its text forced), says of its own part, with
    word times from the part's start and the words' probabilities; None when that is unknown (decode again
    without the context)."""
    forced, out = left.text.split(), hyp.text.split()
    words = out[len(forced):]
    if _bare(out[: len(forced)]) != _bare(forced):
        # The forced words did not come back (a tokenizer round trip that is not exact): where they end
        # in the output is unknown.
        log.debug("stream %s: left context %r came back as %r", stream_id, left.text[-40:], hyp.text[:80])
        return None
    if _loop_start(words, words) is not None:
        # It said its own part twice, a garbled and a clean reading ("We will deploy in an Uber to none
        # Thursday morning. We will deploy the new version on Thursday morning.", through LiveKit): the
        # context led it astray, and which reading is right is unknown.
        log.debug("stream %s: the decode after %r says its part twice", stream_id, left.text[-40:])
        return None
    loop = _loop_start(words, forced, first=0)
    if loop == 0:
        # It read the context again in its own part's place ("Thanks." after "but we still have a few less
        # ends." came back as "But we still have a few less ends.": the word dropped as too many words for
        # 0.6 s, every file run): what the part says is unknown, decode it alone.
        log.debug("stream %s: the decode says its left context %r again", stream_id, left.text[-40:])
        return None
    if loop is not None:
        # Whisper looped back to the start of its window and says it again (measured on windows that
        # end right after the speech: "... 3 hours. May have a mark on on Tuesday afternoon that"):
        # nothing from there on is in this part.
        log.debug("stream %s: the decode repeats its left context %r", stream_id, left.text[-40:])
        words = words[:loop]
    offset = left.audio.shape[0] / SAMPLE_RATE
    return (" ".join(words), tuple(e - offset for e in hyp.word_ends[len(forced):][: len(words)]),
            hyp.word_probs[len(forced):][: len(words)])


def _decode(engine: WhisperEngine, beam: int, o: PipelineOptions, req: FinalRequest, audio: np.ndarray,
            prefix: list[str], timed: bool, left: LeftContext | None) -> Hypothesis:
    """One decode of ``audio``, after the committed part before it when there is one (its text forced)."""
    if left is not None:
        audio = np.concatenate([left.audio, audio])
        prefix = [*left.text.split(), *prefix]
    return engine.transcribe(audio, beam_size=beam, language=o.language, context=req.context,
                             prefix=" ".join(prefix), word_times=timed)


def _unsure(hyp: Hypothesis, o: PipelineOptions) -> bool:
    """Whether ``hyp`` fails the stricter no-speech and log-prob bounds a quiet part must pass."""
    return hyp.no_speech_prob > o.quiet_no_speech or hyp.avg_logprob < o.quiet_logprob


def _loop_start(words: list[str], start: list[str], first: int = 1) -> int | None:
    """Where ``words`` begin to say ``start`` (its first three words, in any case) again, from word ``first`` on.
    Never for a ``start`` of one word: a left context of one ("time.", a commit of the rest of a cut sentence)
    found "a shorter time out" a loop and cut the final there, and its last words waited 4.4 s for the next
    one. Case does not count: a context that is the rest of a cut sentence starts in lower case ("but we...")
    and the decoder says it again capitalised."""
    k = min(3, len(start))
    if k < 2:
        return None
    head = [word_key(w) for w in start[:k]]
    for i in range(first, len(words) - k + 1):
        if [word_key(w) for w in words[i : i + k]] == head:
            return i
    return None


def _bare(words: list[str]) -> list[str]:
    """Words without the punctuation around them: the decoder may glue a comma to the last forced word."""
    return [w.strip(string.punctuation) for w in words]


def decode_stamps(ctx: StreamContext, voiced_sample: int) -> dict[str, float] | None:
    """Inference thread, right after a decode: the job's stage stamps (None unless tracing)."""
    job = ctx.scheduler.current()
    if job is None or not stages.enabled():
        return None
    return stages.new(voiced_sample, queued=job.created, start=job.started, decoded=time.monotonic())


def stamped(ctx: StreamContext, op: OpenUtterance, result: PendingFinal | None, heard: int) -> PendingFinal | None:
    """``result`` (a final of the first ``heard`` samples of ``op``) with its decode's stage stamps."""
    if result is None or not stages.enabled():
        return result
    end = op.utt.start_sample + heard
    voiced = min(end, op.utt.last_voiced_sample) if op.utt.last_voiced_sample > op.utt.start_sample else end
    return replace(result, event=replace(result.event, trace=decode_stamps(ctx, voiced)))
