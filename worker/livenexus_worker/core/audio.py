"""The worker's audio format (16 kHz mono int16) and decoding any audio file into it with a real resampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
"""Samples per second of all audio inside the worker (mono int16); Whisper's native rate."""
SAMPLES_PER_MS = SAMPLE_RATE // 1000


class AudioError(ValueError):
    """Input audio that cannot be used; the message says why in plain words."""


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
