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
from livenexus_worker.streaming.pauses import mean_squares


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
    onset_ratio: float = 3.0
    """Until webrtcvad has called ``onset_adapt_ms`` of sound unvoiced, speech starts only where a 10 ms
    sub-frame of the start window is this many times (in amplitude) the background's level: the quietest 30 ms
    of sound heard, digital silence and the sub-frames sound begins in left out (0: no such check). Its noise
    model starts from nothing: after a LiveKit track's digital silence it called the first -40 dBFS noise as
    received voiced for a whole second, so the stream's first utterance began in the noise and its first
    sentence was final 3.1-3.3 s late in four of six runs. Measured on the six recordings: noise windows 1.8-2.6,
    then speech 22; the first window of the meeting's 45 sentences synthesised alone after silence 1.6-2.9 in 11
    (whose start the next window then makes, 240 ms later, with nothing lost: the start takes the audio back to
    540 ms before it), the rest higher."""
    onset_adapt_ms: int = 300
    """Unvoiced sound (not digital silence) after which webrtcvad's own decisions are trusted alone."""

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


class OnsetGate:
    """While webrtcvad has not yet called ``onset_adapt_ms`` of sound unvoiced, a start needs a sub-frame of
    its window ``onset_ratio`` times the background's level (see :class:`VadOptions`). Fed every frame."""

    _SUB = SAMPLE_RATE // 100  # 10 ms
    _SILENT = 4.0  # mean square of a sub-frame of digital silence (a dithered zero stays under it)

    def __init__(self, options: VadOptions) -> None:
        self.o = options
        self._unvoiced = 0  # ms of sound webrtcvad called unvoiced
        self._levels: deque[float] = deque(maxlen=300)  # smoothed level of each recent sub-frame of sound
        self._recent: deque[float] = deque(maxlen=3)
        self._window: deque[float] = deque(maxlen=max(1, options.start_window_ms // 10))  # levels, any sound

    @property
    def adapted(self) -> bool:
        return self.o.onset_ratio <= 0 or self._unvoiced >= self.o.onset_adapt_ms

    def push(self, frame: np.ndarray, voiced: bool) -> None:
        if self.adapted:
            return
        sound = False
        for ms in mean_squares(frame, self._SUB).tolist():
            self._window.append(ms)
            if ms <= self._SILENT:
                self._recent.clear()
                continue
            sound = True
            self._recent.append(ms)
            if len(self._recent) == self._recent.maxlen:  # not the sub-frames sound begins in, partly silent
                self._levels.append(sum(self._recent) / len(self._recent))
        if sound and not voiced:
            self._unvoiced += self.o.frame_ms

    def allows_start(self) -> bool:
        """May speech start at the frame just pushed?"""
        if self.adapted or not self._levels:
            return True
        floor = min(self._levels)
        return max(self._window, default=0.0) >= self.o.onset_ratio ** 2 * floor  # levels are mean squares
