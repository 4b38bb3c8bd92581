"""Operator reliability, the pure parts: requeue/backoff, the write fence, write-only-on-change, bookkeeping
of deleted rooms, one reconcile per room at a time, and the kopf settings."""

from __future__ import annotations

import asyncio
import datetime
import random
import time
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from prometheus_client import generate_latest

from livenexus_operator import config, handlers, kube, refresher
from livenexus_operator.leader import FENCE, LeaseElector, NotLeader
from livenexus_operator.metrics import OperatorMetrics
from livenexus_operator.reconcile import Outcome
from livenexus_operator.requeue import RefreshSchedule, backoff_delay
from livenexus_operator.status import needs_write


@pytest.fixture(autouse=True)
def keep_config() -> Iterator[None]:
    """Tests here install their own operator configuration; the cluster tests of the session install theirs."""
    saved = config.current()
    yield
    config.install(saved)


def test_backoff_grows_is_capped_jittered_and_never_below_retry_after() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 1.0, 60.0, rng=rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        raw = min(60.0, 2.0 ** (n - 1))
        assert 0.5 * raw <= d <= raw
    assert max(delays) <= 60.0
    assert all(backoff_delay(1, 1.0, 60.0, retry_after=7.0, rng=rng) >= 7.0 for _ in range(50))
    # A hostile Retry-After cannot park the operator beyond the cap.
    assert backoff_delay(1, 1.0, 60.0, retry_after=1e9, rng=rng) == 60.0


def test_first_refreshes_spread_over_the_interval() -> None:
    sched: RefreshSchedule[int] = RefreshSchedule(interval_s=15.0, rng=random.Random(1))
    keys = range(1000)
    first = sched.due(keys, now=100.0)
    assert len(first) < 50, "1,000 new rooms must not all be refreshed in the same tick"
    halfway = sched.due(keys, now=107.5)
    assert 350 < len(halfway) < 650
    assert len(sched.due(keys, now=115.0)) == 1000


def test_failed_room_backs_off_and_a_server_failure_pauses_everyone() -> None:
    sched: RefreshSchedule[str] = RefreshSchedule(interval_s=10.0, retry_base_s=1.0, retry_max_s=60.0,
                                                  rng=random.Random(3))
    keys = ["a", "b", "c"]
    sched.due(keys, now=10.0)
    assert set(sched.due(keys, now=20.0)) == set(keys)
    sched.reconciled("b", 20.0)
    sched.reconciled("c", 20.0)
    delay = sched.failed("a", 20.0, retry_after=5.0, server=True)
    assert delay >= 5.0
    # While paused nothing is due, not even rooms whose time has come.
    assert sched.paused_until >= 25.0
    assert sched.paused(21.0) and sched.due(keys, now=21.0) == []
    assert sched.due(keys, now=sched.paused_until - 0.01) == []
    # Repeated server failures: the pause keeps growing (never shorter than Retry-After).
    pauses = []
    now = 100.0
    for _ in range(6):
        sched.failed("a", now, retry_after=2.0, server=True)
        pauses.append(sched.paused_until - now)
        now = sched.paused_until
    assert all(p >= 2.0 for p in pauses) and pauses[-1] > pauses[0]
    # One success resets the room and the global count.
    sched.reconciled("a", now)
    after = sched.failed("a", now, server=True)
    assert after <= 1.0


def test_schedule_forgets_deleted_rooms() -> None:
    sched: RefreshSchedule[str] = RefreshSchedule(interval_s=5.0, rng=random.Random(0))
    sched.due(["a", "b"], now=0.0)
    sched.failed("b", 0.0)
    sched.due(["a"], now=1.0)
    assert len(sched) == 1


def test_a_room_waiting_for_its_secret_is_retried_sooner_than_the_interval() -> None:
    sched: RefreshSchedule[str] = RefreshSchedule(interval_s=15.0, rng=random.Random(0))
    sched.due(["a"], now=0.0)
    sched.reconciled("a", 0.0, next_in=2.0)
    assert sched.due(["a"], now=2.0) == ["a"]


NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)


