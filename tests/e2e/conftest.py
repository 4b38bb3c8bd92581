"""The chart installed once per session into the e2e target, with a livekit-server the pods can reach."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from livenexus_dev.livekit_server import LiveKitServer

from .target import Target, existing_cluster_from_env, wait_for

REPO_CHART = "charts/livenexus"
NAMESPACE = "livenexus-e2e"
RELEASE = "lnx"
SECRET = "livekit-credentials"
CONSOLE_ACCESS_KEY = "e2e-console-access-key-0123456789"
"""The console's shared access key (auth mode token); the browser test types it into the page."""


@dataclass
class Installed:
    """The released chart and its surroundings."""

    target: Target
    """The cluster."""
    livekit: LiveKitServer
    """livekit-server on an address the pods reach."""
    namespace: str
    """Release namespace; rooms are created here too (the console lists only this one by default)."""
    release: str
    """Helm release name."""

    def describe(self) -> str:
        """Pods, events and operator logs, for a failure message."""
        t = self.target
        out = [t.kubectl("get", "pods,deploy,svc,troom", "-n", self.namespace, "-o", "wide", check=False).stdout,
               t.kubectl("get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False).stdout[-3000:],
               t.kubectl("logs", "-n", self.namespace, "-l", "app.kubernetes.io/component=operator", "--tail=40",
                         check=False).stdout]
        return "\n".join(out)

    def worker_logs(self, selector: str) -> str:
        """The log of every pod ``selector`` matches (the previous container's too), for a test's artifacts."""
        t = self.target
        pods = t.get("pods", "-n", self.namespace, "-l", selector)["items"]
        out = []
        for pod in pods:
            name = pod["metadata"]["name"]
            for previous in ("--previous=true", "--previous=false"):
                log = t.kubectl("logs", "-n", self.namespace, name, previous, "--timestamps", check=False).stdout
                if log:
                    out.append(f"==== {name} {previous}\n{log}")
        return "\n".join(out)


def _image_values(prefix: str, ref: str) -> list[str]:
    repo, _, tag = ref.rpartition(":")
    # --set-string: a content-hash tag can be all digits ("201029010109"), which --set makes a number that the
    # chart's schema refuses (a tag is a string; as a number a leading zero would be lost, too).
    return ["--set", f"{prefix}.repository={repo}", "--set-string", f"{prefix}.tag={tag}"]


@pytest.fixture(scope="session")
def e2e_target(request: pytest.FixtureRequest) -> Target:
    existing = existing_cluster_from_env()
    if existing is not None:
        return existing
    return local_target(request.getfixturevalue("kube_node"))


def local_target(node: Any, images: Any = None) -> Target:
    """This machine's test node (a started ``KubeNode``) as a Target, with this checkout's images imported
    (or ``images``, an ``Images`` built before)."""
    from tests.servers.images import ensure_images
    from tests.servers.nodehost import DUMMY

    images = images or ensure_images()
    for archive in (images.worker_archive, images.operator_archive):
        node.import_image(archive)
    return Target(
        kubeconfig=node.kubeconfig,
        kubectl_bin=node.tools["LIVENEXUS_KUBECTL"],
        helm_bin=node.helm,
        worker_image=images.worker_ref,
        operator_image=images.operator_ref,
        livekit_host=node.node_ip,
        livekit_interface=DUMMY,
        local_node=True,
        env=node.env,
    )


@pytest.fixture(scope="session")
def installed(e2e_target: Target) -> Iterator[Installed]:
    with install(e2e_target) as inst:
        yield inst


@contextlib.contextmanager
def install(t: Target) -> Iterator[Installed]:
    """The chart released into ``t`` with a livekit-server beside it; uninstalled on exit (also for benchmarks)."""
    lk = LiveKitServer(host=t.livekit_host, interface=t.livekit_interface).start()
    inst = Installed(t, lk, NAMESPACE, RELEASE)
    try:
        t.kubectl("create", "namespace", NAMESPACE, check=False)
        # Labelled: the operator's room policy only lets rooms use Secrets that opt in.
        t.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {
                    "name": SECRET, "namespace": NAMESPACE, "labels": {"livenexus.io/credentials": "true"}},
                 "stringData": {"api-key": lk.api_key, "api-secret": lk.api_secret,
                                "console-access-key": CONSOLE_ACCESS_KEY}})
        t.helm(
            "install", RELEASE, REPO_CHART, "--namespace", NAMESPACE, "--wait", "--timeout", "5m",
            *_image_values("operator.image", t.operator_image),
            *_image_values("worker.image", t.worker_image),
            "--set", "operator.replicas=1",
            "--set", "operator.statusIntervalSeconds=3",
            "--set", "operator.retryDelaySeconds=3",
            # The pods reach livekit-server over plain ws:// at this machine's (private) address.
            "--set-json", f"operator.roomPolicy.livekit.insecureHosts={json.dumps([t.livekit_host])}",
            # Two cores hold the operator, the console and two workers (one restarting) at these requests.
            "--set-json", 'worker.resources={"requests":{"cpu":"300m","memory":"512Mi"},'
                          '"limits":{"cpu":"2","memory":"2Gi"}}',
            # Debug logs: a failed test's worker log (Installed.worker_logs) tells each cut's story.
            "--set-json", 'worker.extraEnv=[{"name":"LIVENEXUS_LOG_LEVEL","value":"debug"}]',
            "--set", "console.enabled=true",
            "--set", f"console.livekit.url={lk.url}",
            "--set", f"console.livekit.credentialsSecretRef.name={SECRET}",
            "--set", "console.auth.mode=token", "--set", f"console.auth.tokenSecretRef.name={SECRET}",
            "--set", "console.allowMicrophone=true",  # the console test speaks through the page
        )
        yield inst
    finally:
        t.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--ignore-not-found", timeout=300) \
            if _released(t) else None
        t.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", check=False, timeout=180)
        lk.stop()


def _released(t: Target) -> bool:
    out = t.kubectl("get", "secrets", "-n", NAMESPACE, "-l", f"owner=helm,name={RELEASE}", "-o", "json", check=False)
    return out.returncode == 0 and bool(json.loads(out.stdout or "{}").get("items"))


def pod_ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds) and not pod["metadata"].get(
        "deletionTimestamp")


def wait_ready_pods(inst: Installed, selector: str, n: int = 1, timeout: float = 240) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]]:
        pods = inst.target.get("pods", "-n", inst.namespace, "-l", selector)["items"]
        ready = [p for p in pods if pod_ready(p)]
        return ready if len(ready) >= n else []

    result: list[dict[str, Any]] = wait_for(f"{n} ready pod(s) {selector}", probe, timeout, describe=inst.describe)
    return result
