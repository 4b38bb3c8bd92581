"""Process- and cgroup-aware CPU sampling for the tier policy and the metrics.

The tier policy needs one number in [0, 1+] that says "the CPU we can use is (nearly) exhausted". Our
own usage is not enough: a neighbour (another pod on the node, ``stress-ng`` on a dev box) can starve
us while our own share still looks modest, so :class:`CpuSampler` also reads CPU pressure (PSI) and,
when no CFS quota bounds us, how busy the cores we may run on are. See :meth:`CpuSampler.sample`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil


class ProcessLike(Protocol):
    """The part of :class:`psutil.Process` the sampler uses (tests pass a fake)."""

    def cpu_times(self) -> Any: ...

    def memory_info(self) -> Any: ...


@dataclass(frozen=True)
class CgroupPaths:
    """Where this process's cgroup files live (any of them may be absent)."""

    v2_dir: Path | None
    """Our cgroup v2 directory (holds cpu.max, cpu.pressure), pure v2 or the hybrid ``unified`` mount."""
    v1_cpu_dir: Path | None
    """Our cgroup v1 ``cpu`` controller directory (holds cpu.cfs_quota_us / cpu.cfs_period_us)."""


@dataclass(frozen=True)
class CpuSample:
    """One reading of the CPU situation over the interval since the previous reading."""

    at: float
    """Monotonic time of the reading."""
    interval_s: float
    """Wall time covered by the deltas below (0 for the very first reading)."""
    usable_cores: float
    """Cores we may use: the cgroup quota if any, else the affinity mask size (fractional for quotas)."""
    quota_limited: bool
    """True when a CFS quota (not just the affinity mask) bounds :attr:`usable_cores`."""
    process: float
    """This process's CPU time over the interval divided by interval × usable cores."""
    busy: float | None
    """Share of the time the cores in our affinity mask were not idle (any process); None if unknown."""
    stall: float | None
    """Share of wall time at least one of our tasks waited for a CPU (PSI "some"); None if unreadable."""
    pressure: float
    """The tier policy's signal: the max of the applicable shares above (see :meth:`CpuSampler.sample`)."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def find_cgroup_paths(proc_self_cgroup: Path = Path("/proc/self/cgroup"),
                      root: Path = Path("/sys/fs/cgroup")) -> CgroupPaths:
    """Resolve our cgroup directories from /proc/self/cgroup under the cgroupfs mount at ``root``."""
    v2_rel: str | None = None
    v1_rel: str | None = None
    for line in (_read(proc_self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, rel = parts
        if hierarchy == "0" and controllers == "":
            v2_rel = rel
        elif "cpu" in controllers.split(","):
            v1_rel = rel

    def pick(candidates: list[Path], marker: str) -> Path | None:
        # Inside a container without a cgroup namespace the recorded path is the host's and does not
        # exist under our mount; the mount root is then our own cgroup.
        for c in candidates:
            if (c / marker).exists():
                return c
        return None

    v2_dir = None
    if v2_rel is not None:
        rel = v2_rel.lstrip("/")
        v2_dir = pick([root / rel, root, root / "unified" / rel, root / "unified"], "cgroup.procs")
    v1_dir = None
    if v1_rel is not None:
        rel = v1_rel.lstrip("/")
        bases = [root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"]
        v1_dir = pick([p for b in bases for p in (b / rel, b)], "cpu.cfs_quota_us")
    return CgroupPaths(v2_dir=v2_dir, v1_cpu_dir=v1_dir)


def cgroup_quota_cores(paths: CgroupPaths) -> float | None:
    """The CFS quota in cores (``cpu.max`` or ``cpu.cfs_quota_us``), or None when unlimited/unreadable."""
    if paths.v2_dir is not None:
        raw = _read(paths.v2_dir / "cpu.max")
        if raw:
            fields = raw.split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    return int(fields[0]) / int(fields[1])
                except (ValueError, ZeroDivisionError):
                    pass
    if paths.v1_cpu_dir is not None:
        quota = _read(paths.v1_cpu_dir / "cpu.cfs_quota_us")
        period = _read(paths.v1_cpu_dir / "cpu.cfs_period_us")
        if quota and period:
            try:
                q, p = int(quota), int(period)
            except ValueError:
                return None
            if q > 0 and p > 0:
                return q / p
    return None


def affinity_cpus() -> list[int]:
    """CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def usable_cores(cgroups: CgroupPaths | None = None) -> float:
    """Cores this process may use now: the CFS quota (fractional) when it is below the affinity mask's size."""
    return _cores(len(affinity_cpus()), cgroup_quota_cores(cgroups if cgroups is not None else find_cgroup_paths()))


def _cores(cpus: int, quota: float | None) -> float:
    """Cores ``cpus`` affinity-mask CPUs under a CFS ``quota`` (None: unlimited) allow."""
    return min(float(cpus), quota) if quota is not None else float(cpus)


def parse_psi_some(text: str) -> tuple[float, int] | None:
    """(avg10 as a fraction, total stall microseconds) of the ``some`` line of a PSI file."""
    for line in text.splitlines():
        if not line.startswith("some "):
            continue
        values = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        try:
            return float(values["avg10"]) / 100.0, int(values["total"])
        except (KeyError, ValueError):
            return None
    return None


