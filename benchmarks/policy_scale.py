"""The operator with 1,000 LiveKit rooms in one TranscriptionPolicy: webhooks in, TranscriptionRooms out.

    python benchmarks/policy_scale.py [--rooms 1000] [--steady 30]

Starts the tests' etcd + kube-apiserver and a livekit-server on 127.0.0.1, installs the chart, stops
kube-controller-manager (no node runs workers; as in operator_scale.py) and runs the operator as its own
process (its RSS and CPU are its own) with the policy endpoint on. The rooms are synthetic: correctly signed
``track_published`` webhooks (what livekit-server posts when someone publishes a microphone), 8 at a time;
the resync runs once at start (against the real, empty livekit-server) and is then parked so it does not
remove rooms LiveKit does not have. Then ``room_finished`` for every room.

Prints: webhook throughput, time to 1,000 TranscriptionRooms and to their Deployments, operator RSS and CPU
for that, steady-state CPU with 1,000 rooms in the policy, and the time to delete them all. Numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from livenexus_dev.livekit_server import LiveKitServer, free_port  # noqa: E402


def run_operator(args: argparse.Namespace) -> int:
    """Child mode: the operator with TranscriptionPolicies on."""
    from livenexus_common.cli import run_until_stopped, setup_logging
    from livenexus_operator import config, kube
    from livenexus_operator.main import run

    setup_logging(False)
    cfg = config.OperatorConfig(
        namespace=args.operator_namespace, template_configmap=args.template_configmap, status_interval_s=15.0,
        leader_election=False, metrics_port=args.metrics_port, metrics_host="127.0.0.1", liveness_port=free_port(),
        metrics_url=lambda service, port: "http://127.0.0.1:1/metrics", watch_namespaces=(args.rooms_namespace,),
        livekit_url=args.livekit_url, livekit_api_key=os.environ["BENCH_LK_KEY"],
        livekit_api_secret=os.environ["BENCH_LK_SECRET"], webhook_port=args.webhook_port,
        webhook_host="127.0.0.1", resync_interval_s=3600.0,
    )
    config.install(cfg)
    kube.configure(kube.load_default_config(args.kubeconfig))
    return run_until_stopped(lambda stop: run(cfg, stop))


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


async def post_events(url: str, key: str, secret: str, kind: str, n: int) -> float:
    """POST one signed ``kind`` event per room, 8 at a time; the seconds it took."""
    import aiohttp
    from google.protobuf.json_format import MessageToJson
    from livekit import api

    sem = asyncio.Semaphore(8)
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s:
        async def one(i: int) -> None:
            body = MessageToJson(api.WebhookEvent(
                event=kind, room=api.Room(name=f"bench-{i:04d}", sid=f"RM_{i}"),
                participant=api.ParticipantInfo(sid=f"PA_{i}", identity=f"user-{i}"),
                track=api.TrackInfo(sid=f"TR_{i}", type=0), id=f"EV_{kind}_{i}"))
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            auth = api.AccessToken(key, secret).with_sha256(digest).to_jwt()
            async with sem, s.post(url, data=body, headers={"Authorization": auth}) as resp:
                assert resp.status == 200, resp.status

        await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rooms", type=int, default=1000)
    p.add_argument("--steady", type=float, default=30.0, help="seconds of steady state measured")
    p.add_argument("--settle-timeout", type=float, default=600.0)
    p.add_argument("--run-operator", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--kubeconfig", "--operator-namespace", "--template-configmap", "--rooms-namespace",
                   "--livekit-url"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--metrics-port", "--webhook-port"):
        p.add_argument(hidden, type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_operator:
        return run_operator(args)
    if not 1 <= args.rooms <= 5000:
        p.error("--rooms must be between 1 and 5000")
    signal.signal(signal.SIGTERM, _interrupt)
    return bench(args)


def bench(args: argparse.Namespace) -> int:
    from tests.operator.clusterlib import Cluster, cluster_from_fixture, secret_manifest
    from tests.servers.kube import KubeControlPlane

    print("starting etcd + kube-apiserver + livekit-server ...", flush=True)
    cp = KubeControlPlane(service_cidr="198.19.0.0/16").start()
    lk = LiveKitServer().start()
    operator: subprocess.Popen[bytes] | None = None
    try:
        kcm = cp.procs["kube-controller-manager"]
        kcm.terminate()
        kcm.wait(15)
        cluster: Cluster = cluster_from_fixture(cp)
        rel, opns, ns = "lnx", "livenexus", "rooms"
        chart = str(ROOT / "charts" / "livenexus")
        subprocess.run([cluster.helm, "--kubeconfig", str(cluster.kubeconfig), "install", rel, chart,
                        "--namespace", opns, "--create-namespace", "--set", "operator.replicas=1",
                        "--set", "operator.roomPolicy.livekit.insecureHosts={127.0.0.1}"],
                       capture_output=True, text=True, timeout=300, check=True)
        cluster.call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": ns}})
        template = {"livekit": {"url": lk.url, "credentialsSecretRef": {"name": "lk"}}}
        docs = [secret_manifest(ns, "lk", **{"api-key": lk.api_key, "api-secret": lk.api_secret}),
                {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionPolicy",
                 "metadata": {"name": "bench", "namespace": ns},
                 "spec": {"template": template, "maxRooms": args.rooms, "gracePeriodSeconds": 0}}]
        cluster.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))

        op_port, hook_port = free_port(), free_port()
        log = (cp.workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, __file__, "--run-operator", "--kubeconfig", str(cluster.kubeconfig),
             "--operator-namespace", opns, "--template-configmap", f"{rel}-livenexus-worker-template",
             "--rooms-namespace", ns, "--metrics-port", str(op_port), "--webhook-port", str(hook_port),
             "--livekit-url", lk.url.replace("ws://", "http://")],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_LK_KEY": lk.api_key,
                 "BENCH_LK_SECRET": lk.api_secret})
        op = psutil.Process(operator.pid)
        for _ in range(200):
            try:
                if metric(op_port, 'livenexus_operator_policy_resyncs_total{result="ok"}') >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        time.sleep(2)
        idle_rss, cpu0 = op.memory_info().rss, cpu_s(op)
        url = f"http://127.0.0.1:{hook_port}/livekit/webhook"
        path = f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms"

        def counts() -> tuple[int, int]:
            rooms = cluster.call("GET", path, query=[("limit", "10000")]).get("items") or []
            deps = cluster.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments",
                                query=[("limit", "10000")]).get("items") or []
            return len(rooms), len(deps)

        t0 = time.monotonic()
        posted = asyncio.run(post_events(url, lk.api_key, lk.api_secret, "track_published", args.rooms))
        print(f"{args.rooms} signed webhooks answered in {posted:.1f} s ({args.rooms / posted:.0f}/s, 8 in flight)",
              flush=True)
        rooms_at = deps_at = None
        deadline = t0 + args.settle_timeout
        while time.monotonic() < deadline:
            rooms, deps = counts()
            if rooms_at is None and rooms >= args.rooms:
                rooms_at = time.monotonic() - t0
            if deps >= args.rooms:
                deps_at = time.monotonic() - t0
                break
            print(f"  {time.monotonic() - t0:6.0f} s: {rooms} TranscriptionRooms, {deps} Deployments", flush=True)
            time.sleep(5)
        cpu_up, rss_up = cpu_s(op) - cpu0, op.memory_info().rss

        c0 = cpu_s(op)
        time.sleep(args.steady)
        steady = cpu_s(op) - c0
        rss = op.memory_info().rss

        t1 = time.monotonic()
        asyncio.run(post_events(url, lk.api_key, lk.api_secret, "room_finished", args.rooms))
        gone_at = None
        while time.monotonic() < t1 + args.settle_timeout:
            rooms, _ = counts()
            if rooms == 0:
                gone_at = time.monotonic() - t1
                break
            time.sleep(2)
        peak = 0
        with open(f"/proc/{op.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        print()
        print(f"rooms in the policy                  {args.rooms}")
        print(f"first webhook -> all TranscriptionRooms {rooms_at if rooms_at is None else round(rooms_at, 1)} s; "
              f"-> all Deployments {deps_at if deps_at is None else round(deps_at, 1)} s")
        print(f"operator CPU for that                {cpu_up:.1f} s")
        print(f"operator RSS idle / at {args.rooms} / peak   {idle_rss / 2**20:.0f} / {rss / 2**20:.0f} / "
              f"{peak / 2**20:.0f} MiB (after the burst {rss_up / 2**20:.0f} MiB)")
        print(f"steady state, {args.rooms} rooms, {args.steady:.0f} s     CPU {steady:.1f} s "
              f"({100 * steady / args.steady:.0f} % of one core; refresher and policy passes together)")
        print(f"room_finished x {args.rooms} -> none left  {gone_at if gone_at is None else round(gone_at, 1)} s")
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
        lk.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
