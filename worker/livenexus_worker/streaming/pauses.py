"""Short pauses inside speech, found by energy rather than by webrtcvad.

webrtcvad holds "voiced" for roughly 90-120 ms after speech stops (its own hangover), so the 100-200 ms pauses
people leave between sentences while they keep talking barely show up in its decisions. The level of 10 ms
sub-frames against the speaker's own running loudness finds them: a pause is a run of sub-frames far quieter
than the speech around them and not much louder than the background.
"""

from __future__ import annotations

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
    """...or below this multiple of the running background level, whichever is higher..."""
    loud_ratio: float = 0.3
    """...but never above this fraction of the speech level: a sub-frame that loud is speech, whatever the
    background level says."""
    speech_alpha: float = 0.02
    """EMA weight of a voiced sub-frame in the speech level (slow: one loud word must not move it much)."""
    floor_alpha: float = 0.05
    """EMA weight of an unvoiced sub-frame in the background level."""


class PauseDetector:
    """Feed every frame with the VAD's decision; :attr:`quiet_ms` is the length of the current quiet run."""

    def __init__(self, options: PauseOptions | None = None) -> None:
        self.o = options or PauseOptions()
        self._sub = self.o.sub_ms * SAMPLES_PER_MS
        self.speech_level = 0.0
        self.floor_level = 0.0
        self.quiet_ms = 0
        """Quiet time at the end of what was fed so far (0 while the last sub-frame is loud)."""

    def push(self, frame: np.ndarray, voiced: bool) -> int:
        """Update with one VAD frame; returns :attr:`quiet_ms`."""
        n = frame.shape[0] // self._sub
        if n == 0:
            return self.quiet_ms
        subs = frame[: n * self._sub].astype(np.float32).reshape(n, self._sub)
        rms = np.sqrt(np.mean(subs * subs, axis=1))
        o = self.o
        for r in rms:
            level = float(r)
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
            if not voiced:
                # Learnt gradually, from zero: one frame of speech the VAD missed (a soft onset) must not set
                # the background to a speech level (measured: it did, and quiet runs of 350 ms were found
                # inside an espeak sentence).
                self.floor_level += o.floor_alpha * (level - self.floor_level)
        return self.quiet_ms
