"""A stream's first utterance starts at speech, not at the first background after digital silence (OnsetGate):
webrtcvad's noise model starts from nothing, and after a LiveKit track's silence it called -40 dBFS noise as
received voiced for a second (stand-in engine; the VAD's decisions are given where the test needs them)."""

from __future__ import annotations

import numpy as np

from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline
from livenexus_worker.streaming.vad import OnsetGate, VadOptions

from .fakes import Ctx, LengthEngine, silence

SR = 16000
FRAME = 480


def noise(ms: int, rms: float = 300.0, seed: int = 5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(16 * ms) * rms).astype(np.int16)


def feed_gate(gate: OnsetGate, audio: np.ndarray, voiced: bool) -> None:
    for i in range(0, audio.shape[0] - FRAME + 1, FRAME):
        gate.push(audio[i : i + FRAME], voiced)


def test_background_the_vad_calls_voiced_does_not_start_speech_until_it_has_called_sound_unvoiced(
        sentence: np.ndarray) -> None:
    gate = OnsetGate(VadOptions())
    feed_gate(gate, silence(1000), False)
    assert gate.allows_start(), "nothing but digital silence heard: no background to compare with"
    feed_gate(gate, noise(600), True)
    assert not gate.allows_start(), "the background alone, however the VAD reads it"
    feed_gate(gate, sentence[: 16 * 240], True)
    assert gate.allows_start(), "speech is far above it"
    feed_gate(gate, noise(300), False)  # the VAD has now called 300 ms of sound unvoiced: it has adapted
    feed_gate(gate, noise(300), True)
    assert gate.allows_start() and gate.adapted
    off = OnsetGate(VadOptions(onset_ratio=0.0))
    feed_gate(off, noise(600), True)
    assert off.allows_start()


def test_speech_right_after_digital_silence_starts_as_before(sentence: np.ndarray) -> None:
    gate = OnsetGate(VadOptions())
    feed_gate(gate, silence(500), False)
    feed_gate(gate, sentence[: 16 * 240], True)
    assert gate.allows_start()


class VoicedNoise:
    """webrtcvad as it read the first noise of a LiveKit track: everything but digital silence is voiced."""

    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(np.abs(frame).max() > 0)


def first_start(audio: np.ndarray, options: PipelineOptions) -> float:
    ctx = Ctx()
    ctx.engine = LengthEngine()
    pipe = StreamPipeline("s", "spk", ctx, lambda e: None, options)  # type: ignore[arg-type]
    pipe._vad = VoicedNoise()  # type: ignore[assignment]
    for i in range(0, audio.shape[0] - FRAME + 1, FRAME):
        pipe.push(audio[i : i + FRAME])
        if pipe._open is not None:
            break
    assert pipe._open is not None
    start = pipe._open.utt.start_sample / SR
    ctx.scheduler.close()
    return start


def test_the_first_utterance_starts_with_the_speech_after_noise(sentence: np.ndarray) -> None:
    audio = np.concatenate([silence(1000), noise(1000), sentence])
    # Speech begins at 2.0 s; the utterance holds the start window and pre-roll before its start (540 ms).
    assert 1.4 <= first_start(audio, PipelineOptions()) < 2.0
    assert first_start(audio, PipelineOptions(vad=VadOptions(onset_ratio=0.0))) < 1.1, "without the gate: the noise"
