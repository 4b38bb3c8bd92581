"""TierPolicy / TierManager on a fake clock with fake signals."""

from __future__ import annotations

import logging
import time

import pytest

from livenexus_common.contract import model_ladder
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.ops.tier_control import TierController, TierManager, TierOptions, TierPolicy

OPTS = TierOptions(
    levels=4, cpu_high=0.85, cpu_low=0.5, lag_high_s=1.0, lag_low_s=0.3,
    down_window_s=5.0, up_window_s=20.0, cooldown_s=10.0, smoothing_s=0.0,
)
HOT, CALM, MID = 0.95, 0.2, 0.7
LADDER = model_ladder("base", "int8", 5)


def run(policy: TierPolicy, start: float, end: float, cpu: float, lag: float = 0.0,
        step: float = 1.0) -> list[tuple[float, int]]:
    """Feed one sample per ``step`` seconds over [start, end); returns (time, new index) of each change."""
    changes = []
    t = start
    while t < end:
        new = policy.observe(t, cpu, lag)
        if new is not None:
            changes.append((t, new))
        t += step
    return changes


def test_sustained_cpu_pressure_steps_down_after_the_window() -> None:
    p = TierPolicy(OPTS)
    assert run(p, 0, 5, HOT) == []  # samples at 0..4: only 4 s held
    assert p.observe(5, HOT, 0.0) == 1
    assert p.current == 1


def test_blip_does_not_step_down() -> None:
    p = TierPolicy(OPTS)
    # 4 s of pressure, one normal sample, 4 s of pressure again: never 5 s in a row.
    assert run(p, 0, 4, HOT) == []
    assert p.observe(4, MID, 0.0) is None
    assert run(p, 5, 9, HOT) == []
    assert p.current == 0


def test_lag_alone_steps_down() -> None:
    p = TierPolicy(OPTS)
    assert run(p, 0, 6, CALM, lag=1.5) == [(5, 1)]


def test_cooldown_then_another_full_window() -> None:
    p = TierPolicy(OPTS)
    changes = run(p, 0, 40, HOT)
    # First at 5 s; each later one needs the cooldown (10 s) and, after it, a 5 s window measured
    # since the change; the window is shorter than the cooldown so the cooldown decides.
    assert changes == [(5, 1), (15, 2), (25, 3)]


def test_window_longer_than_cooldown_decides() -> None:
    p = TierPolicy(TierOptions(levels=3, down_window_s=8.0, cooldown_s=2.0, up_window_s=20.0))
    # After a change the window restarts at the first sample taken under the new tier (9 s).
    assert run(p, 0, 30, HOT) == [(8, 1), (17, 2)]


def test_bottom_clamp() -> None:
    p = TierPolicy(OPTS, start=3)
    assert run(p, 0, 60, HOT) == []
    assert p.current == 3


def test_top_clamp() -> None:
    p = TierPolicy(OPTS)
    assert run(p, 0, 100, CALM) == []
    assert p.current == 0


def test_step_up_needs_the_longer_calm() -> None:
    p = TierPolicy(OPTS, start=2)
    assert run(p, 0, 20, CALM) == []
    assert p.observe(20, CALM, 0.0) == 1


def test_step_up_interrupted_by_moderate_load() -> None:
    p = TierPolicy(OPTS, start=2)
    assert run(p, 0, 19, CALM) == []
    assert p.observe(19, MID, 0.0) is None  # inside the hysteresis band: resets the calm window
    assert run(p, 20, 40, CALM) == []
    assert p.observe(40, CALM, 0.0) == 1


def test_calm_cpu_with_lag_between_thresholds_does_not_step_up() -> None:
    p = TierPolicy(OPTS, start=1)
    assert run(p, 0, 100, CALM, lag=0.5) == []


def test_hysteresis_band_never_changes() -> None:
    p = TierPolicy(OPTS, start=1)
    # Oscillating inside (low, high) forever: neither window ever runs.
    for t in range(200):
        assert p.observe(float(t), MID if t % 2 else 0.8, 0.6) is None
    assert p.current == 1


