"""A real Kubernetes control plane on 127.0.0.1: etcd + kube-apiserver + kube-controller-manager, no kubelet."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from livenexus_worker.devserver import REPO, free_port

from .pki import Pki


class ControlPlaneError(RuntimeError):
    """A component failed to start; the message carries its log tail."""


def tool_env() -> dict[str, str]:
    """LIVENEXUS_* binary paths from hack/install-tools.sh (builds what is missing)."""
    out = subprocess.run(["bash", str(REPO / "hack" / "install-tools.sh"), "etcd", "kube", "helm"],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise ControlPlaneError(f"hack/install-tools.sh failed:\n{out.stderr[-3000:]}")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if line.startswith("LIVENEXUS_"))


@dataclass
class KubeControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; ``kubeconfig`` is an admin (system:masters) config."""

    tools: dict[str, str] = field(default_factory=tool_env)
    """Binary paths (LIVENEXUS_ETCD, LIVENEXUS_KUBE_APISERVER, ...)."""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="livenexus-kube-")))
    """Certificates, etcd data, logs and the kubeconfig."""
    version: str = ""
    """gitVersion reported by /version once started."""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """Running components by name."""

    def __post_init__(self) -> None:
        self.etcd_port, self.etcd_peer = free_port(), free_port()
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.workdir / "admin.kubeconfig"

    @property
    def kubectl(self) -> str:
        return self.tools["LIVENEXUS_KUBECTL"]

    @property
    def helm(self) -> str:
        return self.tools["LIVENEXUS_HELM"]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, name: str, n: int = 40) -> str:
        p = self.workdir / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_path))
        ctx.load_cert_chain(str(self.workdir / "pki" / "admin.crt"), str(self.workdir / "pki" / "admin.key"))
        return ctx

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=5) as r:
            return bytes(r.read())

    def _wait(self, name: str, probe: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            try:
                if probe.startswith("http://"):
                    urllib.request.urlopen(probe, timeout=2).read()
                else:
                    self.get(probe)
                return
            except OSError:
                time.sleep(0.3)
        raise ControlPlaneError(f"{name} not ready in {timeout}s:\n{self.tail(name)}")

    def start(self) -> KubeControlPlane:
        self.pki = Pki(self.workdir / "pki")
        crt, key = self.pki.issue("apiserver", "kube-apiserver", server=True)
        self.pki.issue("admin", "livenexus-admin", org="system:masters")
        pki = self.workdir / "pki"
        self._spawn("etcd", [
            self.tools["LIVENEXUS_ETCD"], "--name", "default", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{self.etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._wait("etcd", f"http://127.0.0.1:{self.etcd_port}/health", 60)
        self._spawn("kube-apiserver", [
            self.tools["LIVENEXUS_KUBE_APISERVER"],
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={pki}", f"--tls-cert-file={crt}", f"--tls-private-key-file={key}",
            f"--client-ca-file={self.pki.ca_path}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false", "--profiling=false", "--allow-privileged=false",
        ])
        self._wait("kube-apiserver", "/readyz", 120)
        self._write_kubeconfig()
        self._spawn("kube-controller-manager", [
            self.tools["LIVENEXUS_KUBE_CONTROLLER_MANAGER"], f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
            "--controllers=garbagecollector,namespace,deployment,replicaset,serviceaccount,serviceaccount-token",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={self.pki.ca_path}",
            "--use-service-account-credentials=false", "--concurrent-gc-syncs=5",
        ])
        time.sleep(0.5)
        if self.procs["kube-controller-manager"].poll() is not None:
            raise ControlPlaneError(f"kube-controller-manager exited:\n{self.tail('kube-controller-manager')}")
        import json

        self.version = json.loads(self.get("/version"))["gitVersion"]
        return self

    def _write_kubeconfig(self) -> None:
        pki = self.workdir / "pki"

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {self.server}
    certificate-authority-data: {b64(self.pki.ca_path)}
users:
- name: admin
  user:
    client-certificate-data: {b64(pki / 'admin.crt')}
    client-key-data: {b64(pki / 'admin.key')}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
""")
        self.kubeconfig.chmod(0o600)

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        if os.environ.get("LIVENEXUS_KEEP_KUBE") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
