"""Utterance buffer and the cut rule for utterances that run too long.

Whisper is trained on windows of at most 30 s and latency grows with window length, so an utterance that
exceeds ``max_utterance_s`` is finalised early, cut at the quietest recent point rather than mid-word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS


@dataclass(frozen=True)
class SegmenterOptions:
    """Limits on utterance length and where long utterances are cut."""

    max_utterance_s: float = 15.0
    """An utterance is cut once it is this long."""
    search_s: float = 3.0
    """How far back from the cap the quietest point is searched for."""
    window_ms: int = 100
    """Energy is measured over windows this long when looking for the quietest point."""


def quietest_cut(audio: np.ndarray, lo: int, hi: int, window: int) -> int:
    """Index in ``[lo, hi)`` at the centre of the lowest-energy window; pure for tests."""
    lo = max(0, lo)
    hi = min(len(audio), hi)
    if hi - lo < window:
        return hi
    seg = audio[lo:hi].astype(np.float32)
    energy = np.convolve(seg * seg, np.ones(window, dtype=np.float32), mode="valid")
    # Stride the search so a long window costs little; 10 ms resolution is finer than any word boundary.
    stride = max(1, SAMPLE_RATE // 100)
    idx = int(np.argmin(energy[::stride])) * stride
    return lo + idx + window // 2


@dataclass
class Utterance:
    """Audio of one utterance in progress, in 16 kHz int16, with its position in stream time."""

    segment_id: str
    """Id shared by all partials and the final of this utterance."""
    start_sample: int
    """Stream position of the first sample."""
    chunks: list[np.ndarray] = field(default_factory=list)
    """Audio appended so far; joined lazily."""
    n: int = 0
    """Samples held."""
    last_voiced_sample: int = 0
    """Stream position just after the last frame the VAD called voiced."""

    def append(self, frame: np.ndarray) -> None:
        self.chunks.append(frame)
        self.n += frame.shape[0]

    def audio(self) -> np.ndarray:
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0] if self.chunks else np.zeros(0, dtype=np.int16)

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.n

    def split_at(self, cut: int, new_id: str) -> tuple[np.ndarray, Utterance]:
        """Return the audio before ``cut`` (an offset into this utterance) and a new utterance with the rest."""
        audio = self.audio()
        head, tail = audio[:cut], audio[cut:]
        rest = Utterance(new_id, self.start_sample + cut)
        if tail.size:
            rest.append(tail.copy())
        rest.last_voiced_sample = max(self.last_voiced_sample, rest.start_sample)
        return head, rest


def cut_point(utt: Utterance, options: SegmenterOptions) -> int | None:
    """Offset at which ``utt`` should be cut, or None while it is within the cap."""
    cap = int(options.max_utterance_s * SAMPLE_RATE)
    if utt.n < cap:
        return None
    audio = utt.audio()
    return quietest_cut(audio, cap - int(options.search_s * SAMPLE_RATE), cap, options.window_ms * SAMPLES_PER_MS)
