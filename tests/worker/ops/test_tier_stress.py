"""Tier control under real CPU contention: stress-ng on the same cores while speech arrives in real time.

Quiet → load (stress-ng on every usable core) → quiet again, with one synthesised speaker throughout.
The tier must step down during the load, finals must keep coming, and the tier must come back up once
the load is gone (latencies are printed: a test asserts behaviour, not wall time on a loaded machine). Short
windows (3 s down, 6 s up, 2 s cooldown) keep the whole run near a minute.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.ops.cpu import CpuSampler
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.tier_control import TierController, TierManager
from livenexus_worker.room.settings import WorkerSettings

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(400)]

SENTENCES = [
    "The first item on the agenda is the release schedule for next month.",
    "We moved the launch to the twelfth because the security review is not finished.",
    "Can someone from the platform team confirm the database migration is ready?",
    "Yes, the migration ran in staging last night without any errors.",
    "Please send me your interview feedback by Friday afternoon.",
]
ENV = {
    "LIVENEXUS_TIER_DOWN_WINDOW_S": "3",
    "LIVENEXUS_TIER_UP_WINDOW_S": "6",
    "LIVENEXUS_TIER_COOLDOWN_S": "2",
    "LIVENEXUS_METRICS_PORT": "0",
}
QUIET_S, LOAD_S, RECOVER_S = 10.0, 25.0, 35.0


@dataclass
class Recording:
    """What the run produced, with wall times relative to the start of the quiet phase."""

    finals: list[tuple[float, TranscriptEvent]] = field(default_factory=list)
    """(emission time, event) per final."""
    tiers: list[tuple[float, int]] = field(default_factory=list)
    """(time, tier index) whenever the controller applied a change."""


def wait_for_quiet(sampler: CpuSampler, limit_s: float = 90.0) -> None:
    """Other jobs on this machine (builds, other test runs) would fake a load phase; wait them out."""
    deadline = time.monotonic() + limit_s
    calm = 0
    while time.monotonic() < deadline and calm < 4:
        time.sleep(0.5)
        s = sampler.sample()
        calm = calm + 1 if (s.busy if s.busy is not None else s.process) < 0.4 else 0
    if calm < 4:
        pytest.skip("machine too busy for a contention test (another process keeps the CPUs loaded)")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from livenexus_dev.tts import conversation

    return conversation(SENTENCES, gap_s=0.7, lead_s=0.3)


@pytest.fixture
def stress_ng() -> Iterator[list[subprocess.Popen[bytes]]]:
    if shutil.which("stress-ng") is None:
        pytest.skip("stress-ng not installed")
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=10)


def test_tier_steps_down_under_contention_and_back_up(
    speech: np.ndarray, stress_ng: list[subprocess.Popen[bytes]]
) -> None:
    from livenexus_worker.inference.models import ModelNotFoundError
    from livenexus_worker.streaming.runtime import Runtime

    settings = WorkerSettings.from_env(ENV)
    metrics = WorkerMetrics()
    try:
        rt = Runtime.create(settings.runtime_options(), observer=metrics)
    except ModelNotFoundError:
        pytest.skip("Whisper base model not prepared")
    n = len(settings.tiers)
    manager = TierManager(settings.tiers, settings.tier_options(),
                          unavailable={i for i in range(n) if not rt.is_available(i)})
    usable = {i for i in range(n) if rt.is_available(i)}
    assert len(usable) >= 2, "need at least two usable tiers to observe a change"
    rec = Recording()
    t0 = time.monotonic()

    def apply(index: int) -> None:
        rec.tiers.append((time.monotonic() - t0, index))
        rt.set_tier(index)

    sampler = metrics.sampler
    others: list[tuple[float, float]] = []  # (time, CPU share used by other processes)

    def signals() -> tuple[float, float]:
        s = sampler.sample()
        if s.busy is not None:
            others.append((time.monotonic() - t0, max(0.0, s.busy - s.process)))
        return s.pressure, rt.scheduler.lag_s()

    controller = TierController(manager, signals, apply, interval_s=0.5)
    wait_for_quiet(CpuSampler(min_interval_s=0.0))

    pipe = rt.open_stream("s1", "alice", lambda e: rec.finals.append((time.monotonic() - t0, e))
                          if e.is_final else None)
    stop = threading.Event()

    def feed() -> None:
        # Real-time pacing against absolute due times, looping the conversation.
        chunk = 320  # 20 ms
        start = time.monotonic()
        i = 0
        while not stop.is_set():
            due = start + (i + chunk) / 16000
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pos = i % speech.shape[0]
            piece = speech[pos : pos + chunk]
            if piece.shape[0] < chunk:
                piece = np.concatenate([piece, speech[: chunk - piece.shape[0]]])
            pipe.push(piece)
            i += chunk
        pipe.flush()

    t0 = time.monotonic()
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    controller.start()
    try:
        time.sleep(QUIET_S)
        load_start = time.monotonic() - t0
        cores = max(1, round(sampler.usable_cores))
        stress_ng.append(subprocess.Popen(
            ["stress-ng", "--cpu", str(cores), "--timeout", f"{int(LOAD_S)}s", "--quiet"]))
        stress_ng[0].wait(timeout=LOAD_S + 30)
        load_end = time.monotonic() - t0
        time.sleep(RECOVER_S)
    finally:
        stop.set()
        feeder.join(timeout=30)
        controller.stop()
        rt.wait_idle(60)
        rt.close()

    end = time.monotonic() - t0

    def tier_at(t: float) -> int:
        current = 0
        for when, idx in rec.tiers:
            if when <= t:
                current = idx
        return current

    history = [(round(w, 1), i) for w, i in rec.tiers]

    def neighbours(a: float, b: float) -> float:
        """Mean CPU share other processes used in [a, b) (stress-ng excluded by choosing the span)."""
        shares = [x for w, x in others if a <= w < b]
        return statistics.fmean(shares) if shares else 0.0

    # This machine may be shared (other test runs, builds): their load is real contention and the
    # policy rightly reacts to it, but then this run cannot tell quiet from load.
    if neighbours(0, load_start) > 0.25 or neighbours(load_end + 2, end) > 0.25:
        pytest.skip(f"other processes used the CPUs outside the load phase "
                    f"({neighbours(0, load_start):.2f} before, {neighbours(load_end + 2, end):.2f} after)")

    def signals_between(a: float, b: float) -> str:
        """Smoothed (cpu, lag) per second of the given span, for failure messages."""
        ticks = [h for h in controller.history if a <= h[0] - t0 < b]
        return " ".join(f"{h[0] - t0:.0f}s:{h[3]:.2f}/{h[4]:.2f}" for h in ticks[::2])

    assert tier_at(load_start) == 0, f"stepped down before the load started: {history}"
    downs = [(w, i) for w, i in rec.tiers if load_start < w <= load_end and i > 0]
    assert downs, f"no step down during {LOAD_S:.0f} s of contention: {history}"
    first_down = downs[0][0] - load_start
    assert first_down < 15.0, f"first step down only {first_down:.1f} s into the load"
    deepest = max(i for _, i in downs)
    assert tier_at(end) < deepest, (
        f"never stepped back up after the load: {history}; cpu/lag after: {signals_between(load_end, end)}")

    # Finals kept coming under load once it stepped down, and after it. Their latency is printed, not asserted:
    # under stress-ng on every core it is the machine's, not the policy's (4 of 5 finals 240-431 ms and one
    # 3.3 s in one clean-clone run, all under 0.5 s in the run before it).
    during = [e.latency_ms for w, e in rec.finals if load_start + first_down + 3 < w <= load_end]
    after = [e.latency_ms for w, e in rec.finals if w > load_end + 3]
    assert len(during) >= 2 and len(after) >= 3, (len(during), len(after))
    # Finals produced by lower tiers really were decoded by them.
    assert {e.tier for _, e in rec.finals} > {settings.tiers[0].name}

    text = metrics.exposition().decode()
    assert 'livenexus_tier_changes_total{direction="down"} 0.0' not in text
    assert 'livenexus_tier_changes_total{direction="up"} 0.0' not in text
    print(f"\nload {load_start:.1f}-{load_end:.1f} s; tier history {history}; "
          f"final latency under load {sorted(round(x) for x in during)} ms, after {sorted(round(x) for x in after)} ms")
