"""cgroup discovery, quota parsing, PSI parsing and the CPU sampler."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from livenexus_worker.ops.cpu import (
    CgroupPaths,
    CpuSampler,
    affinity_cpus,
    cgroup_quota_cores,
    find_cgroup_paths,
    parse_psi_some,
    usable_cores,
)
from livenexus_worker.streaming.scheduler import lanes_for


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_v2_quota_and_unlimited(tmp_path: Path) -> None:
    d = tmp_path / "kubepods" / "pod1"
    write(d / "cgroup.procs", "1\n")
    proc = write(tmp_path / "proc_cgroup", "0::/kubepods/pod1\n")
    paths = find_cgroup_paths(proc, tmp_path)
    assert paths.v2_dir == d
    write(d / "cpu.max", "150000 100000\n")
    assert cgroup_quota_cores(paths) == pytest.approx(1.5)
    write(d / "cpu.max", "max 100000\n")
    assert cgroup_quota_cores(paths) is None


def test_v2_namespaced_path_falls_back_to_mount_root(tmp_path: Path) -> None:
    # A container without a cgroup namespace lists the host's path, but only its own cgroup is
    # mounted (at the root).
    write(tmp_path / "cgroup.procs", "1\n")
    write(tmp_path / "cpu.max", "50000 100000\n")
    proc = write(tmp_path / "proc_cgroup", "0::/kubepods/burstable/podX/abc\n")
    paths = find_cgroup_paths(proc, tmp_path)
    assert paths.v2_dir == tmp_path
    assert cgroup_quota_cores(paths) == pytest.approx(0.5)


def test_hybrid_v1_quota(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu,cpuacct" / "docker" / "c1"
    write(v1 / "cpu.cfs_quota_us", "200000\n")
    write(v1 / "cpu.cfs_period_us", "100000\n")
    write(tmp_path / "unified" / "cgroup.procs", "")
    proc = write(tmp_path / "proc_cgroup", "4:cpu,cpuacct:/docker/c1\n3:memory:/docker/c1\n0::/\n")
    paths = find_cgroup_paths(proc, tmp_path)
    assert paths.v1_cpu_dir == v1
    assert paths.v2_dir == tmp_path / "unified"
    assert cgroup_quota_cores(paths) == pytest.approx(2.0)
    write(v1 / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_quota_cores(paths) is None


def test_parse_psi() -> None:
    text = (
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=123456\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    assert parse_psi_some(text) == (0.125, 123456)
    assert parse_psi_some("full avg10=1.00 total=5\n") is None
    assert parse_psi_some("some garbage\n") is None


class FakeProcess:
    def __init__(self) -> None:
        self.cpu = 0.0

    def cpu_times(self) -> SimpleNamespace:
        return SimpleNamespace(user=self.cpu, system=0.0)

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=123 * 1024 * 1024)


def test_usable_cores_is_min_of_quota_and_affinity(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "10000000 100000\n")  # 100 cores of quota
    paths = CgroupPaths(v2_dir=tmp_path, v1_cpu_dir=None)
    assert CpuSampler(process=FakeProcess(), cgroups=paths, psi_paths=[]).usable_cores == float(len(affinity_cpus()))
    write(tmp_path / "cpu.max", "25000 100000\n")
    assert CpuSampler(process=FakeProcess(), cgroups=paths, psi_paths=[]).usable_cores == pytest.approx(0.25)


def test_sampler_shares_from_counters(tmp_path: Path) -> None:
    clock = [100.0]
    proc = FakeProcess()
    write(tmp_path / "cpu.max", "200000 100000\n")  # exactly 2 cores of quota
    psi = write(tmp_path / "cpu.pressure", "some avg10=40.00 avg60=0 avg300=0 total=1000000\n")
    sampler = CpuSampler(
        process=proc, cgroups=CgroupPaths(v2_dir=tmp_path, v1_cpu_dir=None), psi_paths=[psi],
        min_interval_s=0.5, clock=lambda: clock[0],
    )
    first = sampler.last
    assert first is not None and first.interval_s == 0.0
    assert first.stall == pytest.approx(0.40)  # only avg10 is known before a second reading

    expected_cores = min(2.0, float(len(affinity_cpus())))
    clock[0] += 2.0
    proc.cpu += 2.0 * expected_cores * 0.6  # 60 % of the usable cores for 2 s
    write(psi, "some avg10=99.00 avg60=0 avg300=0 total=1500000\n")  # +0.5 s stalled in 2 s
    s = sampler.sample()
    assert s.interval_s == pytest.approx(2.0)
    assert s.usable_cores == expected_cores
    assert s.process == pytest.approx(0.6)
    assert s.stall == pytest.approx(0.25)  # from the counter, not avg10
    assert s.pressure >= max(s.process, 0.25)
    assert sampler.rss_bytes() == 123 * 1024 * 1024

    # Within min_interval the cached reading comes back unchanged.
    clock[0] += 0.1
    proc.cpu += 5.0
    assert sampler.sample() is s


def test_sampler_quota_ignores_host_busy(tmp_path: Path) -> None:
    clock = [0.0]
    proc = FakeProcess()
    write(tmp_path / "cpu.max", "10000 100000\n")  # 0.1 core: below any affinity mask
    sampler = CpuSampler(process=proc, cgroups=CgroupPaths(v2_dir=tmp_path, v1_cpu_dir=None),
                         psi_paths=[], clock=lambda: clock[0])
    clock[0] += 1.0
    proc.cpu += 0.05
    s = sampler.sample()
    assert s.quota_limited
    assert s.process == pytest.approx(0.5)
    assert s.stall is None
    assert s.pressure == pytest.approx(0.5)  # host busy share is not part of it under a quota


def test_real_sampler_sees_our_own_busy_thread() -> None:
    sampler = CpuSampler(min_interval_s=0.0)
    cpu0, wall0 = time.process_time(), time.monotonic()
    stop = wall0 + 1.0

    def spin() -> None:
        x = 0
        while time.monotonic() < stop:
            x += 1

    t = threading.Thread(target=spin)
    t.start()
    t.join()
    s = sampler.sample()
    used = (time.process_time() - cpu0) / (time.monotonic() - wall0) / s.usable_cores
    # Compare with what the process really got (a loaded machine may give the spinning thread far less than a
    # core): the sampler must report that share, not a guess.
    assert used > 0.05 / s.usable_cores, "the spinning thread got no CPU at all"
    assert abs(s.process - used) < 0.15 / s.usable_cores + 0.1 * used, (s.process, used)
    if s.busy is not None:
        assert s.busy >= s.process * 0.8
    assert s.pressure >= s.process


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_sampler_sees_an_in_place_resize_at_its_next_sample(tmp_path: Path, version: str) -> None:
    # pods/resize rewrites the quota under the running process; the next sample (the tier loop takes one
    # every 0.5 s) must use the new budget, or the worker would keep judging itself by the old quota.
    clock = [10.0]
    proc = FakeProcess()
    if version == "v2":
        paths = CgroupPaths(v2_dir=tmp_path, v1_cpu_dir=None)

        def set_quota(cores: float) -> None:
            write(tmp_path / "cpu.max", f"{int(cores * 100000)} 100000\n")
    else:
        paths = CgroupPaths(v2_dir=None, v1_cpu_dir=tmp_path)
        write(tmp_path / "cpu.cfs_period_us", "100000\n")

        def set_quota(cores: float) -> None:
            write(tmp_path / "cpu.cfs_quota_us", f"{int(cores * 100000)}\n")

    set_quota(0.25)
    sampler = CpuSampler(process=proc, cgroups=paths, psi_paths=[], min_interval_s=0.5, clock=lambda: clock[0])
    assert sampler.usable_cores == pytest.approx(0.25)
    clock[0] += 1.0
    proc.cpu += 0.25  # the whole old quota
    assert sampler.sample().process == pytest.approx(1.0)

    set_quota(1.0)
    clock[0] += 1.0
    proc.cpu += 0.25  # the same work, now a quarter of the budget
    s = sampler.sample()
    expected = min(1.0, float(len(affinity_cpus())))
    assert s.usable_cores == pytest.approx(expected) and sampler.usable_cores == pytest.approx(expected)
    assert s.process == pytest.approx(0.25 / expected)


def test_under_a_quota_the_nodes_stall_is_not_ours(tmp_path: Path) -> None:
    # cgroup v1 host: the only PSI file is the system-wide one, which counts every tenant of the node.
    clock = [0.0]
    proc = FakeProcess()
    v1 = tmp_path / "cpu"
    write(v1 / "cpu.cfs_quota_us", "50000\n")
    write(v1 / "cpu.cfs_period_us", "100000\n")
    system_psi = write(tmp_path / "proc" / "pressure" / "cpu", "some avg10=90.00 avg60=0 avg300=0 total=0\n")
    sampler = CpuSampler(process=proc, cgroups=CgroupPaths(v2_dir=None, v1_cpu_dir=v1), psi_paths=[system_psi],
                         clock=lambda: clock[0])
    clock[0] += 1.0
    proc.cpu += 0.05  # an idle worker: a tenth of its 500m
    write(system_psi, "some avg10=90.00 avg60=0 avg300=0 total=900000\n")  # the node is 90 % stalled
    s = sampler.sample()
    assert s.stall == pytest.approx(0.9) and s.quota_limited
    assert s.pressure == pytest.approx(0.1)  # its own share: it has no reason to step down
    # Our own cgroup's stall (cgroup v2) still counts under a quota: those are our tasks waiting.
    own = tmp_path / "v2"
    write(own / "cpu.max", "50000 100000\n")
    own_psi = write(own / "cpu.pressure", "some avg10=0 avg60=0 avg300=0 total=0\n")
    sampler = CpuSampler(process=proc, cgroups=CgroupPaths(v2_dir=own, v1_cpu_dir=None), psi_paths=[own_psi],
                         clock=lambda: clock[0])
    clock[0] += 1.0
    proc.cpu += 0.05
    write(own_psi, "some avg10=0 avg60=0 avg300=0 total=600000\n")
    assert sampler.sample().pressure == pytest.approx(0.6)


def test_the_cpu_cores_gauge_follows_an_in_place_resize(tmp_path: Path) -> None:
    # The dashboard's "CPU allotment vs use" reads livenexus_cpu_cores: it must show the quota the autoscaler
    # set, re-read after a resize, not the one the worker started with.
    from prometheus_client import generate_latest

    from livenexus_common.contract import Metric
    from livenexus_worker.ops.metrics import WorkerMetrics

    clock = [100.0]
    write(tmp_path / "cpu.max", "50000 100000\n")  # 500m
    sampler = CpuSampler(process=FakeProcess(), cgroups=CgroupPaths(v2_dir=tmp_path, v1_cpu_dir=None), psi_paths=[],
                         min_interval_s=0.5, clock=lambda: clock[0])
    metrics = WorkerMetrics(sampler=sampler)

    def scraped() -> float:
        line = next(ln for ln in generate_latest(metrics.registry).decode().splitlines()
                    if ln.startswith(Metric.CPU_CORES + " "))
        return float(line.split()[1])

    assert scraped() == pytest.approx(min(0.5, float(len(affinity_cpus()))))
    write(tmp_path / "cpu.max", "150000 100000\n")  # resized in place to 1.5 CPU
    clock[0] += 1.0
    assert scraped() == pytest.approx(min(1.5, float(len(affinity_cpus()))))


def test_usable_cores_are_the_quota_when_it_is_below_the_affinity_mask(tmp_path: Path) -> None:
    # The file path (`transcribe`) sizes its parallel decodes from this: a pod limited to half a core on a
    # many-core node must run one decode at a time, not one per core of the mask.
    paths = CgroupPaths(v2_dir=tmp_path, v1_cpu_dir=None)
    cpus = float(len(affinity_cpus()))
    write(tmp_path / "cpu.max", "max 100000\n")
    assert usable_cores(paths) == cpus
    write(tmp_path / "cpu.max", "50000 100000\n")
    assert usable_cores(paths) == pytest.approx(0.5) and lanes_for(usable_cores(paths)) == 1
    write(tmp_path / "cpu.max", f"{int(cpus + 3) * 100000} 100000\n")
    assert usable_cores(paths) == cpus, "a quota above the mask does not add cores"
    write(tmp_path / "cpu.max", "garbage\n")
    assert usable_cores(paths) == cpus
