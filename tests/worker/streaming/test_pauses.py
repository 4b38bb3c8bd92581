"""The energy pause detector: what it calls quiet, against the speaker's level and the background's."""

from __future__ import annotations

import numpy as np

from livenexus_worker.streaming.pauses import PauseDetector, PauseOptions, loud_ms

FRAME = 480  # 30 ms, the VAD's frame


def _noise(ms: int, rms: float, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0.0, rms, ms * 16)
    return np.clip(x, -32768, 32767).astype(np.int16)


def _feed(det: PauseDetector, audio: np.ndarray, voiced: bool) -> int:
    """Longest quiet run seen while feeding ``audio`` (ms)."""
    return max(det.push(audio[i : i + FRAME], voiced) for i in range(0, audio.shape[0] - FRAME + 1, FRAME))


def test_a_loud_frame_the_vad_missed_does_not_make_the_speech_after_it_quiet() -> None:
    det = PauseDetector()
    _feed(det, _noise(30, 3000, 1), voiced=True)
    _feed(det, _noise(30, 2000, 2), voiced=False)  # a soft onset the VAD called silence
    assert _feed(det, _noise(2000, 3000, 3), voiced=True) == 0


def test_a_gap_in_background_noise_is_quiet_once_the_background_is_known() -> None:
    det = PauseDetector()
    _feed(det, _noise(1000, 3000, 1), voiced=True)
    _feed(det, _noise(2000, 600, 2), voiced=False)  # the room, 14 dB below the speaker
    _feed(det, _noise(1000, 3000, 3), voiced=True)
    assert _feed(det, _noise(300, 600, 4), voiced=True) >= 270, "a pause, though the VAD still says voiced"


def test_speech_near_the_speaker_s_level_is_never_quiet_whatever_the_background() -> None:
    det = PauseDetector()
    _feed(det, _noise(1000, 3000, 1), voiced=True)
    _feed(det, _noise(3000, 2000, 2), voiced=False)  # a loud background (or speech the VAD missed)
    assert _feed(det, _noise(1000, 2500, 3), voiced=True) == 0


def test_a_background_the_vad_calls_speech_is_learnt_after_digital_silence() -> None:
    # A LiveKit track starts with digital silence before its first packet; webrtcvad then called the background
    # voiced for ten seconds, and a background learnt from unvoiced frames only stayed at zero: no pause was
    # found in the speaker's first sentences.
    det = PauseDetector()
    _feed(det, np.zeros(16 * 500, dtype=np.int16), voiced=False)
    _feed(det, _noise(1000, 600, 1), voiced=True)
    _feed(det, _noise(3000, 3000, 2), voiced=True)
    assert _feed(det, _noise(150, 600, 3), voiced=True) >= 120, "a sentence pause the VAD calls voiced"
    assert _feed(det, _noise(500, 3000, 4), voiced=True) == 0


def test_the_background_follows_the_room_within_its_window() -> None:
    det = PauseDetector()
    _feed(det, np.zeros(16 * 1000, dtype=np.int16), voiced=False)
    _feed(det, _noise(4000, 600, 1), voiced=True)  # the room got louder: digital silence is 4 s ago
    assert 450 < det.floor_level < 650
    _feed(det, _noise(2000, 3000, 2), voiced=True)  # a pause-free stretch of speech keeps the quietest part
    assert det.floor_level < 650


def test_loud_ms_counts_what_is_as_loud_as_the_speaker_s_words() -> None:
    o = PauseOptions()
    word = np.full(300 * 16, 1000, dtype=np.int16)  # RMS 1000 for 300 ms
    quiet = np.full(200 * 16, 100, dtype=np.int16)
    audio = np.concatenate([quiet, word, quiet])
    assert loud_ms(audio, 1200.0, 50.0, o) == 300, "0.7 of the speech level, far above the background"
    assert loud_ms(audio, 2000.0, 50.0, o) == 0, "below 0.7 of the speech level"
    assert loud_ms(audio, 1200.0, 300.0, o) == 0, "less than 12 dB above the background"
    assert loud_ms(audio, 0.0, 0.0, o) == 0, "no speech level known yet: no evidence"
    assert loud_ms(audio[:100], 1200.0, 50.0, o) == 0, "shorter than a sub-frame"


def test_snr_is_read_once_the_speaker_s_level_is_known() -> None:
    det = PauseDetector()
    for i in range(3):  # speech 14 dB above the room, with pauses the background is read in
        _feed(det, _noise(600, 3000, 10 + i), voiced=True)
        assert det.snr_db() is None, "under 2 s of speech the level is still the first words'"
        _feed(det, _noise(200, 600, 20 + i), voiced=True)
    _feed(det, _noise(400, 3000, 30), voiced=True)
    snr = det.snr_db()
    assert snr is not None and 14.0 <= snr <= 19.0, "a little above 14 dB: the background is the room's quietest"


def test_a_clean_source_reads_as_infinitely_far_above_its_digital_silence() -> None:
    det = PauseDetector()
    for i in range(4):
        _feed(det, _noise(900, 3000, i), voiced=True)
        _feed(det, np.zeros(16 * 200, dtype=np.int16), voiced=False)
    assert det.snr_db() == float("inf")


def _talk(det: PauseDetector, sentences: int, room: float, seed: int) -> None:
    """600 ms of speech at RMS 3000, then a 200 ms pause at the room's RMS, ``sentences`` times."""
    for i in range(sentences):
        _feed(det, _noise(600, 3000, seed + 2 * i), voiced=True)
        _feed(det, _noise(200, room, seed + 2 * i + 1), voiced=True)


def test_the_snr_is_an_average_over_seconds_not_one_background_window() -> None:
    import math

    det = PauseDetector()
    _talk(det, 6, 600, 40)
    before = det.snr_db()
    assert before is not None
    _talk(det, 4, 1500, 60)  # the room gets 8 dB louder for 3.2 s: the background window holds only that
    now = 20 * math.log10(det.speech_level / det.floor_level)
    after = det.snr_db()
    assert now < before - 5, "one reading follows the window"
    assert after is not None and now + 3 < after < before, "the average has moved only part of the way"


def test_a_gap_of_digital_silence_leaves_the_average_where_it_was() -> None:
    det = PauseDetector()
    _talk(det, 6, 600, 80)
    before = det.snr_db()
    _feed(det, np.zeros(16 * 2000, dtype=np.int16), voiced=False)  # a track's gap (DTX, a muted microphone)
    assert det.snr_db() == float("inf"), "while the gap is in the background's window"
    _talk(det, 5, 600, 100)
    after = det.snr_db()
    assert before is not None and after is not None and abs(after - before) < 1.5, "the same room as before it"


def test_a_word_is_said_only_as_loud_as_the_speaker_once_the_level_is_settled() -> None:
    det = PauseDetector()
    word = _noise(300, 3000, 1)
    _feed(det, _noise(1000, 3000, 2), voiced=True)
    assert not det.settled and not det.says_a_word(word, 100), "no judgement before the level is settled"
    _feed(det, _noise(2000, 600, 3), voiced=False)  # the room
    _feed(det, _noise(1500, 3000, 4), voiced=True)
    assert det.settled
    assert det.says_a_word(word, 100)
    assert not det.says_a_word(_noise(1000, 600, 5), 100), "the room's own noise is no word"
    assert not det.says_a_word(_noise(1000, 1200, 6), 100), "nor a sound 8 dB under the speaker"
    assert not det.says_a_word(word[: 50 * 16], 100), "nor 50 ms of a word when 100 are asked"
