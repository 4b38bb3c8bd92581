"""Short pauses inside speech, found by energy rather than by webrtcvad.

webrtcvad holds "voiced" for roughly 90-120 ms after speech stops (its own hangover), so the 100-200 ms pauses
people leave between sentences while they keep talking barely show up in its decisions. The level of 10 ms
sub-frames against the speaker's own running loudness finds them: a pause is a run of sub-frames far quieter
than the speech around them and not much louder than the background.

The background is the quietest 30 ms of the last few seconds (minimum statistics), not what the VAD calls
unvoiced: the VAD's own noise model reads steady background talk as speech, and after a stream that began with
digital silence (a LiveKit track before its first packet) it called the benchmark's background voiced for ten
seconds, so no pause was found in a speaker's first sentences. Digital silence counts as a silent background
while it is in the window: a clean source (synthetic speech) has none, and then only the speech level decides.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from livenexus_worker.core.audio import SAMPLES_PER_MS


@dataclass(frozen=True)
class PauseOptions:
    """What counts as quiet."""

    sub_ms: int = 10
    """Sub-frame length whose RMS is measured."""
    quiet_ratio: float = 0.1
    """A sub-frame is quiet below this fraction of the running speech level..."""
    floor_ratio: float = 2.5
    """...or below this multiple of the background level, whichever is higher..."""
    loud_ratio: float = 0.5
    """...but never above this fraction of the speech level: a sub-frame that loud is speech, whatever the
    background level says (the background is then soft speech: seconds without any dip)."""
    speech_alpha: float = 0.02
    """EMA weight of a voiced sub-frame in the speech level (slow: one loud word must not move it much)."""
    floor_window_ms: int = 3000
    """The background is the quietest stretch of this long a past (long enough to hold a pause or a breath)."""
    floor_smooth_subs: int = 3
    """Sub-frames averaged for the background: the quietest single 10 ms of noise is well below its level."""

    word_ratio: float = 0.7
    """A sub-frame at least this fraction of the speech level..."""
    word_floor_ratio: float = 4.0
    """...and this multiple of the background level (12 dB) is part of a word said (:func:`loud_ms`); on the
    meeting benchmark no 1 s of noise alone had one, at 12 dB SNR either, and the first 400 ms of 9 in 10
    sentences had 80 ms or more."""
    snr_after_ms: int = 2000
    """Speech heard before :meth:`PauseDetector.snr_db` answers: the speech level starts at the first word's
    and moves slowly (the meeting benchmark's first two seconds read 1-4 dB in any noise)."""
    snr_smooth_s: float = 5.0
    """Time constant of the average :meth:`PauseDetector.snr_db` gives: the background is the quietest 30 ms of
    3 s, so one reading moves with what those 3 s held (a pause or none). Read every 30 ms over the meeting
    benchmark's audio, one reading spread 17.3-25.4 dB at 22 dB SNR and 14.4-21.8 dB at 17 dB; the 5 s average
    19.5-23.6 and 16.4-19.9 dB (12 dB SNR: 10.3-15.7)."""

    def __post_init__(self) -> None:
        if self.sub_ms <= 0 or self.floor_smooth_subs <= 0 or self.floor_window_ms < 100:
            raise ValueError("sub_ms and floor_smooth_subs must be positive, floor_window_ms at least 100")


class PauseDetector:
    """Feed every frame with the VAD's decision; :attr:`quiet_ms` is the length of the current quiet run."""

    _BLOCK_SUBS = 10  # background minima kept per block of sub-frames, not per sub-frame

    def __init__(self, options: PauseOptions | None = None) -> None:
        self.o = options or PauseOptions()
        self._sub = self.o.sub_ms * SAMPLES_PER_MS
        self.speech_level = 0.0
        self.floor_level = 0.0
        self.quiet_ms = 0
        """Quiet time at the end of what was fed so far (0 while the last sub-frame is loud)."""
        self.speech_ms = 0
        """Voiced, loud sub-frames fed so far (those that set :attr:`speech_level`), up to ``snr_after_ms``."""
        self._snr: float | None = None  # the running average of the readings (dB), once there is one
        self._recent: deque[float] = deque(maxlen=self.o.floor_smooth_subs)  # mean squares, for the smoothing
        blocks = max(1, self.o.floor_window_ms // (self.o.sub_ms * self._BLOCK_SUBS))
        self._blocks: deque[float] = deque(maxlen=blocks)  # the quietest smoothed level of each past block
        self._block_min = float("inf")
        self._block_n = 0
        self._past_min = float("inf")  # min(self._blocks), renewed once a block rather than every sub-frame

    def _background(self, ms: float) -> None:
        self._recent.append(ms)
        level = math.sqrt(sum(self._recent) / len(self._recent))
        self._block_min = min(self._block_min, level)
        self._block_n += 1
        self.floor_level = min(self._block_min, self._past_min)
        if self._block_n == self._BLOCK_SUBS:
            self._blocks.append(self._block_min)
            self._past_min = min(self._blocks)
            self._block_min, self._block_n = float("inf"), 0

    def push(self, frame: np.ndarray, voiced: bool) -> int:
        """Update with one VAD frame; returns :attr:`quiet_ms`."""
        mean_sq = mean_squares(frame, self._sub)
        if not mean_sq.size:
            return self.quiet_ms
        rms = np.sqrt(mean_sq)
        o = self.o
        for ms, level in zip(mean_sq.tolist(), rms.tolist(), strict=True):
            self._background(ms)
            threshold = max(o.quiet_ratio * self.speech_level,
                            min(o.floor_ratio * self.floor_level, o.loud_ratio * self.speech_level))
            quiet = self.speech_level > 0 and level <= threshold
            if quiet:
                self.quiet_ms += o.sub_ms
            else:
                self.quiet_ms = 0
                if voiced:
                    a = o.speech_alpha if self.speech_level else 1.0
                    self.speech_level += a * (level - self.speech_level)
                    self.speech_ms = min(self.speech_ms + o.sub_ms, o.snr_after_ms)
        self._average_snr(mean_sq.size * o.sub_ms)
        return self.quiet_ms

    @property
    def settled(self) -> bool:
        """``snr_after_ms`` of speech have set the speech level: other sound can be judged against it."""
        return self.speech_ms >= self.o.snr_after_ms and self.speech_level > 0

    def says_a_word(self, audio: np.ndarray, min_ms: int) -> bool:
        """Once :attr:`settled`: ``audio`` holds at least ``min_ms`` as loud as the speaker's words
        (:func:`loud_ms`). Read from the decode thread: two floats, each read whole."""
        return self.settled and loud_ms(audio, self.speech_level, self.floor_level, self.o) >= min_ms

    def _average_snr(self, ms: int) -> None:
        if not self.settled or self.floor_level <= 0:
            return  # not known yet, or digital silence in the window: a clean source, or a track's gap
        now = 20 * math.log10(self.speech_level / self.floor_level)
        weight = min(1.0, ms / 1000 / self.o.snr_smooth_s) if self.o.snr_smooth_s > 0 else 1.0
        self._snr = now if self._snr is None else self._snr + weight * (now - self._snr)

    def snr_db(self) -> float | None:
        """How far the speech level stands above the background, in dB, averaged over ``snr_smooth_s``; None
        until ``snr_after_ms`` of speech set the level, inf while digital silence is in the background's
        window (a clean source; or a gap in a track, after which the average goes on from where it was). The
        background is a minimum, so this reads a few dB above the true ratio of the levels (the meeting
        benchmark's babble at 12 dB SNR reads 13.8 dB at p50, at 17 dB 17.4, at 22 dB 20.5)."""
        if not self.settled:
            return None
        if self.floor_level <= 0:
            return math.inf
        return self._snr


def loud_ms(audio: np.ndarray, speech_level: float, floor_level: float, o: PauseOptions) -> int:
    """How much of ``audio`` (ms of sub-frames) is as loud as the speaker's words (``word_ratio``,
    ``word_floor_ratio``): evidence of a word said, not of noise the decoder read words into. 0 while no
    speech level is known."""
    if speech_level <= 0:
        return 0
    rms = np.sqrt(mean_squares(audio, o.sub_ms * SAMPLES_PER_MS))
    least = max(o.word_ratio * speech_level, o.word_floor_ratio * floor_level)
    return int(np.count_nonzero(rms >= least)) * o.sub_ms


def mean_squares(audio: np.ndarray, sub: int) -> np.ndarray:
    """The mean square of each whole ``sub``-sample sub-frame of ``audio`` (a partial one at the end is left out)."""
    n = audio.shape[0] // sub
    subs = audio[: n * sub].astype(np.float32).reshape(n, sub)
    return np.mean(subs * subs, axis=1)
