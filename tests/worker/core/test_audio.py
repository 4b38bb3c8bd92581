"""Bad input: every case is transcribed or rejected with a clear message, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from livenexus_worker.core.audio import AudioError, load


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 1), (48000, 2), (16000, 2)])
def test_load_converts_rates_and_channels(tmp_path: Path, rate: int, channels: int) -> None:
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    f = tmp_path / f"tone_{rate}_{channels}.wav"
    sf.write(f, data, rate)
    out = load(f)
    assert out.dtype == np.int16 and abs(out.shape[0] - 16000) < 400
    # A real resampler keeps the tone's energy: RMS of 0.3 sine ~ 0.21 full scale.
    rms = float(np.sqrt(np.mean((out[1000:-1000].astype(np.float64) / 32768) ** 2)))
    assert 0.18 < rms < 0.24


def test_empty_missing_and_garbage_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load(empty)
    with pytest.raises(AudioError, match="no such file"):
        load(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioError, match=r"not a readable audio file|no audio"):
        load(junk)
    with pytest.raises(AudioError, match="directory"):
        load(tmp_path)


def test_truncated_wav_keeps_what_decodes(tmp_path: Path) -> None:
    f = tmp_path / "full.wav"
    sf.write(f, (0.2 * np.random.default_rng(1).standard_normal(32000)).astype(np.float32), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(f.read_bytes()[: 44 + 20001])  # header + an odd number of data bytes
    out = load(cut)
    assert 9000 < out.shape[0] <= 10001


def test_nan_float_wav(tmp_path: Path) -> None:
    x = np.zeros(16000, dtype=np.float32)
    x[100:200] = np.nan
    x[300:400] = 5.0
    f = tmp_path / "nan.wav"
    sf.write(f, x, 16000, subtype="FLOAT")
    out = load(f)
    assert out.dtype == np.int16 and out.shape[0] == 16000


@pytest.mark.parametrize("content,message", [(b"", "empty"), (b"RIFF\x00\x00garbage", "not a readable")])
def test_cli_reports_bad_files_without_traceback(tmp_path: Path, content: bytes, message: str) -> None:
    f = tmp_path / "bad.wav"
    f.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "livenexus_worker.cli", "transcribe", str(f)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
