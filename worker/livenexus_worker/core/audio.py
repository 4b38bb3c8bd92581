"""Audio input: decode files to 16 kHz mono int16 and convert arbitrary PCM chunks, with real resamplers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
"""Samples per second of all audio inside the worker (mono int16); Whisper's native rate."""
SAMPLES_PER_MS = SAMPLE_RATE // 1000


class AudioError(ValueError):
    """Input audio that cannot be used; the message says why in plain words."""


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float or int samples to int16; NaN/inf become silence and overs are clipped, never an exception."""
    if samples.dtype == np.int16:
        return samples
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        scaled = samples.astype(np.float64) / max(abs(info.min), info.max)
    else:
        scaled = np.nan_to_num(samples.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(scaled, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def load(path: str | Path) -> np.ndarray:
    """Decode any file FFmpeg reads (WAV, FLAC, MP3, ...) to 16 kHz mono int16."""
    import av

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: file is empty")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(p), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{p}: contains no audio stream")
            stream = container.streams.audio[0]
            # FFmpeg's resampler: band-limited, handles any rate and channel layout.
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1).copy())
            except av.error.InvalidDataError:
                pass  # truncated tail: keep what decoded, as players do
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).copy())
    except AudioError:
        raise
    except (av.error.InvalidDataError, av.error.FFmpegError) as exc:
        raise AudioError(f"{p}: not a readable audio file ({exc})") from exc
    if not chunks:
        raise AudioError(f"{p}: no audio samples could be decoded")
    return np.concatenate(chunks).astype(np.int16, copy=False)


class Converter:
    """Streaming conversion of interleaved PCM at any rate/channel count to 16 kHz mono int16 (soxr)."""

    def __init__(self, rate: int, channels: int) -> None:
        import soxr

        if rate <= 0 or channels <= 0:
            raise AudioError(f"invalid audio format: {rate} Hz, {channels} channels")
        self.rate, self.channels = rate, channels
        self._rs = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def convert(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        x = pcm.reshape(-1, self.channels) if self.channels > 1 else pcm.reshape(-1, 1)
        if x.dtype == np.int16:
            mono = x.astype(np.float32).mean(axis=1) / 32768.0
        else:
            mono = np.nan_to_num(x.astype(np.float32)).mean(axis=1)
        if self._rs is not None:
            mono = self._rs.resample_chunk(mono, last=last)
        return to_int16(mono)


def frames(audio: np.ndarray, frame_ms: int = 10) -> Iterator[np.ndarray]:
    """Split 16 kHz audio into frames of ``frame_ms`` (the last partial frame is dropped)."""
    n = SAMPLE_RATE * frame_ms // 1000
    for i in range(0, audio.shape[0] - n + 1, n):
        yield audio[i : i + n]
