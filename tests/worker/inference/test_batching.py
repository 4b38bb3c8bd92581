"""The batch gate: jobs on their own threads, engine calls collected into batches, results routed back."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from livenexus_worker.inference.batching import Batcher, current_gate
from livenexus_worker.inference.engine import DecodeRequest, Hypothesis


class FakeEngine:
    """Says the request's first sample back as its text; records each batch's values."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, **kwargs: object) -> Hypothesis:
        req = DecodeRequest(audio, beam_size)
        gate = current_gate()
        return gate.call(self, req) if gate is not None else self.transcribe_batch([req])[0]  # type: ignore[arg-type]

    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        values = [int(r.audio[0]) for r in requests]
        with self.lock:
            self.batches.append(values)
        if self.fail_on in values:
            raise ValueError(f"bad window {self.fail_on}")
        return [Hypothesis(str(v), 0.0, 0.0, "en", 0.0, 0.0, 100) for v in values]


def said(engine: FakeEngine, value: int, beam: int = 1) -> str:
    return engine.transcribe(np.array([value], dtype=np.int16), beam_size=beam).text


def run(batcher: Batcher, jobs: list[Callable[[], None]]) -> tuple[list[int], list[BaseException | None]]:
    gate, errors = batcher.together(jobs)
    return gate.batches, errors


@pytest.fixture
def batcher() -> Batcher:
    return Batcher(4)


def test_calls_of_concurrent_jobs_run_as_one_batch_and_each_gets_its_own_result(batcher: Batcher) -> None:
    engine = FakeEngine()
    got: dict[int, list[str]] = {}

    def job(k: int) -> Callable[[], None]:
        # Two decodes each, the second depending on the first (as a final decoded again after a mismatch).
        def go() -> None:
            first = said(engine, k)
            got[k] = [first, said(engine, int(first) + 100)]
        return go

    batches, errors = run(batcher, [job(1), job(2), job(3)])
    assert errors == [None, None, None]
    assert got == {1: ["1", "101"], 2: ["2", "102"], 3: ["3", "103"]}
    assert batches == [3, 3]
    assert sorted(engine.batches[0]) == [1, 2, 3] and sorted(engine.batches[1]) == [101, 102, 103]


def test_a_job_that_decodes_more_often_goes_on_alone(batcher: Batcher) -> None:
    engine = FakeEngine()
    batches, errors = run(batcher, [lambda: [said(engine, i) for i in range(3)] and None,
                                    lambda: said(engine, 9) and None,
                                    lambda: None])  # a job that never decodes (its final was obsolete)
    assert errors == [None, None, None]
    assert batches == [2, 1, 1]
    assert sorted(engine.batches[0]) == [0, 9]


def test_different_beams_are_decoded_apart(batcher: Batcher) -> None:
    engine = FakeEngine()
    batches, _ = run(batcher, [lambda: said(engine, 1, beam=5) and None, lambda: said(engine, 2, beam=1) and None,
                               lambda: said(engine, 3, beam=5) and None])
    assert sorted(batches) == [1, 2]
    assert sorted(sorted(b) for b in engine.batches) == [[1, 3], [2]]


def test_a_failing_window_fails_only_its_own_job(batcher: Batcher) -> None:
    engine = FakeEngine(fail_on=2)
    got: dict[int, str] = {}

    def job(k: int) -> Callable[[], None]:
        def go() -> None:
            got[k] = said(engine, k)
        return go

    _batches, errors = run(batcher, [job(1), job(2), job(3)])
    assert got == {1: "1", 3: "3"}
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], ValueError) and "bad window 2" in str(errors[1])
    # The batch failed, then each window was decoded alone.
    assert len(engine.batches) == 4 and sorted(len(b) for b in engine.batches) == [1, 1, 1, 3]


def test_a_job_that_raises_before_decoding_does_not_hold_up_the_others(batcher: Batcher) -> None:
    engine = FakeEngine()
    batches, errors = run(batcher, [lambda: 1 / 0 and None, lambda: said(engine, 5) and None])  # type: ignore[func-returns-value]
    assert isinstance(errors[0], ZeroDivisionError) and errors[1] is None
    assert batches == [1]


def test_outside_a_batch_the_engine_is_called_directly() -> None:
    engine = FakeEngine()
    assert current_gate() is None
    assert said(engine, 7) == "7"
    assert engine.batches == [[7]]


def test_no_more_jobs_than_threads(batcher: Batcher) -> None:
    with pytest.raises(ValueError, match="at most 4"):
        batcher.together([lambda: None] * 5)
    with pytest.raises(ValueError):
        Batcher(0)


def test_windows_of_very_different_lengths_are_decoded_apart(batcher: Batcher) -> None:
    # Every window of a batch is padded to the longest: a 1 s final next to a 12 s one would pay a 12 s encode.
    engine = FakeEngine()

    def job(value: int, seconds: float) -> Callable[[], None]:
        def go() -> None:
            audio = np.full(int(seconds * 16000), value, dtype=np.int16)
            assert engine.transcribe(audio).text == str(value)
        return go

    _batches, errors = run(batcher, [job(1, 1.0), job(2, 2.5), job(3, 12.0), job(4, 9.0)])
    assert errors == [None] * 4
    assert sorted(sorted(b) for b in engine.batches) == [[1, 2], [3, 4]]
