"""Autoscaling on a real node: a busy room's worker pod is resized in place by the operator and gives the
CPU back after the cooldown, while it stays in the room (same pod UID, no restart).

The worker starts at 500m (its CFS quota) with one speaker talking continuously; the operator sees the
overload in the worker's /metrics, resizes the pod through pods/resize, the kubelet rewrites the
container's cpu.cfs_quota_us without a restart, the worker's sampler sees the new quota at its next
sample. The series the operator saw (scraped once a second here) is written to artifacts/ so the
decision can be replayed offline.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livenexus_operator.scrape import parse_worker_metrics

from .conftest import SECRET, Installed, wait_ready_pods
from .target import wait_for

pytestmark = [pytest.mark.node, pytest.mark.livekit, pytest.mark.model, pytest.mark.slow]

ROOM = "e2e-autoscale"
SELECTOR = f"app.kubernetes.io/name=livenexus-worker,app.kubernetes.io/instance={ROOM}"
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things with her from the store",
    "we will meet at the station at nine tomorrow morning",
    "six spoons of fresh snow peas and five thick slabs of blue cheese",
    "she can scoop these things into three red bags and we will go meet her",
]
START_CPU, MAX_CPU = "500m", "1500m"


def manifest(inst: Installed) -> dict[str, Any]:
    return {
        "apiVersion": "livenexus.io/v1alpha1",
        "kind": "TranscriptionRoom",
        "metadata": {"name": ROOM, "namespace": inst.namespace},
        "spec": {
            "room": ROOM,
            "livekit": {"url": inst.livekit.url, "credentialsSecretRef": {"name": SECRET}},
            "model": {"name": "base", "computeType": "int8", "language": "en", "beamSize": 5},
            # Starts at minCpu: a quarter of the node, too little for base beam 5 with a continuous speaker.
            "resources": {"requests": {"cpu": START_CPU, "memory": "512Mi"},
                          "limits": {"cpu": START_CPU, "memory": "2Gi"}},
            "autoscaling": {"enabled": True, "minCpu": START_CPU, "maxCpu": MAX_CPU, "step": "500m",
                            "upAfterSeconds": 4, "downAfterSeconds": 15, "cooldownSeconds": 5},
        },
    }


def limits(pod: dict[str, Any]) -> str:
    return str(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"])


def host_quota(pod: dict[str, Any]) -> float | None:
    """The container's CFS quota in cores as the kubelet wrote it on this host (cgroupfs driver)."""
    cid = pod["status"]["containerStatuses"][0].get("containerID", "").rpartition("//")[2]
    for root in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"), Path("/sys/fs/cgroup")):
        for d in root.glob(f"**/pod{pod['metadata']['uid']}/{cid}") if cid and root.exists() else ():
            if (d / "cpu.cfs_quota_us").exists():
                q, p = int((d / "cpu.cfs_quota_us").read_text()), int((d / "cpu.cfs_period_us").read_text())
                return q / p if q > 0 else None
            if (d / "cpu.max").exists():
                q_s, p_s = (d / "cpu.max").read_text().split()
                return int(q_s) / int(p_s) if q_s != "max" else None
    return None


