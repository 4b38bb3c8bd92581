"""The autoscaler's pure decision on recorded-style metric series (no cluster, no clock)."""

from __future__ import annotations

import math

import pytest

from livenexus_operator.autoscale import (
    MAX_GAP_S,
    AutoscaleError,
    AutoscalePolicy,
    Decision,
    PodCpu,
    Sample,
    decide,
    format_cpu,
    parse_cpu_millis,
)

P = AutoscalePolicy(enabled=True, min_millis=500, max_millis=2000, step_millis=500, up_after_s=6.0,
                    down_after_s=30.0, cooldown_s=10.0)


def series(start: float, end: float, every: float = 2.0, **values: object) -> list[Sample]:
    out, t = [], start
    while t <= end + 1e-9:
        out.append(Sample(at=t, **values))  # type: ignore[arg-type]
        t += every
    return out


def pod(millis: int, desired: int | None = None, resize: str = "", node: int | None = None) -> PodCpu:
    return PodCpu(millis, millis if desired is None else desired, resize, node)  # type: ignore[arg-type]


HOT = {"cpu_ratio": 0.95, "cpu_pressure": 0.97, "lag_s": 0.2, "tier": 0}
CALM = {"cpu_ratio": 0.1, "cpu_pressure": 0.12, "lag_s": 0.0, "tier": 0}


@pytest.mark.parametrize(("raw", "millis"), [("500m", 500), ("2", 2000), ("1.5", 1500), (2, 2000), (0.25, 250),
                                             ("0.001", 1)])
def test_cpu_quantities(raw: object, millis: int) -> None:
    assert parse_cpu_millis(raw) == millis


@pytest.mark.parametrize("raw", ["", "abc", "-1", "0", "0m", "1e3", "2Gi", "1.0001", True, math.nan, -2, "1 m",
                                 "500M", None])
def test_hostile_cpu_quantities_are_refused_with_the_field_named(raw: object) -> None:
    with pytest.raises(AutoscaleError, match=r"autoscaling\.maxCpu"):
        parse_cpu_millis(raw, "autoscaling.maxCpu")


def test_format_cpu() -> None:
    assert [format_cpu(m) for m in (500, 1000, 1500, 2000)] == ["500m", "1", "1500m", "2"]


def test_room_fields_override_the_chart_defaults_field_by_field() -> None:
    chart = {"enabled": True, "minCpu": "250m", "maxCpu": "4", "step": "250m", "upAfterSeconds": 8}
    p = AutoscalePolicy.resolve({"maxCpu": "1", "cooldownSeconds": 30}, chart, cpu_high=0.8, cpu_low=0.3)
    assert (p.enabled, p.min_millis, p.max_millis, p.step_millis) == (True, 250, 1000, 250)
    assert (p.up_after_s, p.cooldown_s, p.down_after_s) == (8.0, 30.0, AutoscalePolicy.down_after_s)
    assert (p.cpu_high, p.cpu_low) == (0.8, 0.3)
    assert not AutoscalePolicy.resolve(None, None).enabled
    assert not AutoscalePolicy.resolve({"enabled": False}, chart).enabled


@pytest.mark.parametrize("room", [{"minCpu": "2", "maxCpu": "1"}, {"upAfterSeconds": -1}, {"enabled": "yes"},
                                  {"downAfterSeconds": 1e9}, {"step": "0m"}, {"cooldownSeconds": True}])
def test_unusable_policies_are_refused(room: dict[str, object]) -> None:
    with pytest.raises(AutoscaleError, match="autoscaling"):
        AutoscalePolicy.resolve(room, {"enabled": True})


def test_grace_covers_the_operators_window_and_cooldown() -> None:
    assert P.worker_grace_s > max(P.up_after_s, P.cooldown_s)


def test_sustained_overload_steps_up_one_step_after_up_after() -> None:
    samples = series(0.0, 4.0, **HOT)
    assert decide(P, samples, pod(500), now=4.0).action == "hold"  # 4 s observed, 6 needed
    samples = series(0.0, 6.0, **HOT)
    d = decide(P, samples, pod(500), now=6.0)
    assert (d.action, d.target_millis) == ("up", 1000)
    assert "CPU use 0.95 of the quota > 0.75" in d.reason


