from __future__ import annotations

import numpy as np
import pytest

from livenexus_worker.streaming.vad import VadEvent, VadOptions, VadStateMachine, WebRtcVad


def run(sm: VadStateMachine, pattern: list[bool]) -> list[tuple[int, VadEvent]]:
    return [(i, ev) for i, v in enumerate(pattern) if (ev := sm.step(v)) is not None]


def test_start_needs_enough_voiced_frames_in_window() -> None:
    o = VadOptions(frame_ms=30, start_window_ms=240, start_ratio=0.6, hangover_ms=240)
    sm = VadStateMachine(o)
    # 8-frame window: isolated voiced frames never start speech.
    assert run(sm, [True, False, False, True, False, False, False, True] * 4) == []
    events = run(VadStateMachine(o), [False] * 5 + [True] * 8)
    # Frames 2..9 hold 5 voiced of 8 (>= 60 %): speech starts at frame 9.
    assert events == [(9, VadEvent.START)]


def test_end_after_hangover_and_short_pauses_do_not_end() -> None:
    o = VadOptions(frame_ms=30, start_window_ms=90, start_ratio=1.0, hangover_ms=240)
    sm = VadStateMachine(o)
    pattern = [True] * 3 + [True] * 10 + [False] * 7 + [True] * 5 + [False] * 8
    events = run(sm, pattern)
    assert [e for _, e in events] == [VadEvent.START, VadEvent.END]
    # The 7-frame (210 ms) pause is shorter than the 240 ms hangover; the 8-frame one ends the utterance.
    assert events[1][0] == len(pattern) - 1


def test_lookback_includes_preroll() -> None:
    o = VadOptions(frame_ms=10, start_window_ms=100, preroll_ms=300)
    assert VadStateMachine(o).start_lookback_frames == 10 + 30


@pytest.mark.parametrize("bad", [dict(aggressiveness=4), dict(frame_ms=25), dict(hangover_ms=5), dict(start_ratio=0)])
def test_invalid_options_rejected(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        VadOptions(**bad)  # type: ignore[arg-type]


def test_webrtcvad_silence_and_tone() -> None:
    vad = WebRtcVad(VadOptions(aggressiveness=3, frame_ms=30))
    silence = np.zeros(480, dtype=np.int16)
    assert vad.is_speech(silence) is False
    with pytest.raises(ValueError, match="480 samples"):
        vad.is_speech(np.zeros(100, dtype=np.int16))


def test_webrtcvad_on_synthetic_speech(speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    audio = speak(speech_cache, "This sentence is spoken to test the voice activity detector.")
    vad = WebRtcVad(VadOptions(aggressiveness=2, frame_ms=30))
    decisions = [vad.is_speech(audio[i : i + 480]) for i in range(0, len(audio) - 480, 480)]
    assert sum(decisions) / len(decisions) > 0.6
