"""Decode threads chosen by timing them on the host, not by the core count alone."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from livenexus_common.contract import Env
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.inference import calibrate, english
from livenexus_worker.inference.calibrate import MIN_SPEEDUP, ThreadTiming
from livenexus_worker.streaming import runtime as runtime_module
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions


def test_two_threads_are_kept_only_when_they_pay() -> None:
    assert ThreadTiming(one_s=0.40, two_s=0.22).threads == 2, "1.8x (the AVX2 hosts): two"
    assert ThreadTiming(one_s=0.40, two_s=0.40 / MIN_SPEEDUP).threads == 2, "on the line: two"
    assert ThreadTiming(one_s=0.40, two_s=0.33).threads == 1, "1.2x (an AMX host): one"
    assert ThreadTiming(one_s=0.40, two_s=0.50).threads == 1, "slower at two: one"
    assert ThreadTiming(one_s=0.40, two_s=0.0).threads == 1, "no timing: never two"


def test_a_timing_far_from_the_line_is_clear_on_either_side() -> None:
    assert ThreadTiming(one_s=0.41, two_s=0.46).clear, "0.88x (this AMD host): one thread, whatever more rounds say"
    assert ThreadTiming(one_s=0.40, two_s=0.20).clear, "2.0x: two"
    assert not ThreadTiming(one_s=0.40, two_s=0.33).clear, "1.21x: near enough to the line to time again"
    assert not ThreadTiming(one_s=0.40, two_s=0.25).clear, "1.6x: over it, but not by enough"


def test_timing_stops_once_clear_and_goes_on_near_the_line() -> None:
    def host(times: dict[int, list[float]]):  # type: ignore[no-untyped-def]
        calls: list[int] = []

        def run(threads: int) -> float:
            calls.append(threads)
            return times[threads][min((len(calls) - 1) // 2, len(times[threads]) - 1)]

        return run, calls

    run, calls = host({1: [0.41], 2: [0.47]})
    timing = calibrate.rounds_until_clear(run, repeats=4)
    assert (timing.rounds, calls, timing.threads) == (1, [1, 2], 1), "clear after one round: one thread"
    run, calls = host({1: [0.40], 2: [0.30, 0.21]})
    timing = calibrate.rounds_until_clear(run, repeats=4)
    assert (timing.rounds, timing.threads) == (2, 2), "a first round another load slowed is timed again"
    assert timing.two_s == 0.21, "the fastest of each counts"
    run, calls = host({1: [0.40], 2: [0.30]})
    timing = calibrate.rounds_until_clear(run, repeats=4)
    assert (timing.rounds, len(calls), timing.threads) == (4, 8, 1), "near the line: every round"


def test_a_model_that_cannot_be_timed_keeps_the_core_rule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "model.bin").write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING, logger=calibrate.__name__):
        assert calibrate.measured_threads(tmp_path) == 2
    assert "could not time decode threads" in caplog.text and "exit 1" in caplog.text


@pytest.mark.parametrize("out", ["", "garbage", '{"one_s": 0.2}', '{"one_s": "NaN", "two_s": 0.1}',
                                 '{"one_s": -1, "two_s": 0.1}', '{"one_s": 0.2, "two_s": 1e9}', '[1, 2]',
                                 '{"one_s": 0.2, "two_s": 0.1, "rounds": "x"}'])
def test_what_the_child_prints_is_checked(out: str) -> None:
    assert calibrate._parse(out) is None


def test_a_child_whose_mkl_never_asked_the_hook_turns_it_off(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    out = '{"one_s": 2.0, "two_s": 2.1, "rounds": 1, "mkl_hook": true, "mkl_hook_calls": 0}'
    monkeypatch.setattr(calibrate.subprocess, "run",
                        lambda *_a, **_k: subprocess.CompletedProcess([], 0, stdout=out, stderr=""))
    monkeypatch.setenv(Env.MKL_ON_AMD, "auto")  # restored after the test, whatever the code sets
    with caplog.at_level(logging.WARNING, logger=calibrate.__name__):
        assert calibrate.measured_threads.__wrapped__(Path("/nowhere")) == 2, "the slow timing is not used"
    assert os.environ[Env.MKL_ON_AMD] == "off" and "never asked the vendor hook" in caplog.text
    for fine in ('{"one_s": 0.2, "two_s": 0.3, "mkl_hook": true, "mkl_hook_calls": 4}',
                 '{"one_s": 0.2, "two_s": 0.3, "mkl_hook": false, "mkl_hook_calls": 0}',
                 '{"one_s": 0.2, "two_s": 0.3}'):
        assert not calibrate._hook_unasked(fine), fine


def test_the_child_times_the_real_model_at_one_and_two_threads(caplog: pytest.LogCaptureFixture) -> None:
    from livenexus_worker.inference.models import resolve

    model_dir = english.english_or_whole(resolve("base").path)  # what the worker times: its decoding copy
    assert model_dir.name.startswith(english.PREFIX)
    with caplog.at_level(logging.INFO, logger=calibrate.__name__):
        threads = calibrate.measured_threads(model_dir)
    assert threads in (1, 2)
    assert f"decode threads: {threads} (one " in caplog.text, "timed, not fallen back to the core rule"
    assert calibrate._parse('log line\n{"one_s": 0.2, "two_s": 0.1}').threads == 2  # type: ignore[union-attr]
    assert calibrate._parse('{"one_s": 0.2, "two_s": 0.3, "rounds": 1}') == ThreadTiming(0.2, 0.3, 1)
    assert "round(s))" in caplog.text


def test_the_runtime_decodes_on_the_measured_threads_with_lanes_to_match(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Path, str]] = []

    def timed(model_dir: Path, compute_type: str = "int8") -> int:
        asked.append((model_dir, compute_type))
        return 1

    monkeypatch.setattr(runtime_module, "measured_threads", timed)
    monkeypatch.setattr(Runtime, "load", lambda self: None)  # the thread choice comes before any model load
    monkeypatch.setattr(runtime_module.os, "sched_getaffinity", lambda _pid: {0, 1})
    options = RuntimeOptions(tiers=(TierSpec("base", "int8", 5, 250),), threads=2, measure_threads=True)
    rt = Runtime.create(options)
    try:
        assert [c for _, c in asked] == ["int8"], "the top rung's model is timed, once"
        assert asked[0][0].name.startswith(english.PREFIX), "the copy it decodes from: its last layer is smaller"
        assert (rt.decode_threads, rt.workers) == (1, 2), "one thread per decode: two decodes at once"
    finally:
        rt.close()
    asked.clear()
    rt = Runtime.create(replace(options, english_vocabulary=False))
    try:
        assert asked[0][0].name == "base", "no English copy: the model itself is timed"
    finally:
        rt.close()
    asked.clear()
    rt = Runtime.create(replace(options, measure_threads=False))
    try:
        assert not asked and (rt.decode_threads, rt.workers) == (2, 1), "not asked to measure: as given"
    finally:
        rt.close()
    rt = Runtime.create(replace(options, threads=1))
    try:
        assert not asked and rt.decode_threads == 1, "one thread asked for: nothing to measure"
    finally:
        rt.close()


def test_a_top_rung_that_cannot_be_found_is_not_timed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runtime_module, "measured_threads", lambda *_a: pytest.fail("timed a missing model"))
    monkeypatch.setattr(Runtime, "load", lambda self: None)
    options = RuntimeOptions(tiers=(TierSpec("no-such-model", "int8", 5, 250),), threads=2, measure_threads=True,
                             model_cache=str(tmp_path))
    rt = Runtime.create(options)
    try:
        assert rt.decode_threads == 2, "left as asked; loading reports the missing model"
    finally:
        rt.close()


def test_the_timed_model_is_resolved_once_loading_reuses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # resolve() hashes model.bin (~145 MB for base): timing threads must not make a worker's start hash it twice.
    calls: list[str] = []
    real = runtime_module.resolve

    def counted(name: str, cache: Path | None = None) -> object:
        calls.append(name)
        return real(name, cache)

    copies: list[Path] = []
    real_copy = runtime_module.english_or_whole

    def copied(source: Path, cache: Path | None = None) -> Path:
        copies.append(source)
        return real_copy(source, cache)

    timed: list[Path] = []

    def timing(model_dir: Path, compute_type: str = "int8") -> int:
        timed.append(model_dir)
        return 1

    monkeypatch.setattr(runtime_module, "resolve", counted)
    monkeypatch.setattr(runtime_module, "english_or_whole", copied)
    monkeypatch.setattr(runtime_module, "measured_threads", timing)
    options = RuntimeOptions(tiers=(TierSpec("base", "int8", 5, 250), TierSpec("base", "int8", 1, 250)), threads=2,
                             measure_threads=True)
    rt = Runtime.create(options)
    try:
        assert calls == ["base"], "resolved once, for the timing and the load"
        assert len(copies) == 1, "its English copy looked up (and its model.bin hashed) once too"
        assert rt.is_available(0) and rt.decode_threads == 1
        assert rt.engine_for(0)[2].model_dir == timed[0], "the directory timed is the one decoded from"
    finally:
        rt.close()
