"""The operator with many TranscriptionRooms: memory, CPU and the cost of keeping their status current.

    python benchmarks/operator_scale.py [--rooms 1000] [--interval 15] [--settle-timeout 600]

Starts the real etcd + kube-apiserver of the tests (tests/servers/kube.py) on 127.0.0.1, installs the chart,
stops kube-controller-manager (no node runs the workers anyway, and 1,000 ReplicaSets with pending pods
would only load the 2 cores the operator is measured on), and serves one real worker /metrics on
127.0.0.1 that every room's refresh scrapes. The operator runs as its own process (``--run-operator``, the
same ``livenexus_operator.main.run`` the CLI uses, without leader election) so its RSS and CPU are its own.

Prints: time to create the rooms, time until every room has a Deployment and a status, the operator's RSS
and CPU seconds for that, then over two refresh intervals of steady state: CPU seconds, rooms refreshed,
status writes (written / unchanged) and the refresher's busy time, i.e. how long one pass over all rooms
takes. Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from livenexus_dev.livekit_server import free_port  # noqa: E402


def run_operator(args: argparse.Namespace) -> int:
    """Child mode: the operator, scraping every worker at ``--worker-url``."""
    from livenexus_common.cli import run_until_stopped, setup_logging
    from livenexus_operator import config, kube
    from livenexus_operator.main import run

    setup_logging(False)
    cfg = config.OperatorConfig(
        namespace=args.operator_namespace, template_configmap=args.template_configmap,
        status_interval_s=args.interval, leader_election=False, metrics_port=args.metrics_port,
        metrics_host="127.0.0.1", liveness_port=free_port(), metrics_url=lambda service, port: args.worker_url,
        watch_namespaces=(args.rooms_namespace,),
    )
    config.install(cfg)
    kube.configure(kube.load_default_config(args.kubeconfig))
    return run_until_stopped(lambda stop: run(cfg, stop))


def scrape(port: int) -> dict[str, float]:
    """The operator's own metrics, summed per sample name and label set."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:
                out[key] = out.get(key, 0.0) + s.value
    return out


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rooms", type=int, default=1000)
    p.add_argument("--interval", type=float, default=15.0, help="operator status interval (s)")
    p.add_argument("--settle-timeout", type=float, default=600.0)
    p.add_argument("--run-operator", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--kubeconfig", "--operator-namespace", "--template-configmap", "--rooms-namespace",
                   "--worker-url"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_operator:
        return run_operator(args)
    if not 1 <= args.rooms <= 5000:
        p.error("--rooms must be between 1 and 5000")
    # SIGTERM (timeout, a CI cancel) must still stop the control plane and the operator this run started.
    signal.signal(signal.SIGTERM, _interrupt)
    return bench(args)


def bench(args: argparse.Namespace) -> int:
    from tests.operator.clusterlib import Cluster, cluster_from_fixture, room, secret_manifest
    from tests.servers.kube import KubeControlPlane

    from livenexus_operator import kube
    from livenexus_worker.core.tier_spec import TierSpec
    from livenexus_worker.ops.metrics import WorkerMetrics
    from livenexus_worker.ops.metrics_server import MetricsServer

    print("starting etcd + kube-apiserver ...", flush=True)
    # A /16 of Service IPs: the tests' /24 holds 254 Services, one per room.
    cp = KubeControlPlane(service_cidr="198.19.0.0/16").start()
    operator: subprocess.Popen[bytes] | None = None
    worker = WorkerMetrics()
    worker.set_tier(0, TierSpec("base", "int8", 5, 250))
    for v in (0.2, 0.3, 0.4):
        worker.observe_final(v)
    server = MetricsServer(worker.registry, host="127.0.0.1", port=0)
    server.start()
    try:
        kcm = cp.procs["kube-controller-manager"]
        kcm.terminate()
        kcm.wait(15)
        cluster: Cluster = cluster_from_fixture(cp)
        rel, opns, ns = "lnx", "livenexus", "rooms"
        chart = str(ROOT / "charts" / "livenexus")
        helm = [cluster.helm, "--kubeconfig", str(cluster.kubeconfig), "install", rel, chart,
                "--namespace", opns, "--create-namespace", "--set", "operator.replicas=1"]
        proc = subprocess.run([*helm, "--set", "operator.roomPolicy.livekit.insecureHosts={127.0.0.1}"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:  # a chart without a room policy
            proc = subprocess.run(helm, capture_output=True, text=True, timeout=300, check=True)
        cluster.call("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": ns}})
        docs = [secret_manifest(ns, "lk", **{"api-key": "APIbench", "api-secret": "not-a-real-secret"})]
        cluster.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))

        op_port = free_port()
        log = (cp.workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, __file__, "--run-operator", "--kubeconfig", str(cluster.kubeconfig),
             "--operator-namespace", opns, "--template-configmap", f"{rel}-livenexus-worker-template",
             "--rooms-namespace", ns, "--worker-url", f"{server.url}/metrics", "--metrics-port", str(op_port),
             "--interval", str(args.interval)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        op = psutil.Process(operator.pid)
        for _ in range(100):
            try:
                scrape(op_port)
                break
            except OSError:
                time.sleep(0.3)
        time.sleep(3)  # kopf lists the (empty) namespace
        idle_rss = op.memory_info().rss
        cpu0 = cpu_s(op)

        t0 = time.monotonic()
        path = f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms"

        api = cluster.api

        def create(i: int) -> None:
            kube.call("POST", path, body=room(ns, f"room-{i:04d}"), api=api)

        # A few clients at once, as several users' kubectl would; POST, not kubectl (its per-object
        # discovery and apply calls would dominate what is measured here).
        with ThreadPoolExecutor(4) as pool:
            for n, _ in enumerate(pool.map(create, range(args.rooms)), start=1):
                if n % 250 == 0:
                    print(f"  {time.monotonic() - t0:6.0f} s: {n} rooms created", flush=True)
        created = time.monotonic() - t0
        print(f"created {args.rooms} rooms in {created:.1f} s", flush=True)

        def settled() -> tuple[int, int]:
            items = cluster.call("GET", f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms").get(
                "items") or []
            done = sum(1 for r in items if (r.get("status") or {}).get("observedGeneration")
                       == r["metadata"].get("generation") and (r.get("status") or {}).get("currentModel"))
            deps = cluster.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments",
                                query=[("limit", "5000")]).get("items") or []
            return done, len(deps)

        deadline = t0 + args.settle_timeout
        done, deps = settled()
        while (done < args.rooms or deps < args.rooms) and time.monotonic() < deadline:
            time.sleep(5)
            done, deps = settled()
            print(f"  {time.monotonic() - t0:6.0f} s: {done} rooms with status, {deps} Deployments", flush=True)
        settle = time.monotonic() - t0
        cpu_settle = cpu_s(op) - cpu0
        print(f"settled: {done}/{args.rooms} rooms with status and {deps} Deployments {settle:.0f} s after the "
              f"first create; operator CPU {cpu_settle:.1f} s for that", flush=True)

        # Steady state: two refresh intervals.
        m0, c0 = scrape(op_port), cpu_s(op)
        window = 2 * args.interval
        time.sleep(window)
        m1, c1 = scrape(op_port), cpu_s(op)
        rss = op.memory_info().rss
        peak = 0
        with open(f"/proc/{op.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024

        def d(key: str) -> float:
            return m1.get(key, 0.0) - m0.get(key, 0.0)

        refreshed = d("livenexus_operator_refreshed_rooms_total")
        busy = d("livenexus_operator_refresh_pass_seconds_sum")
        passes = d("livenexus_operator_refresh_pass_seconds_count")
        print()
        print(f"rooms                          {args.rooms}")
        print(f"operator RSS idle / now / peak {idle_rss / 2**20:.0f} / {rss / 2**20:.0f} / {peak / 2**20:.0f} MiB")
        share = 100 * (c1 - c0) / window
        print(f"steady state over {window:.0f} s      CPU {c1 - c0:.1f} s ({share:.0f} % of one core)")
        print(f"rooms refreshed                {refreshed:.0f} ({refreshed / window * args.interval:.0f} per "
              f"{args.interval:.0f} s interval)")
        print(f"status writes                  written {d('livenexus_operator_status_writes_total,result=written'):.0f}"
              f", unchanged (skipped) {d('livenexus_operator_status_writes_total,result=unchanged'):.0f}")
        if refreshed:
            rate = refreshed / window
            print(f"refresh throughput             {rate:.1f} rooms/s at concurrency 8: one pass over all rooms "
                  f"≈ {args.rooms / rate:.0f} s; CPU {1000 * (c1 - c0) / refreshed:.1f} ms per room refreshed")
            print(f"refresher passes completed     {passes:.0f}, {busy:.1f} s in them")
        items = cluster.call("GET", f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms").get("items")
        behind = [r for r in items or [] if (r.get("status") or {}).get("observedGeneration")
                  != r["metadata"].get("generation") or not (r.get("status") or {}).get("currentModel")]
        for r in behind[:10]:
            st = r.get("status") or {}
            print(f"  not current: {r['metadata']['name']} generation {r['metadata'].get('generation')} observed "
                  f"{st.get('observedGeneration')} phase {st.get('phase')} scraped {st.get('lastScrapeTime')} "
                  f"annotations {sorted(r['metadata'].get('annotations') or {})}")
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
        server.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
