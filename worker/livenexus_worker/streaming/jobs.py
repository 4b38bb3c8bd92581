"""What a stream decodes and when, and what it emits: the job-submission half of :class:`StreamPipeline`
(finals, commits during speech, cuts, partials; the end-of-speech guesses are :mod:`guesses`, a layer on
top) and the inference-thread half that runs those jobs and delivers their events.

The pipeline's frame path (:mod:`pipeline`) decides *that* something is due; this module turns that into
jobs on the shared scheduler. Both halves work on the same per-stream state, guarded by the stream's lock:
methods marked "lock held" run on the caller's thread inside :meth:`StreamPipeline.push`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from livenexus_worker.core import stages
from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.inference.guards import check
from livenexus_worker.streaming import cadence, commits, finals, left, rests, trims
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.pauses import PauseDetector
from livenexus_worker.streaming.scheduler import Job
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import (
    OpenUtterance,
    PendingFinal,
    SpeculationMark,
    StreamContext,
    speakers_contend,
)
from livenexus_worker.streaming.vad import VadStateMachine

log = logging.getLogger("livenexus_worker.streaming.pipeline")  # one logger for the stream's story


class StreamJobs:
    """The decoding half of a stream's pipeline; :class:`~livenexus_worker.streaming.pipeline.StreamPipeline`
    owns the state below and feeds it frames."""

    stream_id: str
    speaker: str
    o: PipelineOptions
    _ctx: StreamContext
    _on_event: Callable[[TranscriptEvent], None]
    _lock: threading.RLock
    _sm: VadStateMachine
    _frame: int
    _pos: int
    _open: OpenUtterance | None
    _seq: int
    _prefix: str
    _finals: list[str]
    _partial_cost: float
    _spent: deque[tuple[int, float]]
    _pauses: PauseDetector
    _follow_on: left.FollowOn
    _noisy: bool

    def _new_id(self) -> str:
        self._seq += 1
        return f"{self._prefix}{self._seq}"

    # ---- job submission (caller thread, lock held) ---------------------------------------------------
    def _finish(self, op: OpenUtterance, reason: str, speech_end_wall: float | None = None) -> None:
        self._open = None
        op.ended = True
        op.ended_wall = time.monotonic()
        voiced_ms = self._sm.voiced_in_utterance * self.o.vad.frame_ms
        if op.after_commit:
            voiced_ms = op.voiced_frames * self.o.vad.frame_ms
        if (reason != "flush" or op.after_commit) and voiced_ms < self.o.vad.min_speech_ms:
            op.speculated_at = SpeculationMark.CLICK  # a speculative final already queued must not emit
            log.debug("stream %s: utterance %s ended (%s) with %d ms of speech: a click, no final", self.stream_id,
                      op.utt.segment_id, reason, voiced_ms)
            return
        self._ctx.on_utterance((op.utt.last_voiced_sample - op.utt.start_sample) / SAMPLE_RATE)
        # webrtcvad keeps saying "voiced" for ~0.1 s into a pause, so allow that much after the commit's cut.
        if (op.commit_pending and not op.commit_with_context
                and op.utt.last_voiced_sample - op.commit_tried_at <= 200 * SAMPLES_PER_MS):
            op.final_from_commit = True
            log.debug("stream %s: utterance %s ended (%s) in the pause its commit decodes: that is its final",
                      self.stream_id, op.utt.segment_id, reason)
            return
        if op.speculated_at == op.utt.last_voiced_sample:
            log.debug("stream %s: guess @%d is the final (done=%s)", self.stream_id, op.speculated_at,
                      op.speculative_done)
            if op.speculative_done:
                self._emit_final(op, op.speculative)
            return  # the speculative job emits when it completes
        op.speculated_at = op.utt.last_voiced_sample
        audio = finals.final_audio(op, self.o)
        wall = speech_end_wall or (op.last_voiced_wall if reason == "vad" else time.monotonic())

        def run() -> None:
            event = self._decode_final(op, audio, wall)
            with self._lock:
                self._emit_final(op, event)

        # Beside a partial still running: that partial began before the speech ended, and its words are dropped.
        self._ctx.scheduler.submit_final(Job(run, "final", key=self.stream_id, beside_partial=True))

    def _propose_commit(self, op: OpenUtterance, pause_wall: float, cut: int, heard: int = 0, head: str = "") -> None:
        """Decode the first ``cut`` samples (up to a pause) as a final and commit them when the result is in.
        With ``heard`` > ``cut``, the decode also hears what follows and keeps only the words that end before
        the cut (aligned). Only the latest proposal of an utterance counts: ``commit_tried_at`` is its token."""
        audio = op.utt.audio()[: max(cut, heard)].copy()
        keep_until = cut if heard > cut else None
        log.debug("stream %s: commit proposed at %.2f s of utterance %s (%r)", self.stream_id, cut / SAMPLE_RATE,
                  op.utt.segment_id, head[-40:])
        op.commit_tried_at = token = op.utt.start_sample + cut
        op.commit_pending = True
        decided = time.monotonic()
        op.commit_with_context = keep_until is not None

        def current() -> bool:
            return op.commit_tried_at == token and (op.final_from_commit or (not op.ended and self._open is op))

        def run() -> None:
            with self._lock:
                if not current():
                    if op.commit_tried_at == token:
                        op.commit_pending = False
                    return
            result = self._decode_final(op, audio, pause_wall, keep_until, commit=True, head=head)
            with self._lock:
                if not current():
                    if op.commit_tried_at == token:
                        op.commit_pending = False
                    return
                op.commit_pending = False
                if op.final_from_commit:
                    self._emit_final(op, result)  # the speaker stopped in that pause: this is the final
                elif result is not None:
                    op.ended_wall = decided
                    self._commit(op, cut, result, rated=keep_until is not None)

        self._ctx.scheduler.submit_final(Job(run, "final", key=self.stream_id))

    def _confirm_pause(self, op: OpenUtterance, text: str, heard: int, partial: TranscriptEvent,
                       word_ends: tuple[float, ...] = (), decoded: PendingFinal | None = None,
                       probs: tuple[float, ...] = ()) -> bool:
        """A partial over ``heard`` samples: does it end a sentence at one of the recent pauses? If so, commit
        the sentence; returns whether it did (the partial is then out of date). ``word_ends``: end time of
        each word of ``text`` (s), when the decoder aligned them, and ``probs`` their last tokens'
        probabilities; ``decoded``: the partial was decoded as a final, whose words before the cut are the
        commit's (no second decode). Lock held."""
        found = commits.find_boundary(op, text, heard, word_ends, self.o, self.stream_id, probs)
        if found is None:
            return False
        cut, wall, head = found
        guess = commits.confirmed_speculation(op, cut, self.o)
        if guess is not None:
            log.debug("stream %s: the pause at %.2f s ends a sentence; its guessed final commits (guess @%d used: "
                      "%r, the partial read %r)", self.stream_id, cut / SAMPLE_RATE, op.speculated_at,
                      guess.event.text[-40:], head[-40:])
            # A clause the partial found (no sentence end read there) leaves the guess's full stop unrated.
            self._commit(op, op.speculative_samples, guess, rated=rests.ends_sentence(head))
            return True
        if decoded is not None:
            before = finals.keep_before(text, word_ends, cut, (head.split() or [""])[-1], self.stream_id)
            if before is not None:
                start = op.utt.start_sample / SAMPLE_RATE
                kept, ends = before
                event = replace(decoded.event, text=kept, stable=kept, end=start + cut / SAMPLE_RATE)
                self._commit(op, cut, PendingFinal(event, wall, ends))
                return True
        if not self.o.commit_text_from_partial:
            after = self.o.commit_heard_after_cut_ms * SAMPLES_PER_MS
            self._propose_commit(op, wall, cut, min(heard, cut + after) if after > 0 else heard, head)
            return False
        start = op.utt.start_sample / SAMPLE_RATE
        event = replace(partial, text=head, stable=head, unstable="", is_final=True, end=start + cut / SAMPLE_RATE)
        self._commit(op, cut, PendingFinal(event, wall))
        return True

    def _commit(self, op: OpenUtterance, cut: int, result: PendingFinal, rated: bool = True) -> None:
        """Emit ``result`` as the final of the first ``cut`` samples; the rest goes on as a new utterance.
        ``rated``: a decode that heard past the cut read where the sentence ends (a partial, or a final that
        heard the look-ahead); without one, the commit's closing full stop is still to be rated."""
        head, rest = op.utt.split_at(cut, self._new_id())
        op.ended = True
        op.ended_wall = op.ended_wall or time.monotonic()
        op.speculated_at = SpeculationMark.CUT  # a guess over the uncut audio must not emit
        self._emit_final(op, result)
        voiced_after = (rest.last_voiced_sample - rest.start_sample) // self._frame if rest.n else 0
        self._open = OpenUtterance(rest, self._ctx.tier_index(), last_voiced_wall=op.last_voiced_wall,
                           last_partial_request=time.monotonic(), after_commit=True,
                           follows_first_cut=op.first_cut,
                           voiced_frames=max(0, voiced_after), pause_seen_at=op.pause_seen_at)
        left.hear_before(self._open, op, head, result, self._chain(), self.o, rated)
        # Pauses heard after the cut stay candidates of the part that goes on.
        self._open.pauses.extend((c - cut, w) for c, w in op.pauses if c > cut)
        self._open.pause_lengths = {w: op.pause_lengths[w] for _c, w in self._open.pauses if w in op.pause_lengths}

    def _chain(self) -> bool:
        """Does the next left context reach back over several parts: always with ``final_left_context_chain``,
        and while the stream is noisy (``noisy_below_db``). The noise is read either way: the runtime counts
        noisy streams (``livenexus_noisy_streams``) whatever forced the chain. Lock held."""
        if self.o.noisy_below_db <= 0:
            return self.o.final_left_context_chain
        snr = self._pauses.snr_db()
        if snr is not None and snr != math.inf:  # inf: digital silence, a clean source or a gap in a noisy one
            noisy = snr < self.o.noisy_below_db + (self.o.noisy_margin_db if self._noisy else 0.0)
            if noisy != self._noisy:
                log.info("stream %s: speech %.1f dB above the background at %.1f s: %s", self.stream_id, snr,
                         self._pos / SAMPLE_RATE, "noisy" if self.o.final_left_context_chain
                         else "left context chained" if noisy else "left context of one part")
            self._noisy = noisy
        return self.o.final_left_context_chain or self._noisy

    def _cut(self, op: OpenUtterance, cut: int) -> None:
        head, rest = op.utt.split_at(cut, self._new_id())
        op.ended = True
        op.speculated_at = SpeculationMark.CUT  # invalidate any speculative final of the uncut utterance
        head_utt = Utterance(op.utt.segment_id, op.utt.start_sample)
        head_utt.append(head)
        wall = time.monotonic()
        head_op = OpenUtterance(head_utt, op.tier, agreement=op.agreement, ended=True, ended_wall=wall)

        def run() -> None:
            event = self._decode_final(head_op, head, wall)
            with self._lock:
                self._emit_final(head_op, event)

        self._ctx.scheduler.submit_final(Job(run, "final", key=self.stream_id))
        self._open = OpenUtterance(rest, self._ctx.tier_index(), last_voiced_wall=op.last_voiced_wall,
                           last_partial_request=wall)

    def _maybe_partial(self, op: OpenUtterance, now: float) -> None:
        _idx, tier, engine = self._ctx.engine_for(op.tier)
        streams = self._ctx.stream_count()
        share = cadence.partial_share(self.o, self._spent_rate(), streams, engine.threads,
                                      contended=speakers_contend(self._ctx))
        if not cadence.partial_due(op, self.o, now, tier.partial_interval_ms / 1000, self._partial_cost,
                                   max(1, self._ctx.active_speakers()), self._ctx.scheduler.parallel, share,
                                   cadence.shared(self.o, streams)):
            return
        op.last_partial_request = now
        job = Job(lambda: self._run_partial(op, now), "partial", key=self.stream_id,
                  urgent=commits.confirms_pause(op, self.o))
        self._ctx.scheduler.submit_partial(self.stream_id, job)

    # ---- inference thread ----------------------------------------------------------------------------
    def _run_partial(self, op: OpenUtterance, requested: float) -> None:
        with self._lock:
            if op.ended or self._open is not op:
                return
            if (self._pos - op.utt.last_voiced_sample) * 1000 >= self.o.speculative_ms * SAMPLE_RATE:
                # Asked for while the speaker talked, started in the pause: the end-of-speech guess is queued
                # or soon will be, and a partial decoding now only holds it up (measured through LiveKit: a
                # final's queue wait p50 126 ms with partials, 3 ms without).
                return
            audio = op.utt.audio().copy()
            confirming = (self.o.commit_in_speech and self.o.commit_confirm_final and commits.confirms_pause(op, self.o)
                          and not commits.guess_awaits(op, self.o) and commits.confirm_worth(op, self.o))
            op.partial_heard = max(op.partial_heard, audio.shape[0])  # when it runs (see confirms_pause)
            forced = op.agreement.forced
            # Word times cost one more decoder pass (~25 ms): only when a pause may be confirmed, i.e. its
            # look-ahead is in this audio (any pause at all asked for them on 68 % of a meeting's partials), and
            # every two newly agreed words, for where later partials may start (trims).
            aligned = ((self.o.commit_in_speech and commits.lookahead_heard(op, audio.shape[0], self.o))
                       or trims.wants_times(op, self.o))
            rate = self.o.partial_rates_left and op.left_unrated and commits.lookahead_heard(op, audio.shape[0],
                                                                                               self.o, early=True)
            if rate:
                op.left_unrated = False  # one try: a partial that hears the context pays for its encoding too
            # A part whose partials are dropped read alone hears its left context; once its words are agreed
            # and timed, the words before the cut are that context.
            trim = None if rate else trims.pick(op, self.o, forced, audio.shape[0])
            dropped = op.partial_dropped
            left = (rests.forced_left(op, self.o)
                    if trim is None and ((self.o.partial_left_context and dropped) or rate) else None)
        _idx, tier, final_engine = self._ctx.engine_for(op.tier)
        engine = self._ctx.partial_engine_for(op.tier)
        draft = engine is not final_engine
        if confirming and aligned:
            self._run_confirming(op, audio, requested, tier.name)
            return
        hyp, said, said_ends, said_probs, heard, cut = trims.decode_partial(engine, self.o, audio, forced, trim, left,
                                                                            aligned, self.stream_id)
        self._ctx.on_inference("partial", hyp, audio.shape[0] / SAMPLE_RATE)
        cost = hyp.encode_s + hyp.decode_s  # how long it held its lane
        text, why = check(said, hyp.no_speech_prob, hyp.avg_logprob, audio.shape[0] / SAMPLE_RATE, self.o.guards,
                          evidence_words=self.o.guards.evidence_words if heard or (cut and dropped) else 0,
                          loud=self.o.partial_loud_shown and self._pauses.says_a_word(audio, self.o.left_noise_loud_ms))
        if text is None:
            log.debug("stream %s: partial of %.2f s %r dropped: %s (no-speech %.2f, log-prob %.2f)", self.stream_id,
                      audio.shape[0] / SAMPLE_RATE, said[:40], why, hyp.no_speech_prob, hyp.avg_logprob)
        with self._lock:
            self._partial_cost = cost if not self._partial_cost else 0.7 * self._partial_cost + 0.3 * cost
            self._spent.append((self._pos, cost * engine.threads))  # core-seconds: each thread kept a core busy
            if cut and text is None:
                op.trim_dropped = True  # read alone, the audio after the cut said nothing kept
            else:
                op.partial_dropped |= text is None
            rests.heard_left(op, finals.forced_stop_p(hyp, left) if heard and left is not None else None)
            if op.ended or self._open is not op or text is None:
                return
            stable, unstable = op.agreement.update(text)
            event = finals.partial_event(self._ctx, self.stream_id, self.speaker, op, audio.shape[0],
                                         (stable, unstable), hyp, tier.name, requested)
            # A partial cut short by its token cap may stop before the audio does: unaligned, its sentence
            # end says nothing about where the audio's sentence ends; aligned, its words still say where
            # they were spoken.
            word_ends = said_ends if text == said else ()
            trims.timed(op, text.split(), word_ends, said_probs if word_ends else ())
            confirm = False
            if draft:
                # Shown, never committed (a smaller model misreads stops: on the meeting benchmark drafts that
                # committed cost 1.4-1.8 points of WER): where one ends a sentence at a pause, the rung's own
                # model decodes this audio as a confirming partial, and its words decide.
                self._deliver(event)
                confirm = aligned and bool(word_ends) and commits.draft_sees_boundary(
                    op, text, audio.shape[0], word_ends, self.o, self.stream_id, said_probs)
            elif (hyp.truncated and not word_ends) or not self._confirm_pause(
                    op, text, audio.shape[0], event, word_ends, probs=said_probs if word_ends else ()):
                self._deliver(event)
        if confirm:
            log.debug("stream %s: the draft ends a sentence at a pause; the rung's model decodes", self.stream_id)
            self._run_confirming(op, audio, requested, tier.name)

    def _run_confirming(self, op: OpenUtterance, audio: np.ndarray, requested: float, tier: str) -> None:
        """The first partial to hear a pause's look-ahead, decoded as a final (``commit_confirm_final``): it
        commits the sentence that ends at the pause with its own words, or is shown as a partial."""
        result = self._decode_final(op, audio, op.last_voiced_wall, commit=True, confirming=True)
        with self._lock:
            if result is None:
                op.partial_dropped = True
            if op.ended or self._open is not op or result is None:
                return
            rests.heard_left(op, result.left_stop_p)
            said, ends = result.event.text, result.word_ends
            finals.respell_agreed(op, said, self.o, self.stream_id)
            stable, unstable = op.agreement.update(said)
            event = finals.partial_event(self._ctx, self.stream_id, self.speaker, op, audio.shape[0],
                                         (stable, unstable), finals.as_hypothesis(result), tier, requested)
            if not self._confirm_pause(op, said, audio.shape[0], event, ends, decoded=result,
                                       probs=result.word_probs):
                if not op.commit_pending:
                    op.read_through = max(op.read_through, audio.shape[0])
                    log.debug("stream %s: the confirming decode cut nothing", self.stream_id)
                self._deliver(event)

    def _spent_rate(self) -> float:
        """Core-seconds per second this stream's decodes took over the last ``cpu_budget_window_s`` of its
        audio (a decode keeps its engine's ``threads`` cores busy for its wall time). Lock held."""
        window = self.o.cpu_budget_window_s * SAMPLE_RATE
        if window <= 0:
            return 0.0
        return sum(cost for pos, cost in self._spent if self._pos - pos <= window) / self.o.cpu_budget_window_s

    def _decode_final(self, op: OpenUtterance, audio: np.ndarray, speech_end_wall: float,
                      keep_until: int | None = None, commit: bool = False, head: str = "", timed: bool = False,
                      confirming: bool = False) -> PendingFinal | None:
        context = " ".join(self._finals[-self.o.context_finals:]) if self.o.context_finals else ""
        # A commit's words are the next part's left context: their times say where its last words begin. A
        # confirming decode's say where its sentence ends.
        req = finals.FinalRequest(self.stream_id, self.speaker, context,
                                  ((commit or timed) and self.o.final_left_context_s > 0) or confirming,
                                  (head.split() or [""])[-1],
                                  (self._pauses.speech_level, self._pauses.floor_level),
                                  self._pauses.settled)
        began = time.perf_counter()
        cores = self._ctx.engine_for(op.tier)[2].threads
        try:  # every decode of the final (a second one too) counts against the stream's CPU budget
            result = finals.decode_final(self._ctx, self.o, req, op, audio, speech_end_wall, keep_until)
        finally:
            with self._lock:
                self._spent.append((self._pos, (time.perf_counter() - began) * cores))
        return finals.stamped(self._ctx, op, result, audio.shape[0] if keep_until is None else keep_until)

    def _emit_final(self, op: OpenUtterance, result: PendingFinal | None) -> None:
        if result is None or op.emitted:
            return
        op.emitted = True
        # Only what was emitted is context: a discarded guess or a declined commit was never said as final.
        self._finals.append(result.event.text)
        del self._finals[:-8]
        self._follow_on.record(op, result)
        if self._open is not None and self._open is not op:
            self._follow_on.offer(self._open, self._chain())  # it started while this final was decoded
        latency = (time.monotonic() - result.speech_end_wall) * 1000
        stages.stamp(result.event.trace, "end", op.ended_wall or None)
        self._deliver(replace(result.event, latency_ms=latency))

    def _deliver(self, event: TranscriptEvent) -> None:
        stages.stamp(event.trace, "emit")
        self._ctx.on_emit(event)
        try:
            self._on_event(event)
        except Exception:
            log.exception("event sink failed for stream %s", self.stream_id)