def test_oscillation_across_both_thresholds_does_not_flap() -> None:
    p = TierPolicy(OPTS, start=1)
    # 3 s hot, 3 s calm, repeated: shorter than both windows.
    for t in range(120):
        cpu = HOT if (t // 3) % 2 == 0 else CALM
        assert p.observe(float(t), cpu, 0.0) is None


def test_smoothing_lets_bursty_but_moderate_load_step_up() -> None:
    # Decode bursts: 0.7 and 0.1 alternating every 0.5 s, i.e. 40 % on average.
    def bursty(p: TierPolicy) -> list[tuple[float, int]]:
        changes = []
        for i in range(80):
            new = p.observe(i * 0.5, 0.7 if i % 2 else 0.1, 0.0)
            if new is not None:
                changes.append((i * 0.5, new))
        return changes

    raw = TierPolicy(TierOptions(levels=3, up_window_s=6.0, smoothing_s=0.0), start=2)
    assert bursty(raw) == []  # every other raw sample is above cpu_low: the calm never "holds"
    smooth = TierPolicy(TierOptions(levels=3, up_window_s=6.0, cooldown_s=2.0, smoothing_s=2.0), start=2)
    changes = bursty(smooth)
    assert [new for _, new in changes] == [1, 0]
    assert changes[0][0] >= 6.0


def test_smoothing_delays_but_does_not_suppress_a_real_overload() -> None:
    p = TierPolicy(TierOptions(levels=2, cpu_high=0.85, down_window_s=3.0, smoothing_s=2.0))
    assert p.observe(0.0, 0.3, 0.0) is None
    changes = run(p, 0.5, 20, 1.0, step=0.5)
    # The average passes 0.85 once 0.7·e^(-t/2) < 0.15, i.e. after ~3.1 s (first sample at 3.5 s),
    # then the 3 s window: the step comes at 6.5 s, not at 3.0 s as without smoothing.
    assert changes == [(6.5, 1)]
    assert p.signals is not None and p.signals[0] > 0.85


def test_smoothing_catches_sawtooth_lag() -> None:
    # An overloaded queue that drains every 3 s: the oldest job's age climbs 0 → 2.5 s, then resets.
    def sawtooth(p: TierPolicy) -> list[tuple[float, int]]:
        changes = []
        for i in range(60):
            new = p.observe(i * 0.5, 0.6, (i % 6) * 0.5)
            if new is not None:
                changes.append((i * 0.5, new))
        return changes

    assert sawtooth(TierPolicy(TierOptions(levels=2, down_window_s=5.0, smoothing_s=0.0))) == []
    changes = sawtooth(TierPolicy(TierOptions(levels=2, down_window_s=5.0, smoothing_s=2.0)))
    assert [new for _, new in changes] == [1]


def test_skips_unavailable_tier_down_and_up() -> None:
    p = TierPolicy(OPTS, available=lambda i: i != 1)
    assert run(p, 0, 6, HOT) == [(5, 2)]
    assert p.skipped == (1,)
    assert run(p, 6, 40, CALM) == [(26, 0)]  # cooldown ended at 15; calm since 6; window 20 → 26
    assert p.skipped == (1,)


def test_all_lower_tiers_unavailable_clamps() -> None:
    p = TierPolicy(OPTS, start=1, available=lambda i: i < 2)
    assert run(p, 0, 30, HOT) == []
    assert p.current == 1


def test_options_reject_inverted_thresholds() -> None:
    with pytest.raises(ValueError):
        TierOptions(levels=2, cpu_low=0.9, cpu_high=0.8)
    with pytest.raises(ValueError):
        TierOptions(levels=2, lag_low_s=2.0, lag_high_s=1.0)
    with pytest.raises(ValueError):
        TierOptions(levels=0)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def set_tier(self, index: int, spec: TierSpec) -> None:
        self.calls.append((index, spec.name))


def test_manager_waits_for_idle_before_committing() -> None:
    rec = Recorder()
    m = TierManager(LADDER, TierOptions(levels=len(LADDER), cooldown_s=10.0), listener=rec)
    assert rec.calls == [(0, LADDER[0].name)]
    pending = None
    for t in range(6):
        pending = m.request(float(t), HOT, 0.0)
    assert pending == 1
    assert m.commit_if_idle(in_utterance=True) is None
    assert m.active == 0 and m.pending == 1
    assert m.commit_if_idle(in_utterance=False) == 1
    assert (m.active, m.pending, m.spec) == (1, None, LADDER[1])
    assert rec.calls[-1] == (1, LADDER[1].name)
    assert m.commit_if_idle(in_utterance=False) is None  # nothing left to commit


def test_manager_pending_advances_while_speech_continues() -> None:
    m = TierManager(LADDER, TierOptions(levels=4, down_window_s=2.0, cooldown_s=3.0))
    for t in range(12):
        m.request(float(t), HOT, 0.0)
        m.commit_if_idle(in_utterance=True)
    # The policy kept deciding (2, 5, 8, 11 → clamped at 3) while the swap waited.
    assert m.active == 0 and m.pending == 3
    assert m.commit_if_idle(in_utterance=False) == 3


def test_manager_drops_pending_when_policy_returns_to_active() -> None:
    m = TierManager(LADDER, TierOptions(levels=4, down_window_s=2.0, up_window_s=4.0, cooldown_s=1.0,
                                               smoothing_s=0.0))
    for t in range(3):
        m.request(float(t), HOT, 0.0)
    assert m.pending == 1
    for t in range(3, 8):
        m.request(float(t), CALM, 0.0)
    assert m.policy.current == 0
    assert m.pending is None
    assert m.commit_if_idle(in_utterance=False) is None


def test_manager_logs_and_skips_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    m = TierManager(LADDER, TierOptions(levels=4, down_window_s=1.0), unavailable={1})
    with caplog.at_level(logging.INFO, logger="livenexus_worker.ops.tier_control"):
        m.request(0.0, HOT, 0.0)
        assert m.request(1.0, HOT, 0.0) == 2
        assert m.commit_if_idle(False) == 2
    assert any("unavailable" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    assert any("tier down" in r.message for r in caplog.records)


def test_manager_mark_unavailable_active_falls_back_below() -> None:
    rec = Recorder()
    m = TierManager(LADDER, TierOptions(levels=4), listener=rec)
    assert m.mark_unavailable(0, now=0.0) == 1
    assert m.active == 1 and rec.calls[-1][0] == 1
    # Calm must not bring the failed tier back.
    for t in range(0, 200, 5):
        m.request(float(t), CALM, 0.0)
    assert m.pending is None and m.active == 1


def test_manager_first_tier_unavailable_at_start() -> None:
    m = TierManager(LADDER, TierOptions(levels=4), unavailable={0, 1})
    assert m.active == 2
    with pytest.raises(ValueError):
        TierManager(LADDER[:1], TierOptions(levels=1), unavailable={0})


def test_controller_ticks_apply_committed_changes() -> None:
    now = [0.0]
    signal = {"cpu": HOT, "lag": 0.0}
    speaking = [True]
    applied: list[int] = []
    m = TierManager(LADDER, TierOptions(levels=4, down_window_s=2.0, up_window_s=4.0, cooldown_s=1.0,
                                               smoothing_s=0.0))
    ctl = TierController(m, lambda: (signal["cpu"], signal["lag"]), applied.append,
                         in_utterance=lambda: speaking[0], clock=lambda: now[0])
    for t in range(3):
        now[0] = float(t)
        ctl.tick()
    assert applied == [] and m.pending == 1  # due, but someone is speaking
    speaking[0] = False
    assert ctl.tick() == 1
    assert applied == [1]
    signal["cpu"] = CALM
    for t in range(3, 9):
        now[0] = float(t)
        ctl.tick()
    assert applied == [1, 0]
    assert ctl.history[-1][-1] == 0


def test_controller_thread_survives_a_failing_signal() -> None:
    calls: list[float] = []

    def signals() -> tuple[float, float]:
        calls.append(0.0)
        if len(calls) == 1:
            raise OSError("cgroup file vanished")
        return CALM, 0.0

    m = TierManager(LADDER, TierOptions(levels=4))
    ctl = TierController(m, signals, lambda i: None, interval_s=0.01).start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    ctl.stop()
    assert len(calls) >= 3


# -- holding the tier while the operator can still resize the pod ------------------------------------------

AUTO = TierOptions(
    levels=4, cpu_high=0.85, cpu_low=0.5, lag_high_s=1.0, lag_low_s=0.3, down_window_s=5.0, up_window_s=20.0,
    cooldown_s=10.0, smoothing_s=0.0, autoscale_max_cores=2.0, autoscale_grace_s=10.0,
)


def feed(policy: TierPolicy, start: float, end: float, cpu: float, cores: float, lag: float = 0.0) -> list[int]:
    out = []
    t = start
    while t < end:
        new = policy.observe(t, cpu, lag, cores)
        if new is not None:
            out.append(new)
        t += 1.0
    return out


def test_pressure_below_the_autoscale_ceiling_waits_for_the_resize_then_steps_down_anyway() -> None:
    p = TierPolicy(AUTO)
    assert feed(p, 0.0, 14.5, HOT, cores=0.5) == []  # 5 s window + 10 s grace not yet over
    assert feed(p, 14.5, 16.0, HOT, cores=0.5) == [1]  # the node never granted it: a cheaper tier


def test_a_resize_within_the_grace_keeps_the_tier_and_calm_on_the_new_quota_steps_back_up() -> None:
    p = TierPolicy(AUTO, start=1)  # already one rung down (e.g. an earlier Infeasible resize)
    assert feed(p, 0.0, 8.0, HOT, cores=0.5) == []
    # The operator doubled the quota: the same work is now half the share, below the high mark.
    assert feed(p, 8.0, 27.0, MID, cores=1.0) == []
    assert feed(p, 27.0, 60.0, CALM, cores=1.0) == [0]


def test_at_the_ceiling_the_normal_down_window_applies() -> None:
    p = TierPolicy(AUTO)
    assert feed(p, 0.0, 6.0, HOT, cores=2.0) == [1]


def test_without_an_autoscaler_the_quota_changes_nothing_but_restarts_the_windows() -> None:
    p = TierPolicy(OPTS)
    assert feed(p, 0.0, 4.0, HOT, cores=0.5) == []
    # A new budget (an in-place resize by someone else): pressure measured against the old one is void.
    assert feed(p, 4.0, 9.0, HOT, cores=1.0) == []
    assert feed(p, 9.0, 10.0, HOT, cores=1.0) == [1]


def test_controller_reads_the_quota_on_every_tick() -> None:
    clock = [0.0]
    cores = [0.5]
    manager = TierManager(LADDER, AUTO)
    applied: list[int] = []
    ctl = TierController(manager, lambda: (HOT, 0.0), applied.append, clock=lambda: clock[0],
                         cores=lambda: cores[0])
    for _ in range(14):
        ctl.tick()
        clock[0] += 1.0
    assert applied == []
    cores[0] = 2.0  # resized to the ceiling, still hot: no more CPU will come
    for _ in range(6):
        ctl.tick()
        clock[0] += 1.0
    assert applied == [1]


def test_the_grace_is_waited_once_per_overload_not_before_every_step() -> None:
    # The node could not grant more CPU (quota stuck below the ceiling): the first step waited for the
    # resize; further steps at the same quota must not wait again (five speakers on the local node: every
    # step came ~25 s late while the backlog grew).
    p = TierPolicy(AUTO)
    assert feed(p, 0.0, 16.0, HOT, cores=1.5) == [1]  # window + grace
    assert feed(p, 16.0, 31.0, HOT, cores=1.5) == [2]  # cooldown 10 s, then the 5 s window only
    # A resize that comes after all makes the autoscaler worth waiting for again.
    p2 = TierPolicy(AUTO)
    assert feed(p2, 0.0, 16.0, HOT, cores=1.0) == [1]
    assert feed(p2, 16.0, 31.0, HOT, cores=1.5) == []  # grown quota: window + grace again
    assert feed(p2, 31.0, 33.0, HOT, cores=1.5) == [2]
