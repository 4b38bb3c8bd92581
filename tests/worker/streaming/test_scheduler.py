from __future__ import annotations

import threading
import time

from livenexus_worker.streaming.scheduler import InferenceScheduler, Job, lanes_for


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

    s = InferenceScheduler(workers=3)
    done = threading.Event()
    s.submit_final(Job(done.set, "final", key="a"))  # threads that ran a job and threads that did not
    assert done.wait(5) and s.wait_idle(5)
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


def test_jobs_of_different_streams_run_at_once_on_several_workers() -> None:
    # A barrier only two jobs running at the same time can pass: a final of one stream and a partial of another.
    both = threading.Barrier(2, timeout=5)
    passed: list[str] = []
    s = InferenceScheduler(max_partial_age_s=10, workers=2)
    s.submit_final(Job(lambda: passed.append(f"f{both.wait()}"), "final", key="a"))
    s.submit_partial("b", Job(lambda: passed.append(f"p{both.wait()}"), "partial", key="b"))
    assert s.wait_idle(5)
    assert sorted(p[0] for p in passed) == ["f", "p"]
    assert s.stats.overlapped == 1 and s.stats.errors == 0
    s.close()


def test_a_streams_own_jobs_never_overlap_and_keep_their_order() -> None:
    running: dict[str, int] = {}
    overlaps: list[str] = []
    order: list[str] = []
    lock = threading.Lock()

    def job(key: str, name: str) -> Job:
        def run() -> None:
            with lock:
                running[key] = running.get(key, 0) + 1
                if running[key] > 1:
                    overlaps.append(name)
                order.append(name)
            time.sleep(0.03)
            with lock:
                running[key] -= 1
        return Job(run, "partial" if name.startswith("p") else "final", key=key)

    s = InferenceScheduler(max_partial_age_s=10, workers=3)
    for i in range(4):
        s.submit_final(job("a", f"fa{i}"))
        s.submit_partial("a", job("a", f"pa{i}"))
        s.submit_final(job("b", f"fb{i}"))
    assert s.wait_idle(10)
    assert overlaps == []
    assert [n for n in order if n.startswith("fa")] == ["fa0", "fa1", "fa2", "fa3"]
    assert [n for n in order if n.startswith("fb")] == ["fb0", "fb1", "fb2", "fb3"]
    # The partial ran after the stream's finals (they go first), the other stream's jobs beside them.
    assert order.index("pa3") > order.index("fa3") and s.stats.overlapped > 0
    s.close()