def test_busy_room_gets_cpu_in_place_and_gives_it_back(installed: Installed, artifacts_dir: Path,
                                                       request: pytest.FixtureRequest) -> None:
    from livenexus_dev.demo.bots import Listener, SpeakerBot
    from livenexus_dev.tts import conversation
    from livenexus_worker.inference.textnorm import wer

    t, ns, lk = installed.target, installed.namespace, installed.livekit
    t.apply(manifest(installed))
    # The tests after this one share the release: leave no room behind, whatever fails here.
    request.addfinalizer(lambda: t.kubectl("delete", "troom", "-n", ns, ROOM, "--ignore-not-found", "--wait=true",
                                           "--timeout=60s", check=False))
    (pod,) = wait_ready_pods(installed, SELECTOR, timeout=240)
    uid = pod["metadata"]["uid"]
    assert limits(pod) == START_CPU
    if t.local_node:
        assert host_quota(pod) == pytest.approx(0.5)
    (svc,) = t.get("service", "-n", ns, "-l", SELECTOR)["items"]

    audio: np.ndarray = conversation(SENTENCES * 2, gap_s=0.6, lead_s=1.0)
    heard: list[Any] = []
    done, release = threading.Event(), threading.Event()
    request.addfinalizer(release.set)  # whatever fails below, the listener leaves

    async def talk() -> None:
        listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, ROOM, identity="listener-as")
        bot = await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, ROOM, identity="carol")
        try:
            await bot.play(audio)
            await bot.silence(2.0)
            await listener.wait_finals(len(SENTENCES), timeout=60, speaker="carol")
        finally:
            await bot.close()
            done.set()
            # livekit-server closes a room 20 s (departure timeout) after its last participant that is not an
            # agent left, and disconnects the worker with it: the listener stays until the final scrape, so a
            # disconnect seen there is one the resizes caused.
            deadline = time.monotonic() + 400
            while not release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            heard.extend(listener.heard)
            await listener.close()

    def run() -> None:
        try:
            asyncio.run(talk())
        finally:
            done.set()

    series: list[dict[str, Any]] = []
    resizes: list[tuple[float, str, float | None]] = []
    raised_quotas: list[float] = []  # the host's quota read every second while the spec asks for more
    speaker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    speaker.start()
    last = START_CPU
    with t.service_url(ns, svc["metadata"]["name"], 9300) as base:
        def observe() -> dict[str, Any]:
            now = time.monotonic() - started
            stats = parse_worker_metrics(urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode())
            live = t.get("pod", "-n", ns, pod["metadata"]["name"])
            nonlocal last
            if limits(live) != last:
                last = limits(live)
                resizes.append((round(now, 1), last, host_quota(live) if t.local_node else None))
            if t.local_node and last != START_CPU:
                # Read on every tick, not only at the change: the kubelet writes the cgroup a moment after the
                # spec changes (a run that read it only then saw 0.5 at the raise and again at the step down).
                quota = host_quota(live)
                if quota is not None:
                    raised_quotas.append(quota)
            series.append({"t": round(now, 2), "cpu_ratio": stats.cpu_ratio, "cpu_pressure": stats.cpu_pressure,
                           "lag_s": stats.lag_seconds, "tier": stats.tier_index, "speakers": stats.active_speakers,
                           "limit": last, "p95_ms": stats.final_latency_p95_ms})
            return live

        while not done.is_set() and time.monotonic() - started < 180:
            live = observe()
            time.sleep(1.0)
        speech_end = time.monotonic() - started
        # Back down after the calm window: one step per downAfterSeconds (+ cooldown), to minCpu.
        deadline = time.monotonic() + 240  # the worker steps its tier back up first (20 s calm a rung)
        while time.monotonic() < deadline:
            live = observe()
            if limits(live) == START_CPU and len(resizes) >= 2:
                break
            time.sleep(1.0)
        final_stats = parse_worker_metrics(urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode())
        release.set()  # the listener may leave now (on a failure above, the finalizer lets it go)
    speaker.join(timeout=30)
    (artifacts_dir / "autoscale-node-series.json").write_text(json.dumps(
        {"resizes": resizes, "speech_end_s": speech_end, "series": series}, indent=1))

    ups = [r for r in resizes if r[1] != START_CPU]
    assert ups, f"the operator never resized the busy pod; series tail: {series[-10:]}\n{installed.describe()}"
    if t.local_node:
        # Any quota above the start, read while the spec asked for more, proves the in-place raise.
        raised = [q for q in raised_quotas if q > 0.5]
        assert raised, f"the kubelet did not raise the quota: {resizes}, read while raised: {raised_quotas[-10:]}"
    assert limits(live) == START_CPU, f"not back at minCpu after the calm: {resizes}"
    live = t.get("pod", "-n", ns, pod["metadata"]["name"])
    assert live["metadata"]["uid"] == uid and live["status"]["containerStatuses"][0]["restartCount"] == 0
    assert final_stats.livekit_connected is True  # still in the room after every resize

    events = [e for e in t.get("events", "-n", ns)["items"] if e["involvedObject"].get("name") == ROOM]
    assert any(e["reason"] == "Resized" for e in events)

    def settled() -> dict[str, Any] | None:  # the kubelet reports the applied size a moment after the spec
        st: dict[str, Any] = t.get("troom", "-n", ns, ROOM).get("status", {}).get("autoscaling") or {}
        return st if st.get("cpu") == START_CPU else None

    st = wait_for("status.autoscaling back at minCpu", settled, 30, describe=installed.describe)
    assert st["lastDecision"]["action"] == "Down" and st["lastDecision"]["toCpu"] == START_CPU

    finals = [h for h in heard if h.speaker == "carol" and h.via == "data" and h.final]
    score = wer(" ".join(SENTENCES * 2), " ".join(h.text for h in finals))
    after_up = [h for h in finals if h.at - started > ups[0][0]]

    def lat(hs: list[Any]) -> str:
        ms = sorted(float(h.attributes.get("latencyMs", 0.0)) for h in hs)
        return f"{ms[len(ms) // 2]:.0f}/{ms[-1]:.0f} ms" if ms else "-"

    print(f"e2e autoscale: resizes {resizes} (s since speech start, limit, host quota); speech ended at "
          f"{speech_end:.0f}s; tier changes down/up {final_stats.tier_changes_down}/{final_stats.tier_changes_up}; "
          f"{len(finals)} finals (median/max latency before the first resize "
          f"{lat(finals[:len(finals) - len(after_up)])}"
          f", after {lat(after_up)}), WER {score:.2f}")
    assert after_up, "no final was published after the resize: the worker left the room or stalled"
    assert score <= 0.5, f"WER {score:.2f}"
    t.kubectl("delete", "troom", "-n", ns, ROOM, "--wait=true", "--timeout=60s")
