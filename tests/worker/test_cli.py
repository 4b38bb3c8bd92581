from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livenexus_dev.tts import write_wav
from livenexus_worker.inference.textnorm import wer

TEXT = "Transcribe this file through the same streaming pipeline as the live worker."


@pytest.mark.model
def test_transcribe_json_and_terminal(tmp_path: Path, speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    wav = write_wav(tmp_path / "speech.wav", np.concatenate([np.zeros(8000, np.int16), speak(speech_cache, TEXT)]))
    cmd = [sys.executable, "-m", "livenexus_worker.cli", "transcribe", str(wav), "--beam-size", "1"]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    finals = [e for e in events if e["is_final"]]
    assert len(finals) == 1 and wer(TEXT, finals[0]["text"]) <= 0.2
    assert {"segment_id", "stable", "unstable", "latency_ms", "tier", "language"} <= set(finals[0])

    term = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert term.returncode == 0
    line = next(x for x in term.stdout.splitlines() if x.startswith("["))
    assert line.startswith("[00:00:00 → 00:00:0") and "speech:" in line


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "s.wav", np.zeros(16000, np.int16))
    proc = subprocess.run([sys.executable, "-m", "livenexus_worker.cli", "transcribe", str(wav), "--model",
                           "no-such-model"], capture_output=True, text=True, timeout=120,
                          env={"LIVENEXUS_MODEL_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "model 'no-such-model' not found" in proc.stderr and "Traceback" not in proc.stderr
