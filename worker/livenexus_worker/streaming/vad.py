"""Voice activity gate: webrtcvad decisions smoothed by a small state machine.

The state machine is pure (it takes booleans), so it is tested without audio; :class:`WebRtcVad` adapts
webrtcvad to it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE


@dataclass(frozen=True)
class VadOptions:
    """How speech is detected and how utterances are delimited."""

    aggressiveness: int = 2
    """webrtcvad mode, 0 (least aggressive about filtering non-speech) to 3 (most)."""
    frame_ms: int = 30
    """Frame length webrtcvad classifies: 10, 20 or 30 ms."""
    start_window_ms: int = 240
    """Window in which voiced frames are counted to decide that speech started."""
    start_ratio: float = 0.6
    """Fraction of voiced frames in the start window that starts an utterance."""
    hangover_ms: int = 250
    """Continuous silence after speech that ends the utterance."""
    preroll_ms: int = 300
    """Audio kept from before the detected start so that first syllables are not cut."""
    min_speech_ms: int = 120
    """Utterances with less voiced audio than this are dropped as clicks."""

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VAD aggressiveness must be 0-3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"VAD frame must be 10, 20 or 30 ms, got {self.frame_ms}")
        if not 0 < self.start_ratio <= 1:
            raise ValueError(f"start_ratio must be in (0, 1], got {self.start_ratio}")
        if self.hangover_ms < self.frame_ms:
            raise ValueError(f"hangover_ms must be at least one frame ({self.frame_ms} ms)")

    @property
    def frame_samples(self) -> int:
        return SAMPLE_RATE * self.frame_ms // 1000

    @property
    def min_speech_frames(self) -> int:
        """``min_speech_ms`` in frames, rounded up."""
        return -(-self.min_speech_ms // self.frame_ms)


class VadEvent(Enum):
    START = "start"
    """Speech began; the utterance includes the pre-roll frames."""
    END = "end"
    """Hangover expired; the utterance ended at the last voiced frame."""


class VadStateMachine:
    """Turns a per-frame voiced/unvoiced sequence into utterance start/end decisions."""

    def __init__(self, options: VadOptions) -> None:
        self.o = options
        self._window: deque[bool] = deque(maxlen=max(1, options.start_window_ms // options.frame_ms))
        self._hangover_frames = max(1, options.hangover_ms // options.frame_ms)
        self.in_speech = False
        self.silent_run = 0
        """Consecutive unvoiced frames since the last voiced one (while in speech)."""
        self.voiced_in_utterance = 0

    def step(self, voiced: bool) -> VadEvent | None:
        if not self.in_speech:
            self._window.append(voiced)
            full = len(self._window) == self._window.maxlen
            if full and sum(self._window) >= self.o.start_ratio * len(self._window):
                self.in_speech = True
                self.silent_run = 0
                self.voiced_in_utterance = sum(self._window)
                self._window.clear()
                return VadEvent.START
            return None
        if voiced:
            self.silent_run = 0
            self.voiced_in_utterance += 1
            return None
        self.silent_run += 1
        if self.silent_run >= self._hangover_frames:
            self.in_speech = False
            return VadEvent.END
        return None

    @property
    def start_lookback_frames(self) -> int:
        """Frames before the START decision that belong to the utterance (start window + pre-roll)."""
        return (self._window.maxlen or 1) + self.o.preroll_ms // self.o.frame_ms


class WebRtcVad:
    """webrtcvad classifier over int16 frames of ``options.frame_samples``."""

    def __init__(self, options: VadOptions) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(options.aggressiveness)
        self._n = options.frame_samples

    def is_speech(self, frame: np.ndarray) -> bool:
        if frame.shape[0] != self._n:
            raise ValueError(f"VAD frame must have {self._n} samples, got {frame.shape[0]}")
        return bool(self._vad.is_speech(frame.astype(np.int16, copy=False).tobytes(), SAMPLE_RATE))
