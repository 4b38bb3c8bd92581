from __future__ import annotations

import threading
import time

from livenexus_worker.streaming.scheduler import InferenceScheduler, Job


def test_finals_run_before_partials_and_partials_coalesce() -> None:
    gate = threading.Event()
    order: list[str] = []
    s = InferenceScheduler(max_partial_age_s=10)
    s.submit_final(Job(gate.wait, "final"))  # occupies the thread while we queue the rest
    time.sleep(0.05)
    s.submit_partial("a", Job(lambda: order.append("pa1"), "partial"))
    s.submit_partial("a", Job(lambda: order.append("pa2"), "partial"))
    s.submit_partial("b", Job(lambda: order.append("pb"), "partial"))
    s.submit_final(Job(lambda: order.append("f1"), "final"))
    assert s.depth() == 3
    gate.set()
    assert s.wait_idle(5)
    assert order == ["f1", "pa2", "pb"]
    assert s.stats.partials_coalesced == 1
    s.close()


def test_stale_partials_are_dropped_and_lag_is_measured() -> None:
    gate = threading.Event()
    ran: list[str] = []
    s = InferenceScheduler(max_partial_age_s=0.1)
    s.submit_final(Job(gate.wait, "final"))
    time.sleep(0.02)
    s.submit_partial("a", Job(lambda: ran.append("p"), "partial"))
    time.sleep(0.2)
    assert s.lag_s() >= 0.2
    gate.set()
    assert s.wait_idle(5)
    assert ran == [] and s.stats.partials_stale == 1
    assert s.lag_s() == 0.0
    s.close()


def test_job_errors_do_not_kill_the_thread() -> None:
    s = InferenceScheduler()
    s.submit_final(Job(lambda: 1 / 0, "final"))  # type: ignore[func-returns-value]
    done = threading.Event()
    s.submit_final(Job(done.set, "final"))
    assert done.wait(5)
    assert s.stats.errors == 1
    s.close()


def test_idle_thread_uses_no_cpu() -> None:
    import psutil

    s = InferenceScheduler()
    proc = psutil.Process()
    before = sum(proc.cpu_times()[:2])
    time.sleep(1.0)
    assert sum(proc.cpu_times()[:2]) - before < 0.05
    s.close()
