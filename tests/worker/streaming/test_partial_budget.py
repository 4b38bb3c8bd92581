"""Partial cadence follows a CPU budget: partials of all speakers together may keep the inference thread busy
only a share of the time, so with more speakers or dearer partials each stream asks less often (measured decode
cost, stand-in decoder, a fake clock so the count does not depend on this machine's speed)."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming import pipeline as pipeline_module
from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline

from .fakes import Ctx, LengthEngine, silence


class CostEngine(LengthEngine):
    """Reports that every decode took ``cost`` seconds; counts partial decodes."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost
        self.partials = 0

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context)
        if max_new_tokens is not None:
            self.partials += 1
        return dataclasses.replace(hyp, encode_s=self.cost / 2, decode_s=self.cost / 2)


def partials_over(speech: np.ndarray, cost: float, speakers: int, monkeypatch: pytest.MonkeyPatch) -> int:
    clock = [1000.0]
    monkeypatch.setattr(pipeline_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    ctx = Ctx()
    ctx.engine = CostEngine(cost)
    ctx.speakers = speakers
    # No commits: the count must not depend on where pauses fall. The share is set: the sums below use it.
    pipe = StreamPipeline("s", "spk", ctx, lambda e: None, PipelineOptions(commit_in_speech=False, partial_share=0.6))  # type: ignore[arg-type]
    audio = np.concatenate([silence(300), speech])
    for i in range(0, audio.shape[0] - 480, 480):
        clock[0] += 0.03
        pipe.push(audio[i : i + 480])
        assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    return ctx.engine.partials


def test_partials_stretch_with_speakers_and_cost(sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    speech = np.concatenate([sentence] * 4)  # ~11 s without a pause: one utterance
    seconds = speech.shape[0] / 16000 - 1.0  # partials start after 1 s of audio
    cheap = partials_over(speech, 0.05, 1, monkeypatch)  # 0.05 x 1 / 0.6 < the tier's 250 ms: the tier decides
    assert cheap >= 0.8 * seconds / 0.25
    crowded = partials_over(speech, 0.15, 4, monkeypatch)  # 0.15 x 4 / 0.6 = 1 s between partials
    assert 0.8 * seconds / 1.0 <= crowded <= 1.2 * seconds / 1.0 + 1
    assert crowded < cheap / 3