class CpuSampler:
    """Turns cumulative counters (process CPU time, per-CPU times, PSI totals) into per-interval shares.

    Not thread-safe by itself; :meth:`sample` is cheap (a few small file reads) and caches its result
    for ``min_interval_s`` so that a metrics scrape and the tier loop can share one sampler without
    shrinking each other's intervals to nothing.
    """

    def __init__(
        self,
        *,
        process: ProcessLike | None = None,
        cgroups: CgroupPaths | None = None,
        psi_paths: list[Path] | None = None,
        min_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._proc: ProcessLike = process if process is not None else psutil.Process()
        self._cgroups = cgroups if cgroups is not None else find_cgroup_paths()
        if psi_paths is None:
            # Our own cgroup's PSI counts only stalls of our tasks (what we care about); the
            # system-wide file is the fallback on cgroup v1 hosts.
            psi_paths = [Path("/proc/pressure/cpu")]
            if self._cgroups.v2_dir is not None:
                psi_paths.insert(0, self._cgroups.v2_dir / "cpu.pressure")
        self._psi_path = next((p for p in psi_paths if _read(p) is not None), None)
        self._psi_own = self._psi_path is not None and self._psi_path.name == "cpu.pressure" and (
            self._cgroups.v2_dir is not None and self._psi_path.parent == self._cgroups.v2_dir)
        self._min_interval = min_interval_s
        self._clock = clock
        self._cpus = affinity_cpus()
        self._quota = cgroup_quota_cores(self._cgroups)
        self._prev_at: float | None = None
        self._prev_proc = 0.0
        self._prev_busy: tuple[float, float] | None = None
        self._prev_psi_total: int | None = None
        self._last: CpuSample | None = None
        self.sample()

    @property
    def usable_cores(self) -> float:
        return _cores(len(self._cpus), self._quota)

    @property
    def last(self) -> CpuSample | None:
        """The most recent reading, without taking a new one."""
        return self._last

    def _proc_seconds(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def _busy_counters(self) -> tuple[float, float] | None:
        """(busy seconds, total seconds) summed over the CPUs in our affinity mask."""
        try:
            per_cpu = psutil.cpu_times(percpu=True)
        except (OSError, RuntimeError):
            return None
        busy = total = 0.0
        for i in self._cpus:
            if i >= len(per_cpu):
                continue
            t = per_cpu[i]
            idle = t.idle + getattr(t, "iowait", 0.0)
            all_ = sum(t)
            # guest time is already included in user on Linux; subtracting avoids double counting.
            all_ -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
            busy += all_ - idle
            total += all_
        return (busy, total) if total > 0 else None

    def sample(self) -> CpuSample:
        """Take a reading (or return the cached one if the last is younger than ``min_interval_s``).

        ``pressure`` = max(process share, PSI stall share, busy share of our cores when no quota):

        * process share catches us saturating our own budget (quota or cores);
        * PSI "some" is the direct measure of contention: time our runnable tasks waited for a CPU,
          whoever held it. Computed from the ``total`` counter over our own interval (``avg10`` is a
          10 s moving average, which would add lag to the down window); ``avg10`` is used only for the
          first reading. Under a CFS quota only our own cgroup's PSI counts, never the system-wide file;
        * busy share of the cores we run on (1 - idle) reacts to a neighbour hogging the cores even
          while we are idle, i.e. *before* our next utterance has to fight for them. It is ignored
          under a CFS quota: on a big node the other tenants' load says nothing about our quota.
        """
        now = self._clock()
        if self._last is not None and now - self._last.at < self._min_interval:
            return self._last
        # Re-read on every sample: the operator resizes the pod in place (pods/resize), which rewrites
        # cpu.max / cpu.cfs_quota_us under a running process, and the policy must see the new budget
        # at its next tick, not after a restart.
        self._quota = cgroup_quota_cores(self._cgroups)
        proc_s = self._proc_seconds()
        busy_counters = self._busy_counters()
        psi_raw = _read(self._psi_path) if self._psi_path is not None else None
        psi = parse_psi_some(psi_raw) if psi_raw else None
        cores = self.usable_cores

        interval = 0.0 if self._prev_at is None else now - self._prev_at
        process = busy = stall = None
        if interval > 0:
            process = max(0.0, proc_s - self._prev_proc) / (interval * cores)
            if busy_counters is not None and self._prev_busy is not None:
                d_total = busy_counters[1] - self._prev_busy[1]
                if d_total > 0:
                    busy = min(1.0, max(0.0, (busy_counters[0] - self._prev_busy[0]) / d_total))
            if psi is not None and self._prev_psi_total is not None:
                stall = min(1.0, max(0.0, (psi[1] - self._prev_psi_total) / (interval * 1e6)))
        if stall is None and psi is not None:
            stall = psi[0]

        process_share = process if process is not None else 0.0
        quota_limited = self._quota is not None and self._quota < len(self._cpus)
        candidates = [process_share]
        # Under a quota only our own cgroup's stall counts: the system-wide file (cgroup v1 hosts) measures
        # every tenant of the node, and more quota, or a cheaper tier, would not change their contention.
        # Measured on a loaded node: an idle pod read 0.8-0.97 "pressure" from it and stepped down to its
        # last tier, and kept the autoscaler from ever giving its CPU back.
        if stall is not None and (self._psi_own or not quota_limited):
            candidates.append(stall)
        if busy is not None and not quota_limited:
            candidates.append(busy)
        pressure = max(c for c in candidates if not math.isnan(c))

        self._prev_at = now
        self._prev_proc = proc_s
        self._prev_busy = busy_counters
        self._prev_psi_total = psi[1] if psi is not None else None
        self._last = CpuSample(
            at=now,
            interval_s=interval,
            usable_cores=cores,
            quota_limited=quota_limited,
            process=process_share,
            busy=busy,
            stall=stall,
            pressure=pressure,
        )
        return self._last

    def rss_bytes(self) -> int:
        """Resident set size of this process."""
        return int(self._proc.memory_info().rss)
