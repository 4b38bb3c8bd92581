"""Status from a worker's real /metrics: the worker's own registry served over HTTP on 127.0.0.1."""

from __future__ import annotations

import aiohttp
import pytest

from livenexus_operator.scrape import ScrapeError, histogram_quantile, parse_worker_metrics, scrape
from livenexus_operator.status import Observation, build_status, merge_conditions, tier_change
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.metrics_server import MetricsServer

LADDER = (TierSpec("base", "int8", 5, 250), TierSpec("base", "int8", 1, 250), TierSpec("tiny", "int8", 1, 600))


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    inf = float("inf")
    # 10 observations in (0.1, 0.2], 10 in (0.4, 0.5]: rank 10 ends the first bucket, rank 19 is 9/10
    # through the second.
    buckets = [(0.1, 0), (0.2, 10), (0.4, 10), (0.5, 20), (inf, 20)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.2)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.49)
    assert histogram_quantile(0.5, [(0.1, 0), (inf, 0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1), (inf, 5)]) == 1.0  # rank in +Inf: highest finite bound
    assert histogram_quantile(0.5, [(1.0, 1)]) is None  # no +Inf bucket: not a histogram


@pytest.fixture
def worker_metrics() -> WorkerMetrics:
    return WorkerMetrics()


async def test_scrape_a_live_worker_registry(worker_metrics: WorkerMetrics) -> None:
    m = worker_metrics
    m.set_tier(0, LADDER[0])
    m.set_tier(2, LADDER[2])
    for _ in range(10):
        m.observe_final(0.15)
        m.observe_final(0.45)
    m.set_active_speakers(2)
    m.set_livekit_connected(True)
    with MetricsServer(m.registry, host="127.0.0.1", port=0) as server:
        async with aiohttp.ClientSession() as session:
            stats = await scrape(session, f"{server.url}/metrics")
            with pytest.raises(ScrapeError, match="HTTP 404"):
                await scrape(session, f"{server.url}/nope")
    assert stats.final_count == 20
    assert stats.final_latency_p50_ms == pytest.approx(200.0)
    assert stats.final_latency_p95_ms == pytest.approx(490.0)
    assert (stats.tier_index, stats.tier_name, stats.model) == (2, LADDER[2].name, "tiny")
    assert stats.active_speakers == 2
    assert stats.livekit_connected is True
    assert (stats.tier_changes_down, stats.tier_changes_up) == (1, 0)
    assert stats.realtime_factor == 0.0  # no speech in the window yet


async def test_unreachable_worker_is_a_scrape_error() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ScrapeError):
            # Port 1 on loopback: nothing listens there.
            await scrape(session, "http://127.0.0.1:1/metrics", timeout_s=2)


def test_fresh_worker_has_no_percentiles() -> None:
    m = WorkerMetrics()
    stats = parse_worker_metrics(m.exposition().decode())
    assert stats.final_latency_p50_ms is None and stats.final_count == 0
    assert stats.tier_index is None or stats.tier_index == 0


def test_status_running_degraded_and_back() -> None:
    m = WorkerMetrics()
    m.set_tier(0, LADDER[0])
    obs = Observation(3, "room", False, worker_name="room-worker", namespace="ns", available_replicas=1,
                      stats=parse_worker_metrics(m.exposition().decode()), ladder_size=3)
    s1 = build_status(obs, None, now="2024-01-01T00:00:00Z")
    conds = {c["type"]: c for c in s1["conditions"]}
    assert s1["phase"] == "Running"
    assert conds["Ready"]["status"] == "True" and conds["Degraded"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in s1["conditions"])
    assert s1["currentModel"] == "base" and s1["currentTier"] == 0

    m.set_tier(1, LADDER[1])
    obs2 = Observation(**{**obs.__dict__, "stats": parse_worker_metrics(m.exposition().decode())})
    assert tier_change(s1, obs2.stats) == (0, 1)
    s2 = build_status(obs2, s1, now="2024-01-01T00:01:00Z")
    conds2 = {c["type"]: c for c in s2["conditions"]}
    assert s2["phase"] == "Degraded"
    assert conds2["Degraded"]["status"] == "True" and conds2["Degraded"]["reason"] == "TierDowngraded"
    assert conds2["Degraded"]["lastTransitionTime"] == "2024-01-01T00:01:00Z"
    # Ready did not flip, so its transition time stays.
    assert conds2["Ready"]["lastTransitionTime"] == "2024-01-01T00:00:00Z"


def test_status_for_missing_secret_suspend_and_pending() -> None:
    missing = build_status(Observation(1, "r", False, secret_problem="Secret ns/x not found"), None)
    ready = next(c for c in missing["conditions"] if c["type"] == "Ready")
    assert (missing["phase"], ready["status"], ready["reason"]) == ("Error", "False", "SecretMissing")
    assert "not found" in ready["message"]
    suspended = build_status(Observation(1, "r", True, worker_name="r-worker"), None)
    assert suspended["phase"] == "Suspended"
    pending = build_status(Observation(1, "r", False, worker_name="r-worker"), None)
    available = next(c for c in pending["conditions"] if c["type"] == "WorkerAvailable")
    assert pending["phase"] == "Pending" and available["status"] == "False"


def test_merge_conditions_is_stable() -> None:
    first = merge_conditions([], [], 1, now="t0")
    assert first == []
    from livenexus_operator.status import Condition

    a = merge_conditions(None, [Condition("Ready", "False", "X", "m")], 1, now="t0")
    b = merge_conditions(a, [Condition("Ready", "False", "Y", "m2")], 2, now="t1")
    assert b[0]["lastTransitionTime"] == "t0" and b[0]["reason"] == "Y" and b[0]["observedGeneration"] == 2
    c = merge_conditions(b, [Condition("Ready", "True", "Z")], 2, now="t2")
    assert c[0]["lastTransitionTime"] == "t2"


def test_metrics_url_uses_the_cluster_ip_and_needs_no_dns() -> None:
    from livenexus_operator.scrape import service_metrics_url

    svc = {"metadata": {"name": "room-worker", "namespace": "team"}, "spec": {"clusterIP": "203.0.113.7"}}
    assert service_metrics_url(svc, 9300) == "http://203.0.113.7:9300/metrics"
    svc["spec"]["clusterIP"] = "2001:db8::7"
    assert service_metrics_url(svc, 9300) == "http://[2001:db8::7]:9300/metrics"
    # Headless or not yet allocated: fall back to the DNS name; never put an arbitrary string in the host part.
    for ip in ("None", "", "evil.example.com/x?", None):
        svc["spec"]["clusterIP"] = ip
        assert service_metrics_url(svc, 9300) == "http://room-worker.team.svc:9300/metrics"
