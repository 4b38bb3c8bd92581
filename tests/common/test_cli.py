"""The CLI plumbing every program shares: signals set the stop event, sleeps end early, errors print alike."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from livenexus_common.cli import (
    EXIT_ERROR,
    EXIT_OK,
    LOG_FORMAT,
    fail,
    run_until_stopped,
    setup_logging,
    sleep_or_stop,
    stop_on_signals,
)
from livenexus_common.contract import Env


async def test_sleep_or_stop_returns_early_when_stopped() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    assert await sleep_or_stop(stop, 30) is True
    assert time.monotonic() - started < 5


async def test_sleep_or_stop_sleeps_the_full_time_otherwise() -> None:
    started = time.monotonic()
    assert await sleep_or_stop(asyncio.Event(), 0.05) is False
    assert await sleep_or_stop(None, 0.05) is False
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_set_the_stop_event(sig: signal.Signals) -> None:
    async def main(stop: asyncio.Event) -> int:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), sig)
        await asyncio.wait_for(stop.wait(), 10)
        return EXIT_OK

    assert run_until_stopped(main) == EXIT_OK


def test_stop_on_signals_outside_the_main_thread_is_a_no_op() -> None:
    """In a thread (as some tests run agents) the caller sets the event itself; installing must not raise."""

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        assert not stop.is_set()

    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert errors == []


def test_fail_prints_like_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail("livenexus-x", "no such room") == EXIT_ERROR
    assert fail("livenexus-x", ValueError("bad"), 7) == 7
    assert capsys.readouterr().err == "livenexus-x: error: no such room\nlivenexus-x: error: bad\n"


def test_setup_logging_levels() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        root.handlers.clear()
        setup_logging(verbose=True)
        assert root.level == logging.DEBUG
        assert root.handlers[0].formatter is not None and root.handlers[0].formatter._fmt == LOG_FORMAT
        root.handlers.clear()
        setup_logging()
        assert root.level == logging.INFO
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


@pytest.mark.parametrize(("value", "verbose", "level", "warned"), [
    ("debug", False, logging.DEBUG, False),
    (" WARNING ", False, logging.WARNING, False),
    ("info", False, logging.INFO, False),
    ("", False, logging.INFO, False),
    ("warning", True, logging.DEBUG, False),  # -v asks for the story whatever the pod's env says
    ("trace\nforged line", False, logging.INFO, True),
])
def test_setup_logging_takes_the_level_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, verbose: bool, level: int,
    warned: bool,
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setenv(Env.LOG_LEVEL, value)
    try:
        root.handlers.clear()
        setup_logging(verbose=verbose)  # its handler writes to the captured stderr
        assert root.level == level
        err = capsys.readouterr().err
        assert (Env.LOG_LEVEL in err) == warned, err
        if warned:  # the bad value is quoted, not written out raw into the log
            assert "'trace\\nforged line'" in err and err.count("\n") == 1
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
