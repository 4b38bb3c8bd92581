"""The real test node: Ready, runs pods on its bridge, Services reach them through kube-proxy, and it leaves
the host as it found it, even after a crash."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from . import nodehost
from .node import PAUSE_IMAGE, KubeNode
from .nodeimages import HTTPD_PORT, httpd_image, pause_binary, write_image_tar

pytestmark = pytest.mark.node
NS = "node-test"


def apply(node: KubeNode, *objs: dict[str, Any]) -> None:
    node.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def pod(name: str, image: str, **spec: object) -> dict[str, Any]:
    container = {"name": "main", "image": image, "imagePullPolicy": "Never", **spec.pop("container", {})}  # type: ignore[dict-item]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec}}


def wait_pod(node: KubeNode, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = node.get(f"/api/v1/namespaces/{NS}/pods/{name}")
        ready = [c for c in p["status"].get("conditions", []) if c["type"] == "Ready"]
        if p["status"].get("phase") == "Running" and ready and ready[0]["status"] == "True":
            return p
        time.sleep(0.3)
    raise AssertionError(f"pod {name} not running: {json.dumps(p['status'])[:1500]}\n{node.tail('kubelet')}")


def wait_phase(node: KubeNode, name: str, phases: tuple[str, ...], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = str(node.get(f"/api/v1/namespaces/{NS}/pods/{name}")["status"].get("phase"))
        if phase in phases:
            return phase
        time.sleep(0.3)
    raise AssertionError(f"pod {name} still {phase}")


def wait_gone(node: KubeNode, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            node.get(path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return
        time.sleep(0.3)
    raise AssertionError(f"{path} still there after {timeout}s")


@pytest.fixture(scope="module")
def ns(kube_node: KubeNode) -> str:
    kube_node.kubectl("create", "namespace", NS, check=False)
    return NS


@pytest.fixture(scope="module")
def httpd(kube_node: KubeNode) -> str:
    archive, image = httpd_image()
    assert image in kube_node.import_image(archive)
    return image


def test_node_ready_with_its_address_and_the_apiserver_endpoint(kube_node: KubeNode) -> None:
    kube_node.wait_node_ready()
    node = kube_node.get(f"/api/v1/nodes/{kube_node.name}")
    assert {"type": "InternalIP", "address": kube_node.node_ip} in node["status"]["addresses"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    ep = kube_node.get("/api/v1/namespaces/default/endpoints/kubernetes")
    assert ep["subsets"][0]["addresses"][0]["ip"] == kube_node.node_ip
    assert PAUSE_IMAGE in kube_node.images()
    print(f"\nnode start: {kube_node.timings['start']:.1f}s")


def test_pause_pod_runs_on_the_pod_network(kube_node: KubeNode, ns: str) -> None:
    apply(kube_node, pod("pause", PAUSE_IMAGE))
    p = wait_pod(kube_node, "pause")
    assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(kube_node.pod_cidr)
    assert p["status"]["hostIP"] == kube_node.node_ip
    # Pods on the network, and the host still forwards only what enters on the pod bridge.
    before = kube_node.host_before["sysctls"]["net/ipv4/ip_forward"]
    assert nodehost.read_sysctl("net/ipv4/ip_forward") == before


def test_cluster_ip_services_from_the_host_and_from_pods(kube_node: KubeNode, ns: str, httpd: str) -> None:
    image = httpd
    marker = uuid.uuid4().hex
    apply(
        kube_node,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site", "namespace": ns},
         "data": {"index.html": marker}},
        pod("httpd", image, container={"ports": [{"containerPort": HTTPD_PORT}],
                                       "volumeMounts": [{"name": "site", "mountPath": "/srv"}],
                                       "readinessProbe": {"httpGet": {"path": "/index.html", "port": HTTPD_PORT},
                                                          "periodSeconds": 1}},
            volumes=[{"name": "site", "configMap": {"name": "site"}}]),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpd", "namespace": ns},
         "spec": {"selector": {"app": "httpd"}, "ports": [{"port": 80, "targetPort": HTTPD_PORT}]}},
    )
    wait_pod(kube_node, "httpd")
    svc = kube_node.get(f"/api/v1/namespaces/{ns}/services/httpd")
    ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(kube_node.service_cidr)
    deadline, body = time.monotonic() + 30, ""
    while time.monotonic() < deadline and body != marker:  # kube-proxy syncs shortly after the endpoint
        try:
            with urllib.request.urlopen(f"http://{ip}/index.html", timeout=2) as r:
                body = r.read().decode()
        except OSError:
            time.sleep(0.3)
    assert body == marker, f"no answer through {ip}:\n{kube_node.tail('kube-proxy')}"
    # From pods: the Service back onto the same bridge, and the kubernetes Service that in-cluster clients
    # (the operator) use, DNAT to the node IP, verified against the serviceaccount CA.
    kip = kube_node.get("/api/v1/namespaces/default/services/kubernetes")["spec"]["clusterIP"]
    sa_ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    apply(kube_node, pod("get-svc", image, restartPolicy="Never",
                         container={"args": ["-get", f"http://{ip}/index.html"]}),
          pod("get-api", image, restartPolicy="Never",
              container={"args": ["-get", f"https://{kip}:443/version", "-ca", sa_ca]}))
    for name, expect in (("get-svc", marker), ("get-api", '"gitVersion": "v1.34.4"')):
        phase = wait_phase(kube_node, name, ("Succeeded", "Failed"))
        logs = kube_node.kubectl("logs", "-n", ns, name).stdout  # apiserver -> kubelet on the node IP
        assert phase == "Succeeded" and expect in logs, (name, phase, logs)


def unallocated_service_ip(node: KubeNode) -> str:
    """An address of the Service range that no Service holds. The allocator hands out addresses at random
    from the upper part of the range first (KEP-3070: the lowest max(16, size/16) are kept for Services that
    ask for one), so the top address was once taken by a Service of this suite, which answered the probe;
    the low band minus what is allocated stays free while the test runs (tests run one at a time)."""
    net = ipaddress.ip_network(node.service_cidr)
    held = {ip for svc in node.get("/api/v1/services")["items"]
            for ip in svc["spec"].get("clusterIPs") or [svc["spec"].get("clusterIP")] if ip}
    static_band = min(max(16, net.num_addresses // 16), 256)
    free = [str(net[i]) for i in range(static_band - 1, 1, -1) if str(net[i]) not in held]
    assert free, f"every address of the static band of {net} is held: {sorted(held)}"
    return free[0]


def test_pods_cannot_forward_off_their_bridge(kube_node: KubeNode, ns: str, httpd: str) -> None:
    """An unallocated Service IP is routed to the node's dummy link: the guard drops what a pod sends there
    (and would drop it towards any other link)."""
    def dropped() -> int:
        out = nodehost.sh("iptables", "-t", "mangle", "-L", nodehost.GUARD, "-v", "-x", "-n").stdout
        return sum(int(line.split()[0]) for line in out.splitlines() if " DROP " in f" {line} ")

    before = dropped()
    unused = unallocated_service_ip(kube_node)
    apply(kube_node, pod("escape", httpd, restartPolicy="Never",
                         container={"args": ["-get", f"http://{unused}/", "-timeout", "2s"]}))
    assert wait_phase(kube_node, "escape", ("Succeeded", "Failed")) == "Failed"
    assert dropped() > before


def test_oci_archive_import(kube_node: KubeNode, tmp_path: Path) -> None:
    archive = write_image_tar(tmp_path / "oci.tar", "localhost/livenexus-oci-test:1",
                              {"/pause": pause_binary().read_bytes()}, ["/pause"], fmt="oci")
    assert kube_node.import_image(archive) == ["localhost/livenexus-oci-test:1"]
    assert "localhost/livenexus-oci-test:1" in kube_node.images()


def test_image_pulls_never_leave_the_machine(kube_node: KubeNode, ns: str) -> None:
    apply(kube_node, pod("pull", "example.invalid/nothing:1", container={"imagePullPolicy": "Always"}))
    deadline, msg = time.monotonic() + 30, ""
    while time.monotonic() < deadline and "127.0.0.1:9" not in msg:
        statuses = kube_node.get(f"/api/v1/namespaces/{ns}/pods/pull")["status"].get("containerStatuses", [])
        msg = str(statuses[0]["state"].get("waiting", {}).get("message", "")) if statuses else ""
        time.sleep(0.3)
    assert "proxyconnect tcp: dial tcp 127.0.0.1:9" in msg, msg
    kube_node.kubectl("delete", "pod", "pull", "-n", ns, "--wait=false")


def test_pod_deletion_cleans_up(kube_node: KubeNode, ns: str) -> None:
    apply(kube_node, pod("doomed", PAUSE_IMAGE))
    uid = wait_pod(kube_node, "doomed")["metadata"]["uid"]
    netns = kube_node.workdir / "containerd" / "state" / "io.containerd.grpc.v1.cri" / "netns"
    before_netns = set(os.listdir(netns))
    kube_node.kubectl("delete", "pod", "doomed", "-n", ns, "--wait=false")
    wait_gone(kube_node, f"/api/v1/namespaces/{ns}/pods/doomed")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mounts = [m for m in nodehost.mounts_under(kube_node.workdir) if uid in m]
        cgroups = [p for d in nodehost.cgroup_dirs() for p in d.rglob(f"*{uid}*")]
        if not mounts and not cgroups and len(set(os.listdir(netns))) < len(before_netns):
            break
        time.sleep(0.3)
    assert not mounts and not cgroups, (mounts, cgroups)
    assert len(set(os.listdir(netns))) == len(before_netns) - 1


def test_crash_then_restart_then_stop_leaves_nothing(kube_node: KubeNode, ns: str) -> None:
    """A run killed outright is cleaned up by the next start; a stop (twice) returns the host to its state
    before the session, and the node comes back for whatever test runs next."""
    apply(kube_node, pod("survivor", PAUSE_IMAGE))
    wait_pod(kube_node, "survivor")
    for pid in nodehost.our_pids(kube_node.workdir):
        os.kill(pid, signal.SIGKILL)
    assert kube_node.cp is not None
    for p in [*kube_node.procs.values(), *kube_node.cp.procs.values()]:
        p.wait(10)
    kube_node.cp = None
    assert nodehost.link_exists(nodehost.BRIDGE)  # the crash left the host dirty
    kube_node.start()
    restart = kube_node.timings["start"]
    kube_node.stop()
    stop = kube_node.timings["stop"]
    kube_node.stop()
    assert kube_node.leftovers() == []
    kube_node.start()
    print(f"\nrestart after crash: {restart:.1f}s, stop: {stop:.1f}s, warm start: {kube_node.timings['start']:.1f}s")
    assert kube_node.timings["start"] < 60
