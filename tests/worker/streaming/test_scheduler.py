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


def test_finals_of_different_streams_run_together_and_a_streams_own_in_order() -> None:
    gate = threading.Event()
    s = InferenceScheduler(max_batch=3)
    s.submit_final(Job(gate.wait, "final", key="x"))  # occupies the thread while the rest queue
    time.sleep(0.05)
    # The jobs of one batch must run at the same time: each waits at a barrier only the batch can pass.
    barrier = threading.Barrier(3, timeout=5)
    log: list[str] = []
    current: dict[str, bool] = {}

    def job(name: str, together: bool = True) -> Job:
        def run() -> None:
            current[name] = s.current() is j
            if together:
                barrier.wait()
            log.append(name)
        j = Job(run, "final", key=name[0])
        return j

    for j in (job("a1"), job("a2", together=False), job("b1"), job("c1"), job("d1", together=False)):
        s.submit_final(j)
    gate.set()
    assert s.wait_idle(10)
    assert s.stats.errors == 0
    # a1, b1, c1 formed the batch (max 3); a2 waited for a1, d1 for room in a batch.
    assert sorted(log[:3]) == ["a1", "b1", "c1"] and sorted(log[3:]) == ["a2", "d1"]
    assert s.stats.batches == 2 and s.stats.batched_jobs == 5 and s.stats.finals_run == 6
    assert all(current.values()) and s.current() is None
    s.close()


def test_partials_batch_only_when_asked() -> None:
    for batch_partials, batches in ((False, 0), (True, 1)):
        gate = threading.Event()
        s = InferenceScheduler(max_partial_age_s=10, max_batch=4, batch_partials=batch_partials)
        s.submit_final(Job(gate.wait, "final"))
        time.sleep(0.05)
        for k in "abc":
            s.submit_partial(k, Job(lambda: None, "partial", key=k))
        gate.set()
        assert s.wait_idle(10)
        assert s.stats.batches == batches and s.stats.partials_run == 3
        s.close()


def test_unkeyed_finals_are_never_batched() -> None:
    gate = threading.Event()
    s = InferenceScheduler(max_batch=4)
    s.submit_final(Job(gate.wait, "final"))
    time.sleep(0.05)
    for _ in range(3):
        s.submit_final(Job(lambda: None, "final"))
    gate.set()
    assert s.wait_idle(10)
    assert s.stats.batches == 0 and s.stats.finals_run == 4
    s.close()