def test_a_burst_is_not_overload_but_a_busy_mean_is() -> None:
    samples = [*series(0.0, 4.0, **CALM), Sample(at=6.0, **HOT), *series(8.0, 12.0, **CALM)]  # type: ignore[arg-type]
    assert decide(P, samples, pod(500), now=12.0).action == "hold"
    # Saw-toothed like real inference: saturated one scrape, idle-ish the next; the mean is overloaded.
    saw = [Sample(at=t, cpu_ratio=1.0 if i % 2 else 0.6, cpu_pressure=1.0 if i % 2 else 0.6, lag_s=0.0, tier=0)
           for i, t in enumerate(range(0, 14, 2))]
    assert decide(P, saw, pod(500), now=12.0).action == "up"


def test_lag_and_latency_alone_are_overload() -> None:
    lag = series(0.0, 8.0, cpu_ratio=0.5, cpu_pressure=0.5, lag_s=0.9, tier=0)
    assert decide(P, lag, pod(500), now=8.0).action == "up"
    slow = series(0.0, 8.0, cpu_ratio=0.5, cpu_pressure=0.5, lag_s=0.0, p95_ms=2400.0, tier=0)
    assert "p95 2400 ms" in decide(P, slow, pod(500), now=8.0).reason


def test_a_gap_in_the_samples_is_not_an_observed_window() -> None:
    samples = [Sample(at=0.0, **HOT), Sample(at=MAX_GAP_S + 1.0, **HOT)]  # type: ignore[arg-type]
    assert decide(P, samples, pod(500), now=MAX_GAP_S + 1.0).action == "hold"
    # ... nor are samples that stopped long ago (the worker's metrics are unreachable).
    assert decide(P, series(0.0, 8.0, **HOT), pod(500), now=8.0 + MAX_GAP_S + 1).action == "hold"


def test_at_max_cpu_the_worker_is_left_to_step_its_tier_down() -> None:
    d = decide(P, series(0.0, 8.0, **HOT), pod(2000), now=8.0)
    assert (d.action, d.target_millis) == ("hold", 2000)
    assert "maxCpu 2" in d.reason and "tier down" in d.reason


def test_node_allocatable_and_a_refused_size_cap_the_step() -> None:
    d = decide(P, series(0.0, 8.0, **HOT), pod(1000, node=1200), now=8.0)
    assert (d.action, d.target_millis) == ("up", 1200)
    d = decide(P, series(0.0, 8.0, **HOT), pod(1500), now=8.0, ceiling_millis=1500)
    assert d.action == "hold" and "refused more than 1500m" in d.reason


def test_pending_resizes() -> None:
    hot = series(0.0, 8.0, **HOT)
    d = decide(P, hot, pod(500, desired=1000, resize="Deferred"), now=8.0)
    assert (d.action, d.target_millis) == ("hold", 1000) and "Deferred" in d.reason
    d = decide(P, hot, pod(500, desired=1000, resize="Infeasible"), now=8.0)
    assert (d.action, d.target_millis) == ("down", 500) and "Infeasible" in d.reason
    assert decide(P, hot, pod(500, desired=1000, resize="InProgress"), now=8.0).action == "hold"


def test_cooldown_after_a_resize() -> None:
    hot = series(0.0, 8.0, **HOT)
    assert decide(P, hot, pod(1000), now=8.0, last_resize_at=0.0).action == "hold"
    assert decide(P, hot, pod(1000), now=9.5, last_resize_at=0.0).action == "hold"
    assert decide(P, hot, pod(1000), now=10.0, last_resize_at=0.0).action == "up"


def test_out_of_range_allocations_are_brought_into_range_at_once() -> None:
    assert decide(P, [], pod(250), now=0.0) == Decision("up", 500, "250m is below minCpu 500m")
    assert decide(P, [], pod(4000), now=0.0).target_millis == 2000
    assert decide(AutoscalePolicy(), [], pod(250), now=0.0).action == "hold"  # disabled: never touches it


