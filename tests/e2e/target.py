"""Where the end-to-end tests run: this machine's own test node (the default, what CI exercises), or an existing
cluster such as kind or minikube named by environment variables.

Existing cluster (``LIVENEXUS_E2E_KUBECONFIG`` set):
  LIVENEXUS_E2E_KUBECONFIG        kubeconfig of the cluster (admin rights: the chart installs a CRD)
  LIVENEXUS_E2E_WORKER_IMAGE      worker image ref already loaded into the cluster (``kind load docker-image ...``)
  LIVENEXUS_E2E_OPERATOR_IMAGE    operator image ref, likewise
  LIVENEXUS_E2E_LIVEKIT_HOST      an address of this machine the cluster's pods can reach (e.g. kind's bridge gateway)
  LIVENEXUS_E2E_LIVEKIT_INTERFACE the interface carrying that address
Services are reached with ``kubectl port-forward`` there; on the local node through their ClusterIP (kube-proxy).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class E2EError(AssertionError):
    """A wait ran out; the message carries what was last seen."""


@dataclass
class Target:
    """A cluster the chart is installed into, and how to reach what runs in it."""

    kubeconfig: Path
    """Admin kubeconfig."""
    kubectl_bin: str
    """kubectl executable."""
    helm_bin: str
    """helm executable."""
    worker_image: str
    """Worker image ref (repository:tag) present on the node(s)."""
    operator_image: str
    """Operator image ref present on the node(s)."""
    livekit_host: str
    """Address livekit-server binds on this machine; pods reach it there."""
    livekit_interface: str
    """Interface that carries ``livekit_host``."""
    local_node: bool
    """True on this machine's own test node: ClusterIPs are routable from here through kube-proxy."""
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    """Environment of kubectl and helm (their caches)."""

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
                ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                             capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and out.returncode != 0:
            raise E2EError(f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return out

    def get(self, *args: str) -> dict[str, Any]:
        """``kubectl get ... -o json`` parsed; an object or a list."""
        doc: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return doc

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([self.helm_bin, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                             text=True, timeout=timeout, env=self.env)
        if out.returncode != 0:
            raise E2EError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                           f"{out.stderr[-3000:]}")
        return out

    @contextlib.contextmanager
    def service_url(self, namespace: str, name: str, port: int) -> Iterator[str]:
        """http://host:port of a Service port, as a client outside the cluster reaches it."""
        if self.local_node:
            ip = self.get("service", "-n", namespace, name)["spec"]["clusterIP"]
            yield f"http://{ip}:{port}"
            return
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = s.getsockname()[1]
        proc = subprocess.Popen([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", "port-forward", "-n",
                                 namespace, f"service/{name}", f"{local}:{port}", "--address", "127.0.0.1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:... -> ..."
            if "Forwarding" not in line:
                raise E2EError(f"port-forward to {namespace}/{name}: {line}")
            yield f"http://127.0.0.1:{local}"
        finally:
            proc.terminate()
            proc.wait(10)


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0,
             describe: Callable[[], str] | None = None) -> Any:
    """Call ``probe`` until it returns something truthy; on timeout fail with ``describe()``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (E2EError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    extra = describe() if describe else ""
    raise E2EError(f"{what} not reached in {timeout:.0f}s; last: {last!r}\n{extra}")


def existing_cluster_from_env() -> Target | None:
    """The kind/minikube path, when ``LIVENEXUS_E2E_KUBECONFIG`` names one."""
    kubeconfig = os.environ.get("LIVENEXUS_E2E_KUBECONFIG")
    if not kubeconfig:
        return None
    missing = [v for v in ("LIVENEXUS_E2E_WORKER_IMAGE", "LIVENEXUS_E2E_OPERATOR_IMAGE", "LIVENEXUS_E2E_LIVEKIT_HOST")
               if not os.environ.get(v)]
    if missing:
        raise E2EError(f"LIVENEXUS_E2E_KUBECONFIG is set but {', '.join(missing)} are not")
    from tests.servers.kube import tool_env

    tools = tool_env()
    return Target(
        kubeconfig=Path(kubeconfig),
        kubectl_bin=os.environ.get("LIVENEXUS_KUBECTL", tools["LIVENEXUS_KUBECTL"]),
        helm_bin=os.environ.get("LIVENEXUS_HELM", tools["LIVENEXUS_HELM"]),
        worker_image=os.environ["LIVENEXUS_E2E_WORKER_IMAGE"],
        operator_image=os.environ["LIVENEXUS_E2E_OPERATOR_IMAGE"],
        livekit_host=os.environ["LIVENEXUS_E2E_LIVEKIT_HOST"],
        livekit_interface=os.environ.get("LIVENEXUS_E2E_LIVEKIT_INTERFACE", "lo"),
        local_node=False,
    )
