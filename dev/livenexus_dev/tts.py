"""Test and demo speech from known text via Debian's espeak-ng or flite (no model downloads needed)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE, load


class TtsUnavailableError(RuntimeError):
    """Neither espeak-ng nor flite is installed."""


def synthesize(text: str, voice: str = "en-us", engine: str = "espeak-ng", rate_wpm: int = 160) -> np.ndarray:
    """Speak ``text`` and return 16 kHz mono int16 samples."""
    exe = shutil.which(engine)
    if exe is None:
        raise TtsUnavailableError(f"{engine} is not installed (apt-get install espeak-ng flite)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        if engine == "flite":
            cmd = [exe, "-voice", voice if voice != "en-us" else "slt", "-t", text, "-o", str(out)]
        else:
            cmd = [exe, "-v", voice, "-s", str(rate_wpm), "-w", str(out), text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return load(out)


def conversation(sentences: list[str], gap_s: float = 1.0, lead_s: float = 0.5, **kwargs: object) -> np.ndarray:
    """Sentences spoken one after another with silent gaps, as separate utterances."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.int16)
    parts: list[np.ndarray] = [np.zeros(int(lead_s * SAMPLE_RATE), dtype=np.int16)]
    for s in sentences:
        parts.append(synthesize(s, **kwargs))  # type: ignore[arg-type]
        parts.append(gap)
    return np.concatenate(parts)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    import soundfile as sf

    data = samples.reshape(-1, channels) if channels > 1 else samples
    sf.write(str(path), data, rate, subtype="PCM_16")
    return Path(path)
