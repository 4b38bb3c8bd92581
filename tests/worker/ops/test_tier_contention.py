"""CPU pressure counts toward a step down only while speakers wait for each other's decodes."""

from __future__ import annotations

from livenexus_worker.core.tier_spec import DEFAULT_TIERS
from livenexus_worker.ops.tier_control import TierController, TierManager, TierOptions, TierPolicy

OPTS = TierOptions(
    levels=4, cpu_high=0.85, cpu_low=0.5, lag_high_s=1.0, lag_low_s=0.3,
    down_window_s=5.0, up_window_s=20.0, cooldown_s=10.0, smoothing_s=0.0,
)
HOT, CALM, MID = 0.95, 0.2, 0.7


def feed(p: TierPolicy, start: float, end: float, cpu: float, lag: float = 0.0, *,
         contended: bool) -> list[tuple[float, int]]:
    changes = []
    for t in range(int(start), int(end)):
        new = p.observe(float(t), cpu, lag, contended=contended)
        if new is not None:
            changes.append((float(t), new))
    return changes


def test_one_speaker_keeping_up_on_a_busy_cpu_keeps_its_tier() -> None:
    # One speaker's two-thread decodes hold both cores most of the time while its finals never wait.
    p = TierPolicy(OPTS)
    assert feed(p, 0, 120, HOT, 0.05, contended=False) == []
    assert p.current == 0


def test_without_contention_lag_still_steps_down() -> None:
    p = TierPolicy(OPTS)
    assert feed(p, 0, 6, HOT, 1.5, contended=False) == [(5.0, 1)]


def test_speakers_waiting_for_lanes_make_cpu_count() -> None:
    p = TierPolicy(OPTS)
    assert feed(p, 0, 6, HOT, 0.05, contended=True) == [(5.0, 1)]


def test_contention_a_moment_ago_still_counts_for_one_down_window() -> None:
    # Speakers' utterances overlap on and off; one overlap keeps the CPU rule on for the down window after it.
    p = TierPolicy(OPTS)
    changes = []
    for t in range(12):
        new = p.observe(float(t), HOT, 0.0, contended=t % 4 == 0)
        if new is not None:
            changes.append((t, new))
    assert changes == [(5, 1)]


def test_once_contention_is_over_a_hot_cpu_no_longer_steps_down() -> None:
    p = TierPolicy(OPTS)
    assert feed(p, 0, 1, HOT, contended=True) == []
    # The window that started under contention must not finish without it.
    assert feed(p, 1, 60, HOT, contended=False) == []
    assert p.current == 0


def test_without_contention_a_busy_cpu_does_not_hold_a_stepped_down_tier() -> None:
    p = TierPolicy(OPTS, start=2)
    assert feed(p, 0, 30, MID, 0.1, contended=True) == []  # busy and contended: not calm
    # The CPU stops counting one down window after the last contention (29 s), then calm holds 20 s.
    assert feed(p, 30, 60, MID, 0.1, contended=False) == [(54.0, 1)]
    # Lag above the low mark is still not calm.
    q = TierPolicy(OPTS, start=2)
    assert feed(q, 0, 60, CALM, 0.5, contended=False) == []


def test_controller_asks_whether_speakers_contend() -> None:
    contended = [False]
    clock = [0.0]
    manager = TierManager(DEFAULT_TIERS[:4], OPTS)
    applied: list[int] = []
    ctl = TierController(manager, lambda: (HOT, 0.0), applied.append, clock=lambda: clock[0],
                         contended=lambda: contended[0])
    for t in range(10):
        clock[0] = float(t)
        ctl.tick()
    assert applied == []
    contended[0] = True
    for t in range(10, 16):
        clock[0] = float(t)
        ctl.tick()
    assert applied == [1]
