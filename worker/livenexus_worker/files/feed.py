"""Drive a pipeline from an in-memory signal, as fast as possible or paced like a live microphone."""

from __future__ import annotations

import time

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.streaming.pipeline import StreamPipeline


def feed(pipe: StreamPipeline, audio: np.ndarray, realtime: bool = False, chunk_ms: int = 10,
         trailing_silence_ms: int = 800) -> None:
    """Push ``audio`` in chunks, then trailing silence so the VAD ends the last utterance naturally."""
    n = SAMPLE_RATE * chunk_ms // 1000
    tail = np.zeros(SAMPLE_RATE * trailing_silence_ms // 1000, dtype=np.int16)
    signal = np.concatenate([audio.astype(np.int16, copy=False), tail])
    t0 = time.monotonic()
    for i in range(0, signal.shape[0], n):
        if realtime:
            # Sleep to the chunk's due time (not a fixed delay) so pacing does not drift.
            due = t0 + (i + n) / SAMPLE_RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        pipe.push(signal[i : i + n])
    pipe.flush()
