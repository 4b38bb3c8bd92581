"""End-of-speech guesses: a final decoded in a pause before the VAD says the utterance ended.

A stream's pause of ``speculative_ms`` queues a final of everything heard so far (the *guess*). If the speaker
stopped, the guess is the utterance's final, already decoded when the VAD's hangover ends. If they went on, the
guess may still be the final of the part up to that pause (a commit during speech: :mod:`commits` decides), or is
discarded. This is the guess-handling layer of :class:`StreamPipeline`; the rest of the decoding half is
:mod:`jobs`. Methods run with the stream's lock held unless they say otherwise.
"""

from __future__ import annotations

from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.streaming import commits, finals, rests
from livenexus_worker.streaming.jobs import StreamJobs, log
from livenexus_worker.streaming.scheduler import Job
from livenexus_worker.streaming.stream_state import OpenUtterance, PendingFinal


class StreamGuesses(StreamJobs):
    """Guessed finals of a stream's pauses, on top of its jobs."""

    def _speculate(self, op: OpenUtterance) -> None:
        op.speculated_at = op.utt.last_voiced_sample
        op.speculative = None
        op.speculative_done = False
        audio = finals.final_audio(op, self.o)
        op.speculative_samples = heard = audio.shape[0]
        marker = op.speculated_at
        wall = op.last_voiced_wall

        # It may become the final of a part the next one hears as its left context: that needs its word times
        # when it is longer than the context.
        timed = self.o.commit_speculative and (self._chain()
                                               or audio.shape[0] > self.o.final_left_context_s * SAMPLE_RATE)

        def run() -> None:
            with self._lock:
                if op.speculated_at != marker or (op.ended and op.speculative_done):
                    log.debug("stream %s: guess @%d skipped", self.stream_id, marker)
                    return  # speech resumed: this guess is obsolete
            event = self._decode_final(op, audio, wall, timed=timed)
            with self._lock:
                if event is not None and self._open is op and not op.ended:
                    finals.respell_agreed(op, event.event.text, self.o, self.stream_id)
                if op.speculated_at != marker:
                    if not self._commit_outrun(op, marker, heard, event):
                        log.debug("stream %s: guess @%d obsolete once decoded", self.stream_id, marker)
                    return
                log.debug("stream %s: guess @%d decoded (ended=%s)", self.stream_id, marker, op.ended)
                rests.heard_left(op, event.left_stop_p if event is not None else None)
                op.speculative, op.speculative_done = event, True
                if op.ended:
                    self._emit_final(op, event)
                else:
                    self._commit_speculative(op)

        # Beside a partial still running: one that began before the pause (one started in it returns at once).
        self._ctx.scheduler.submit_final(Job(run, "final", key=self.stream_id, beside_partial=True))

    def _commit_speculative(self, op: OpenUtterance) -> None:
        """The speaker went on after a pause a final was guessed in: once decoded, that guess is the final of
        the part up to the pause (:func:`commits.speculation_commits` says when). Lock held."""
        event, heard = op.speculative, op.speculative_samples
        if event is None or self._open is not op or not commits.speculation_commits(op, self.o):
            return
        log.debug("stream %s: speech went on; the guessed final commits %.2f s (guess @%d used)", self.stream_id,
                  heard / SAMPLE_RATE, op.speculated_at)
        self._commit(op, heard, event, rated=False)

    def _commit_outrun(self, op: OpenUtterance, marker: int, heard: int, event: PendingFinal | None) -> bool:
        """A guess a newer one replaced before it was decoded commits what it heard when it may
        (:func:`commits.outrun_guess_commits`); the newer one, over the uncut part, is then skipped. Lock held."""
        if event is None or self._open is not op or not commits.outrun_guess_commits(op, self.o, marker, heard):
            return False
        log.debug("stream %s: guess @%d was outrun by a later pause; it commits %.2f s", self.stream_id, marker,
                  heard / SAMPLE_RATE)
        rests.heard_left(op, event.left_stop_p)
        self._commit(op, heard, event, rated=False)
        return True
