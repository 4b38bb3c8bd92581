"""Per-stream pipeline: 16 kHz frames → VAD → utterances → inference jobs → TranscriptEvents.

`push` runs on the caller's thread and only does VAD bookkeeping; decoding happens on the shared inference
threads, one job of this stream at a time (:mod:`jobs`). Shared state between them is guarded by one lock per
stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.streaming import commits, left
from livenexus_worker.streaming.guesses import StreamGuesses
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.pauses import PauseDetector
from livenexus_worker.streaming.segmenter import Utterance, cut_point
from livenexus_worker.streaming.stream_state import OpenUtterance, SpeculationMark, StreamContext
from livenexus_worker.streaming.vad import OnsetGate, VadEvent, VadStateMachine, WebRtcVad

__all__ = ["PipelineOptions", "SpeculationMark", "StreamContext", "StreamPipeline"]

log = logging.getLogger(__name__)


class StreamPipeline(StreamGuesses):
    """Transcribes one audio stream; see module docstring for threading."""

    def __init__(self, stream_id: str, speaker: str, ctx: StreamContext,
                 on_event: Callable[[TranscriptEvent], None], options: PipelineOptions | None = None,
                 segment_prefix: str = "") -> None:
        self.stream_id = stream_id
        self.speaker = speaker
        self.o = options or PipelineOptions()
        self._ctx = ctx
        self._on_event = on_event
        self._vad = WebRtcVad(self.o.vad)
        self._sm = VadStateMachine(self.o.vad)
        self._onset = OnsetGate(self.o.vad)
        self._frame = self.o.vad.frame_samples
        self._residual = np.zeros(0, dtype=np.int16)
        self._ring: deque[np.ndarray] = deque(maxlen=self._sm.start_lookback_frames)
        self._pos = 0  # stream position in samples of the next frame
        self._open: OpenUtterance | None = None
        self._seq = 0
        self._prefix = segment_prefix or f"{stream_id}-"
        self._lock = threading.RLock()
        self._closed = False
        self._finals: list[str] = []  # recent final texts, the decoder's optional context
        self._partial_cost = 0.0  # seconds a partial of this stream takes to decode (moving average)
        self._spent: deque[tuple[int, float]] = deque(maxlen=256)  # (stream position, decode s), for the budget
        self._pauses = PauseDetector(self.o.pauses)
        self._follow_on = left.FollowOn(self.o)
        self._noisy = False  # its left context is chained while it is (``noisy_below_db``)

    # ---- caller thread -------------------------------------------------------------------------------
    def push(self, pcm: np.ndarray) -> None:
        """Feed int16 16 kHz mono samples (any length)."""
        if self._closed:
            return
        if pcm.dtype != np.int16:
            raise TypeError(f"push expects int16 samples, got {pcm.dtype}")
        data = np.concatenate([self._residual, pcm.reshape(-1)]) if self._residual.size else pcm.reshape(-1)
        n_frames = data.shape[0] // self._frame
        self._residual = data[n_frames * self._frame :].copy()
        silent = 0
        with self._lock:
            for i in range(n_frames):
                frame = data[i * self._frame : (i + 1) * self._frame]
                voiced = self._vad.is_speech(frame)
                silent += not voiced
                self._step(frame, voiced)
        self._ctx.on_frames(n_frames, silent)

    def flush(self) -> None:
        """End the open utterance now (track ended, shutdown): its final is decoded and emitted."""
        with self._lock:
            op = self._open
            if op is not None:
                self._finish(op, reason="flush")
            self._sm = VadStateMachine(self.o.vad)

    def close(self) -> None:
        self.flush()
        self._closed = True

    @property
    def in_utterance(self) -> bool:
        return self._open is not None

    @property
    def noisy(self) -> bool:
        """Read as noisy (``noisy_below_db``) at its last decision: its left context is chained."""
        return self._noisy

    def _step(self, frame: np.ndarray, voiced: bool) -> None:
        now = time.monotonic()
        ev = self._sm.step(voiced)
        self._onset.push(frame, voiced)
        quiet_ms = self._pauses.push(frame, voiced)
        self._pos += frame.shape[0]
        op = self._open
        if op is None:
            self._ring.append(frame)
            if ev is VadEvent.START and not self._onset.allows_start():
                log.debug("stream %s: no speech starts at %.2f s: the VAD heard the background's level only",
                          self.stream_id, self._pos / SAMPLE_RATE)
                self._sm = VadStateMachine(self.o.vad)  # a later window decides again; the ring keeps its audio
            elif ev is VadEvent.START:
                audio = np.concatenate(list(self._ring))
                self._ring.clear()
                utt = Utterance(self._new_id(), self._pos - audio.shape[0])
                utt.append(audio)
                utt.last_voiced_sample = self._pos
                self._open = OpenUtterance(utt, self._ctx.tier_index(), last_voiced_wall=now, last_partial_request=now)
                self._follow_on.offer(self._open, self._chain())
            return
        op.utt.append(frame)
        if voiced:
            resumed = op.utt.last_voiced_sample == op.speculated_at
            if resumed:
                op.resumed_at = self._pos - frame.shape[0]  # speech resumed after a speculated pause
            op.utt.last_voiced_sample = self._pos
            if resumed:
                self._commit_speculative(op)
                if self._open is not op:
                    return
            op.last_voiced_wall = now
            op.voiced_frames += 1
        if ev is VadEvent.END:
            self._finish(op, reason="vad")
            return
        if quiet_ms >= self.o.end_quiet_ms > 0:  # background talk the VAD reads as speech (``end_quiet_ms``)
            self._finish(op, reason="quiet", speech_end_wall=now - quiet_ms / 1000)
            self._sm = VadStateMachine(self.o.vad)
            return
        cut = cut_point(op.utt, self.o.segmenter)
        if cut is not None:
            self._cut(op, cut)
            return
        silence_ms = (self._pos - op.utt.last_voiced_sample) * 1000 // SAMPLE_RATE
        began = commits.note_pause(op, self.o, self._pos, max(silence_ms, quiet_ms), self._frame, now)
        if began is not None:
            self._propose_commit(op, began, op.utt.n)
        if silence_ms >= self.o.speculative_ms and op.speculated_at != op.utt.last_voiced_sample:
            if op.commit_pending or (op.after_commit and op.voiced_frames < self.o.vad.min_speech_frames):
                return  # a commit decode of this pause is under way, or there is nothing new to decode
            self._speculate(op)
        elif voiced:
            self._maybe_partial(op, now)
