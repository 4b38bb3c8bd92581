"""The autoscaler's inputs, read by the operator's scraper from a real worker metrics registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from livenexus_operator.autoscale import sample_of
from livenexus_operator.scrape import parse_worker_metrics
from livenexus_worker.core.tier_spec import DEFAULT_TIERS
from livenexus_worker.ops.cpu import CgroupPaths, CpuSampler
from livenexus_worker.ops.metrics import WorkerMetrics


class Proc:
    def __init__(self) -> None:
        self.cpu = 0.0

    def cpu_times(self) -> object:
        return type("T", (), {"user": self.cpu, "system": 0.0})()

    def memory_info(self) -> object:
        return type("M", (), {"rss": 1})()


def test_cpu_lag_tier_and_windowed_p95_from_a_worker_exposition(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # a pod limited to 500m
    clock = [0.0]
    proc = Proc()
    sampler = CpuSampler(process=proc, cgroups=CgroupPaths(tmp_path, None), psi_paths=[], min_interval_s=0.5,
                         clock=lambda: clock[0])
    metrics = WorkerMetrics(sampler=sampler)
    metrics.set_tier(2, DEFAULT_TIERS[2])
    metrics.queue(3, 0.8, 1)
    for _ in range(50):
        metrics.observe_final(0.2)
    clock[0] += 1.0
    proc.cpu += 0.4  # 0.4 s of CPU in 1 s on a 0.5-core quota
    first = parse_worker_metrics(metrics.exposition().decode())
    assert first.cpu_ratio == pytest.approx(0.8)
    assert first.cpu_pressure is not None and first.cpu_pressure >= 0.8
    assert first.lag_seconds == pytest.approx(0.8)
    s1 = sample_of(10.0, first)
    assert (s1.tier, s1.lag_s, s1.active_speakers) == (2, pytest.approx(0.8), 1)
    assert s1.p95_ms is not None and s1.p95_ms <= 250.0

    for _ in range(20):  # the room just became slow
        metrics.observe_final(3.0)
    second = parse_worker_metrics(metrics.exposition().decode())
    lifetime = second.final_latency_p95_ms
    recent = sample_of(12.0, second, first.final_latency_buckets).p95_ms
    assert recent is not None and recent > 2500.0
    assert lifetime is not None and recent > lifetime
    # No finals since the previous scrape: no latency opinion at all.
    assert sample_of(14.0, second, second.final_latency_buckets).p95_ms is None