def test_parallel_follows_the_quota() -> None:
    gate = threading.Event()
    started: list[str] = []
    s = InferenceScheduler(max_partial_age_s=10, workers=2)
    s.set_parallel(1)
    assert s.parallel == 1
    s.submit_final(Job(lambda: (started.append("a"), gate.wait(5)), "final", key="a"))
    s.submit_final(Job(lambda: started.append("b"), "final", key="b"))
    time.sleep(0.2)
    assert started == ["a"]  # one at a time: b waits although a thread is free
    s.set_parallel(5)
    assert s.parallel == 2  # clamped to the threads there are
    deadline = time.monotonic() + 5
    while started != ["a", "b"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started == ["a", "b"]  # b no longer waits for a
    gate.set()
    assert s.wait_idle(5)
    s.set_parallel(0)
    assert s.parallel == 1
    s.close()


def test_close_stops_every_worker() -> None:
    s = InferenceScheduler(workers=3)
    done = threading.Event()
    s.submit_final(Job(done.set, "final", key="a"))
    assert done.wait(5)
    s.close()
    assert len(s._threads) == 3 and not any(t.is_alive() for t in s._threads)


def test_lanes_follow_the_cores_a_quota_gives() -> None:
    assert [lanes_for(c) for c in (0.0, 0.25, 1.0, 1.4, 1.5, 2.0, 3.7)] == [1, 1, 1, 1, 2, 2, 4]
    # Decodes on two cores each: one per two cores.
    assert [lanes_for(c, 2) for c in (0.5, 1.0, 2.0, 2.9, 3.0, 4.0, 8.0)] == [1, 1, 1, 1, 2, 2, 4]


def test_a_batch_of_partials_holds_one_job_of_a_stream() -> None:
    gate = threading.Event()
    sizes: list[int] = []
    s = InferenceScheduler(max_partial_age_s=10, max_batch=4, batch_partials=True)
    s.submit_final(Job(gate.wait, "final", key="hold"))
    time.sleep(0.05)
    for name in ("p1", "p2", "p3"):  # requests of one stream under different names, and one of another
        s.submit_partial(name, Job(lambda: sizes.append(s.running()), "partial", key="a"))
    s.submit_partial("q", Job(lambda: None, "partial", key="b"))
    gate.set()
    assert s.wait_idle(5)
    assert s.stats.partials_run == 4 and s.stats.batched_jobs <= 2  # a's three never share a batch
    assert sizes == [1, 1, 1]  # one run in progress each time: a's jobs one after another
    s.close()


def test_urgent_partials_run_before_the_others_in_the_order_they_came() -> None:
    # A partial that may commit a sentence must not wait behind every other stream's refresh.
    gate = threading.Event()
    order: list[str] = []
    s = InferenceScheduler(max_partial_age_s=10)
    s.submit_final(Job(gate.wait, "final"))
    time.sleep(0.05)
    for key, urgent in (("a", False), ("b", True), ("c", False), ("d", True)):
        s.submit_partial(key, Job(lambda k=key: order.append(k), "partial", key=key, urgent=urgent))
    s.submit_final(Job(lambda: order.append("f"), "final"))
    gate.set()
    assert s.wait_idle(5)
    assert order == ["f", "b", "d", "a", "c"]
    s.close()


def test_a_final_ending_speech_starts_beside_its_streams_partial_not_beside_its_finals() -> None:
    # A barrier only the partial and the final of the same stream, running at once, can pass.
    both = threading.Barrier(2, timeout=5)
    order: list[str] = []
    lock = threading.Lock()

    def note(name: str) -> None:
        with lock:
            order.append(name)

    s = InferenceScheduler(max_partial_age_s=10, workers=3)
    s.submit_partial("a", Job(lambda: note(f"p{both.wait()}"), "partial", key="a"))
    time.sleep(0.05)  # the partial runs
    s.submit_final(Job(lambda: note(f"f{both.wait()}"), "final", key="a", beside_partial=True))
    assert s.wait_idle(5)
    assert sorted(n[0] for n in order) == ["f", "p"] and s.stats.errors == 0

    # Beside its stream's running final it waits (a stream's finals keep their order), as does a plain final
    # beside the partial; another thread stays free all along.
    gate = threading.Event()
    s.submit_final(Job(lambda: (note("f1"), gate.wait(5)), "final", key="a"))
    time.sleep(0.05)
    s.submit_final(Job(lambda: note("f2"), "final", key="a", beside_partial=True))
    time.sleep(0.2)
    assert order[-1] == "f1"
    gate.set()
    assert s.wait_idle(5) and order[-2:] == ["f1", "f2"]

    gate.clear()
    s.submit_partial("a", Job(lambda: (note("p1"), gate.wait(5)), "partial", key="a"))
    time.sleep(0.05)
    s.submit_final(Job(lambda: note("f3"), "final", key="a"))
    time.sleep(0.2)
    assert order[-1] == "p1"
    gate.set()
    assert s.wait_idle(5) and order[-2:] == ["p1", "f3"]
    s.close()


def test_a_partial_never_starts_beside_its_streams_final() -> None:
    gate = threading.Event()
    order: list[str] = []
    s = InferenceScheduler(max_partial_age_s=10, workers=2)
    s.submit_final(Job(lambda: (order.append("f"), gate.wait(5)), "final", key="a", beside_partial=True))
    time.sleep(0.05)
    s.submit_partial("a", Job(lambda: order.append("p"), "partial", key="a"))
    time.sleep(0.2)
    assert order == ["f"]
    gate.set()
    assert s.wait_idle(5) and order == ["f", "p"]
    s.close()
