"""Shared fixtures: one model load and one set of real servers per test session (2 cores, 90 minutes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["tests.servers.fixtures"]

ARTIFACTS = Path(os.environ.get("LIVENEXUS_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def runtime() -> Iterator[object]:
    """The real base int8 model, loaded once for every model test."""
    from livenexus_worker.core.tier_spec import TierSpec
    from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions

    rt = Runtime.create(RuntimeOptions(tiers=(TierSpec("base", "int8", 5, 250), TierSpec("base", "int8", 1, 250))))
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def speech_cache() -> dict[str, np.ndarray]:
    """Synthesised speech reused across tests (espeak-ng is slow enough to matter on 2 cores)."""
    return {}


def speak(cache: dict[str, np.ndarray], text: str, **kwargs: object) -> np.ndarray:
    from livenexus_dev.tts import synthesize

    key = repr((text, sorted(kwargs.items())))
    if key not in cache:
        cache[key] = synthesize(text, **kwargs)  # type: ignore[arg-type]
    return cache[key]


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # The LiveKit client library (a Rust FFI) can panic while the interpreter tears down its threads, after
    # every test has run and been reported; that abort would replace pytest's real exit status. Once the
    # report is out, leave without interpreter teardown when that library was loaded.
    import sys

    if "livekit.rtc" in sys.modules and _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The real node (kubelet, containerd, control plane, the release's pods) stays up from its first test to the end
    # of the session and keeps a share of the two cores busy: run its tests last, so the timing-sensitive tests
    # before them (tier stress, CPU sampling) see a quiet machine. The sort is stable: file order is kept otherwise.
    items.sort(key=lambda item: item.get_closest_marker("node") is not None)