def test_step_down_needs_the_longer_calm_and_a_prediction_that_stays_calm() -> None:
    calm = series(0.0, 30.0, **CALM)
    assert decide(P, calm[:-1], pod(1500), now=28.0).action == "hold"
    d = decide(P, calm, pod(1500), now=30.0)
    assert (d.action, d.target_millis) == ("down", 1000)
    # 0.3 of 1 core is 0.6 of 500m: above cpuLow, so the smaller pod would not be calm.
    busyish = series(0.0, 30.0, cpu_ratio=0.3, cpu_pressure=0.3, lag_s=0.0, tier=0)
    assert decide(P, busyish, pod(1000), now=30.0).action == "hold"
    assert decide(P, calm, pod(500), now=30.0).action == "hold"  # at minCpu


def test_a_degraded_worker_gets_cpu_before_the_room_is_scaled_down() -> None:
    # Back up in reverse order: while the worker runs a cheaper tier and is not calm, it gets CPU ...
    degraded = series(0.0, 8.0, cpu_ratio=0.5, cpu_pressure=0.5, lag_s=0.0, tier=2)
    assert decide(P, degraded, pod(1000), now=8.0).action == "up"
    # ... and is never scaled down before it is back on its preferred tier.
    calm_degraded = series(0.0, 40.0, cpu_ratio=0.05, cpu_pressure=0.05, lag_s=0.0, tier=1)
    assert decide(P, calm_degraded, pod(1500), now=40.0).action == "hold"


def simulate(load_cores: list[float], policy: AutoscalePolicy, start: int = 500) -> list[tuple[float, int]]:
    """Closed loop: a worker whose CPU use is ``load`` cores (one value per 2 s tick, saw-toothed by the
    caller) on a pod the decision resizes; the kubelet grants every resize by the next tick."""
    alloc, samples, last = start, [], None
    resizes = []
    for i, load in enumerate(load_cores):
        now = i * 2.0
        ratio = min(1.0, load * 1000 / alloc)
        samples.append(Sample(at=now, cpu_ratio=ratio, cpu_pressure=ratio, lag_s=0.0, tier=0))
        d = decide(policy, samples, PodCpu(alloc, alloc), now, last_resize_at=last)
        if d.action != "hold" and d.target_millis != alloc:
            alloc, last, samples = d.target_millis, now, []
            resizes.append((now, alloc))
    return resizes


def test_steady_loads_settle_and_never_flap() -> None:
    for cores in (0.2, 0.45, 0.6, 0.8, 1.1, 1.4, 1.9):
        # Inference comes in bursts: 1.6x the mean for a tick, then 0.4x.
        load = [cores * (1.6 if i % 2 else 0.4) for i in range(600)]
        resizes = simulate(load, P)
        sizes = [m for _, m in resizes]
        # Monotone: a steady load moves the pod one way only, then stays (no up-down-up).
        assert sizes == sorted(sizes) or sizes == sorted(sizes, reverse=True), (cores, resizes)
        assert not resizes or resizes[-1][0] < 600, (cores, resizes)


def test_a_load_that_rises_then_falls_is_followed_up_then_down() -> None:
    load = [0.15] * 20 + [1.5] * 60 + [0.1] * 200
    resizes = simulate(load, P)
    sizes = [m for _, m in resizes]
    peak = sizes.index(max(sizes))
    assert max(sizes) == 2000 and sizes[:peak + 1] == sorted(sizes[:peak + 1])
    assert sizes[peak:] == sorted(sizes[peak:], reverse=True) and sizes[-1] == 500


def test_node_contention_alone_neither_buys_cpu_nor_blocks_giving_it_back() -> None:
    # Recorded on the loaded test node: an idle worker whose pressure (node-wide PSI) read 0.8-0.97.
    contended = series(0.0, 30.0, cpu_ratio=0.02, cpu_pressure=0.93, lag_s=0.0, tier=0)
    assert decide(P, contended[:5], pod(500), now=8.0).action == "hold"
    assert decide(P, contended, pod(1500), now=30.0).action == "down"
    # Busy *and* waiting for a CPU is overload, even below the high mark of its own use.
    busy = series(0.0, 8.0, cpu_ratio=0.6, cpu_pressure=0.9, lag_s=0.0, tier=0)
    assert decide(P, busy, pod(500), now=8.0).action == "up"
