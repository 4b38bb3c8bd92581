"""Audio shared by the streaming suites."""

from __future__ import annotations

import numpy as np
import pytest

from livenexus_worker.streaming.pauses import PauseDetector


@pytest.fixture(scope="module")
def sentence(speech_cache: dict[str, np.ndarray]) -> np.ndarray:
    """~2.8 s of speech with no quiet stretch inside (so the only pauses are the ones the tests add)."""
    from tests.conftest import speak

    audio = speak(speech_cache, "the quick brown fox jumps over the lazy dog")
    loud = np.nonzero(np.abs(audio) > 300)[0]
    audio = audio[loud[0] : loud[-1] + 1]
    det = PauseDetector()
    det.push(np.zeros(480, dtype=np.int16), False)  # streams start in digital silence: a silent background
    assert max(det.push(audio[i : i + 480], True) for i in range(0, len(audio) - 480, 480)) < 80
    return audio


@pytest.fixture(scope="module")
def word(speech_cache: dict[str, np.ndarray]) -> np.ndarray:
    from tests.conftest import speak

    audio = speak(speech_cache, "Speech for the pipeline test, spoken clearly.")
    loud = np.nonzero(np.abs(audio) > 300)[0]
    return audio[loud[0] : loud[-1] + 1]  # espeak pads silence at both ends; pauses below must be exact