def test_only_a_moved_scrape_stamp_is_not_worth_a_write() -> None:
    prev = {"phase": "Running", "lastScrapeTime": "2026-12-01T11:59:45Z"}
    assert not needs_write({}, prev, 300.0, NOW)
    assert not needs_write({"lastScrapeTime": "2026-12-01T12:00:00Z"}, prev, 300.0, NOW)
    assert needs_write({"lastScrapeTime": "x", "phase": "Degraded"}, prev, 300.0, NOW)
    # The stamp is still refreshed once it is a heartbeat old, or when it is missing or unreadable.
    assert needs_write({"lastScrapeTime": "x"}, {"lastScrapeTime": "2026-12-01T11:54:00Z"}, 300.0, NOW)
    assert needs_write({"lastScrapeTime": "x"}, {}, 300.0, NOW)
    assert needs_write({"lastScrapeTime": "x"}, {"lastScrapeTime": "yesterday"}, 300.0, NOW)
    assert needs_write({"lastScrapeTime": "x"}, {"lastScrapeTime": "2027-01-01T00:00:00Z"}, 300.0, NOW)


def test_retry_after_is_parsed_bounded_and_hostile_values_ignored() -> None:
    assert kube.parse_retry_after("3") == 3.0
    assert kube.parse_retry_after(" 1.5 ") == 1.5
    assert kube.parse_retry_after("99999999") == kube.MAX_RETRY_AFTER_S
    for bad in (None, "", "soon", "-4", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert kube.parse_retry_after(bad) is None
    assert kube.transient(kube.ApiError(429, "slow down"))
    assert kube.transient(kube.ApiError(503, "unavailable"))
    assert kube.transient(ConnectionRefusedError())
    assert not kube.transient(kube.ApiError(403, "forbidden"))
    assert not kube.transient(kube.Conflict(409, "moved"))


def test_failures_are_classified_for_requeue() -> None:
    assert refresher.classify(kube.ApiError(429, "x", retry_after=4.0)) == ("throttled", True, 4.0)
    assert refresher.classify(kube.ApiError(500, "x")) == ("server_error", True, None)
    assert refresher.classify(kube.Conflict(409, "x")) == ("conflict", False, None)
    assert refresher.classify(ConnectionResetError()) == ("unreachable", True, None)
    assert refresher.classify(kube.ApiError(422, "x")) == ("error", False, None)


def test_fence_closes_when_the_lease_is_not_renewed() -> None:
    elector = LeaseElector("ns", "lease", "me", lease_duration_s=15, renew_deadline_s=10.0)
    assert not elector.holds()  # never acquired
    elector._renewed_at = time.monotonic()
    assert elector.holds()
    elector._renewed_at = time.monotonic() - 10.5  # the renew deadline passed: another may take over soon
    assert not elector.holds()


@pytest.fixture
def fence_elector() -> Iterator[LeaseElector]:
    elector = LeaseElector("ns", "lease", "me")
    saved = FENCE.elector
    FENCE.elector = elector
    yield elector
    FENCE.elector = saved


def _body(rv: str = "41") -> dict[str, Any]:
    return {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionRoom",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 2, "resourceVersion": rv},
            "spec": {}, "status": {"phase": "Pending", "observedGeneration": 2}}


def test_a_deposed_leader_writes_nothing(fence_elector: LeaseElector, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    async def patch_status(*args: Any) -> dict[str, Any]:
        calls.append(args)
        return {}

    monkeypatch.setattr(kube, "patch_status", patch_status)
    with pytest.raises(NotLeader):
        asyncio.run(refresher.write_status(_body(), {"phase": "Running"}))
    assert calls == []
    fence_elector._renewed_at = time.monotonic()
    assert asyncio.run(refresher.write_status(_body(), {"phase": "Running"})) == "written"
    # The write carries the resourceVersion it was computed from (the API server's precondition).
    assert calls == [("/apis/livenexus.io/v1alpha1/namespaces/ns/transcriptionrooms/r", {"phase": "Running"}, "41")]


def test_status_write_refuses_to_go_without_a_resource_version() -> None:
    with pytest.raises(ValueError, match="resourceVersion"):
        asyncio.run(kube.patch_status("/x", {"phase": "Running"}, ""))


def test_deleted_rooms_leave_the_phase_gauge() -> None:
    m = OperatorMetrics()
    for uid, phase in (("a", "Running"), ("b", "Pending"), ("c", "Error")):
        m.set_phase(uid, phase)
    m.keep_only({"a"})
    text = generate_latest(m.registry).decode()
    assert 'livenexus_operator_rooms{phase="Running"} 1.0' in text
    assert 'livenexus_operator_rooms{phase="Pending"} 0.0' in text
    assert 'livenexus_operator_rooms{phase="Error"} 0.0' in text
    assert m.tracked_rooms() == 1


class FakeIndex(dict[tuple[str, str], list[dict[str, Any]]]):
    """kopf's index maps a key to a store of values; a list iterates the same way."""


def test_refresher_prunes_rooms_missing_from_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    m = OperatorMetrics()
    monkeypatch.setattr(refresher, "METRICS", m)
    m.set_phase("u-1", "Running")
    m.set_phase("u-gone", "Running")
    refresher.prune(FakeIndex({("ns", "r"): [_body()]}))
    assert m.tracked_rooms() == 1


def test_a_room_is_never_reconciled_twice_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresher and a kopf handler both reconcile the same room: they must take turns."""
    active = 0
    most = 0

    async def slow_reconcile(body: Any, trigger: str) -> Outcome:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.05)  # yields to the other path while "reconciling"
        active -= 1
        return Outcome(phase="Running")

    async def write_status(body: Any, changes: Any) -> str:
        return "unchanged"

    for module in (refresher, handlers):
        monkeypatch.setattr(module, "reconcile", slow_reconcile)
    monkeypatch.setattr(refresher, "write_status", write_status)
    config.install(config.OperatorConfig(leader_election=False, metrics_port=0))
    index = FakeIndex({("ns", "r"): [_body()]})

    async def both() -> None:
        sched: RefreshSchedule[tuple[str, str]] = RefreshSchedule(interval_s=15.0)
        await asyncio.gather(
            refresher.refresh_room(index, ("ns", "r"), sched),
            handlers.on_change(body=_body(), reason="update", retry=0),
            refresher.refresh_room(index, ("ns", "r"), sched),
        )

    asyncio.run(both())
    assert most == 1


def test_server_failures_requeue_with_backoff_and_other_errors_with_the_retry_delay() -> None:
    config.install(config.OperatorConfig(retry_delay_s=10.0, retry_max_s=120.0, leader_election=False, metrics_port=0))
    assert handlers._retry_delay(kube.ApiError(429, "x", retry_after=30.0), retry=0) >= 30.0
    assert handlers._retry_delay(kube.ApiError(503, "x"), retry=0) <= 1.0
    late = [handlers._retry_delay(kube.ApiError(503, "x"), retry=9) for _ in range(20)]
    assert all(60.0 <= d <= 120.0 for d in late)
    assert handlers._retry_delay(kube.ApiError(422, "bad"), retry=5) == 10.0


def test_kopf_settings_bound_concurrency() -> None:
    config.install(config.OperatorConfig(worker_limit=12, leader_election=False, metrics_port=0))
    settings = kopf.OperatorSettings()
    memo = kopf.Memo()

    async def configure() -> None:
        await handlers.configure_kopf(settings=settings, memo=memo, room_index=FakeIndex())
        memo["refresher"].cancel()

    asyncio.run(configure())
    assert settings.queueing.worker_limit == 12
    assert settings.queueing.idle_timeout < 5.0
    assert settings.execution.max_workers == handlers.MAX_SYNC_THREADS
    assert tuple(settings.networking.error_backoffs)[-1] >= 30


def test_config_rejects_unbounded_values() -> None:
    for bad in ({"worker_limit": 0}, {"refresh_concurrency": 10_000}, {"retry_max_s": float("nan")},
                {"status_interval_s": 0.0}):
        with pytest.raises(ValueError):
            config.OperatorConfig(**bad)  # type: ignore[arg-type]
    cfg = config.OperatorConfig.from_env({"LIVENEXUS_WORKER_LIMIT": "8", "LIVENEXUS_STATUS_HEARTBEAT_S": "60"})
    assert (cfg.worker_limit, cfg.status_heartbeat_s) == (8, 60.0)


def test_api_calls_have_threads_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """12 calls in flight at once (a refresh pass beside a burst of creates) need 12 threads; asyncio's default
    pool has only cpu+4, which queued the refresher behind the handlers."""
    import threading

    width = 12
    assert width <= kube.API_THREADS
    barrier = threading.Barrier(width, timeout=20)
    names: list[str] = []

    def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
        names.append(threading.current_thread().name)
        barrier.wait()  # returns only when all calls are in flight together
        return {}

    monkeypatch.setattr(kube, "call", call)

    async def many() -> None:
        await asyncio.gather(*(kube.request("GET", f"/x/{i}") for i in range(width)))

    asyncio.run(many())
    assert len(names) == width and all(n.startswith("livenexus-kube") for n in names)
