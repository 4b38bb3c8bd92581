"""A real Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager, on 127.0.0.1 by default.

With ``with_nodes`` it serves kubelets too (see tests/servers/node.py): the apiserver listens on ``address``,
authorizes nodes, publishes itself as the ``kubernetes`` Service endpoint and runs every default controller."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from livenexus_dev.livekit_server import REPO, free_port

from .pki import Pki, _name, _write_key


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
    argv: dict[str, list[str]] = field(default_factory=dict)
    """Command line of each component, to start it again the same way."""
    address: str = "127.0.0.1"
    """Where the apiserver binds and what it advertises."""
    port: int = 0
    """Secure port; 0 picks a free one."""
    service_cidr: str = "198.19.0.0/24"
    with_nodes: bool = False
    """Serve kubelets: Node authorizer, kubelet client cert, a real ``kubernetes`` endpoint, all controllers."""

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_port, self.etcd_peer = free_port(), free_port()
        self.port = self.port or free_port()
        self.server = f"https://{self.address}:{self.port}"
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
        self.argv[name] = args

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (etcd keeps the data), as an upgrade or a crash of the control plane would."""
        p = self.procs["kube-apiserver"]
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again with the same flags (same port, certificates and etcd) and wait for /readyz."""
        self._spawn("kube-apiserver", self.argv["kube-apiserver"])
        self._wait("kube-apiserver", "/readyz", 120)

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
        crt, key = self._serving_cert()
        self.pki.issue("admin", "livenexus-admin", org="system:masters")
        pki = self.workdir / "pki"
        if self.with_nodes:
            kcrt, kkey = self.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                        org="system:masters")
            # Pods reach the apiserver through the kubernetes Service (kube-proxy DNAT to ``address``).
            mode = ["--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                    "--kubelet-preferred-address-types=InternalIP", f"--kubelet-client-certificate={kcrt}",
                    f"--kubelet-client-key={kkey}"]
            controllers = "*"
        else:
            mode = ["--authorization-mode=RBAC", "--endpoint-reconciler-type=none"]
            controllers = "garbagecollector,namespace,deployment,replicaset,serviceaccount,serviceaccount-token"
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
            f"--bind-address={self.address}", f"--advertise-address={self.address}", f"--secure-port={self.port}",
            f"--cert-dir={pki}", f"--tls-cert-file={crt}", f"--tls-private-key-file={key}",
            f"--client-ca-file={self.pki.ca_path}", *mode,
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--enable-priority-and-fairness=false", "--profiling=false", "--allow-privileged=false",
        ])
        self._wait("kube-apiserver", "/readyz", 120)
        self._write_kubeconfig()
        self._spawn("kube-controller-manager", [
            self.tools["LIVENEXUS_KUBE_CONTROLLER_MANAGER"], f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
            f"--controllers={controllers}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={self.pki.ca_path}",
            "--use-service-account-credentials=false", "--concurrent-gc-syncs=5",
            f"--flex-volume-plugin-dir={self.workdir / 'volume-plugins'}",  # default is under /usr/libexec
        ])
        time.sleep(0.5)
        if self.procs["kube-controller-manager"].poll() is not None:
            raise ControlPlaneError(f"kube-controller-manager exited:\n{self.tail('kube-controller-manager')}")
        self.version = json.loads(self.get("/version"))["gitVersion"]
        return self

    def _serving_cert(self) -> tuple[Path, Path]:
        """Like Pki.issue(server=True), plus the bind address and the kubernetes Service IP and names."""
        if not self.with_nodes:
            return self.pki.issue("apiserver", "kube-apiserver", server=True)
        service_ip = ipaddress.ip_address(str(next(ipaddress.ip_network(self.service_cidr).hosts())))
        ips = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(self.address), service_ip}
        names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"]
        key = ec.generate_private_key(ec.SECP256R1())
        now = self.pki._now
        cert = (
            x509.CertificateBuilder().subject_name(_name("kube-apiserver")).issuer_name(self.pki.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([*(x509.IPAddress(i) for i in sorted(ips)),
                                                        *(x509.DNSName(n) for n in names)]), critical=False)
            .sign(self.pki.ca_key, hashes.SHA256())
        )
        crt, keyp = self.workdir / "pki" / "apiserver.crt", self.workdir / "pki" / "apiserver.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(keyp, key)
        return crt, keyp

    def write_kubeconfig(self, path: Path, cert: str, server: str | None = None) -> Path:
        """A kubeconfig for the client certificate ``pki/<cert>.crt``."""
        pki = self.workdir / "pki"

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server or self.server}
    certificate-authority-data: {b64(self.pki.ca_path)}
users:
- name: admin
  user:
    client-certificate-data: {b64(pki / f'{cert}.crt')}
    client-key-data: {b64(pki / f'{cert}.key')}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
""")
        path.chmod(0o600)
        return path

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig, "admin")

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
