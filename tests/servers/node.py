"""A real single-node Kubernetes cluster for the tests: control plane + containerd + kubelet + kube-proxy.

Networking stays on this machine: the node IP sits on a dummy link of ours, pods on a bridge of ours, the
Service range is routed to the dummy link, and a guard chain drops anything forwarded between the pod
bridge and any other link. containerd is told to use a closed loopback proxy, so a pull of any image that
is not already imported fails instead of leaving the machine. Host changes are undone by nodehost.cleanup.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import nodehost
from .kube import ControlPlaneError, KubeControlPlane, tool_env
from .nodeconfig import write_configs
from .nodeimages import PAUSE_IMAGE, pause_image

LOCK = Path("/run/livenexus-node.lock")
CNI_BIN = Path("/usr/lib/cni")
HOST_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "iptables-save",
                 "iptables-restore", "ip6tables-save", "ip6tables-restore", "umount", "gcc", "go")


class NodeUnavailable(RuntimeError):
    """This host cannot run the node (the fixture skips with this message)."""


class NodeError(RuntimeError):
    """A component failed; the message carries its log tail."""


def unavailable() -> str | None:
    """Why this host cannot run a node, or None."""
    if os.geteuid() != 0:
        return "the test node needs root (network links, iptables, mounts, cgroups)"
    missing = [b for b in HOST_BINARIES if shutil.which(b) is None]
    missing += [str(CNI_BIN / p) for p in ("bridge", "host-local", "portmap", "loopback") if not (CNI_BIN / p).exists()]
    if missing:
        return f"missing for the test node: {', '.join(missing)}"
    cg = Path("/sys/fs/cgroup")
    if not (cg / "cgroup.controllers").exists() and not (cg / "memory").is_dir():
        return "no usable cgroup hierarchy at /sys/fs/cgroup"
    if not Path("/dev/kmsg").exists():
        return "kubelet needs /dev/kmsg"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "containerd's overlayfs snapshotter needs the overlay filesystem"
    return None


def _addresses_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """This host's networks, plus every address /etc/hosts pins: on this machine kind the package mirrors
    (PyPI, Debian, Go, npm) are reached through a proxy named there, and a Service range over it would send
    image builds and installs into the node's black hole while the node is up."""
    out = nodehost.sh("ip", "-4", "-o", "addr", "show", check=False).stdout.split("\n")
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        ipaddress.ip_interface(line.split()[3]).network for line in out
        if line.strip() and line.split()[1] not in (nodehost.DUMMY, nodehost.BRIDGE)]
    for resolver in (Path("/etc/hosts"), Path("/etc/resolv.conf")):
        try:
            lines = resolver.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            for word in words[:2]:
                try:
                    addr = ipaddress.ip_address(word)
                except ValueError:
                    continue
                if not addr.is_loopback:
                    nets.append(ipaddress.ip_network(addr))
    return nets


@dataclass
class KubeNode:
    """One node named ``name`` at ``node_ip``; start with :meth:`start`, stop with :meth:`stop` (idempotent)."""

    workdir: Path = field(default_factory=lambda: Path(os.environ.get("LIVENEXUS_NODE_WORKDIR",
                                                                      "/tmp/livenexus-node")))
    # 192.0.2.0/24 is this CI machine's real uplink, so the node takes an address from the benchmarking
    # range (RFC 2544), which no network routes; pods and Services use the two other documentation ranges.
    node_ip: str = "198.18.0.2"
    pod_cidr: str = "198.51.100.0/24"
    service_cidr: str = "198.19.0.0/24"
    name: str = "livenexus-node"
    tools: dict[str, str] = field(default_factory=dict, repr=False)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: ``start``, ``stop`` of the last cycle."""
    host_before: dict[str, Any] = field(default_factory=dict, repr=False)
    """Host snapshot (chains, sysctls, ...) taken before the first start: what a stop must return to."""

    def __post_init__(self) -> None:
        self.pod_gateway = f"{next(ipaddress.ip_network(self.pod_cidr).hosts())}/{self.pod_cidr.split('/')[1]}"
        self.containerd_sock = self.workdir / "containerd" / "containerd.sock"
        self.cp: KubeControlPlane | None = None
        self._lock_fd: int | None = None

    # -- API for tests ------------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """Admin (system:masters) kubeconfig."""
        return self.workdir / "control-plane" / "admin.kubeconfig"

    @property
    def helm(self) -> str:
        return self.tools["LIVENEXUS_HELM"]

    @property
    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm subprocesses: this cluster, and their caches inside the workdir."""
        w = self.workdir
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(w / "kubectl-cache"),
                "HELM_CACHE_HOME": str(w / "helm" / "cache"), "HELM_CONFIG_HOME": str(w / "helm" / "config"),
                "HELM_DATA_HOME": str(w / "helm" / "data")}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([self.tools["LIVENEXUS_KUBECTL"], *args], capture_output=True, text=True,
                             input=input, timeout=timeout, env=self.env)
        if check and out.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
        return out

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["ctr", "--address", str(self.containerd_sock), "--namespace", "k8s.io", *args],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
        return out

    def import_image(self, archive: Path, base_name: str | None = None) -> list[str]:
        """Import a docker-archive or oci-archive tar into the node's containerd (unpacked for the kubelet);
        returns the image names. An OCI index naming its images by tag only needs ``base_name``
        (e.g. "localhost/livenexus-worker"); full names such as "localhost/x:tag" are kept as they are."""
        extra = ["--base-name", base_name] if base_name else []
        out = self.ctr("images", "import", *extra, str(archive))
        return [line.split()[1] for line in out.stdout.splitlines() if line.startswith("unpacking ")]

    def images(self) -> list[str]:
        return [line.split()[0] for line in self.ctr("images", "ls").stdout.splitlines()[1:] if line.strip()]

    def tail(self, component: str, n: int = 40) -> str:
        """Last lines of a component's log: containerd, kubelet, kube-proxy, kube-scheduler, kube-apiserver,
        kube-controller-manager, etcd."""
        for p in (self.workdir / f"{component}.log", self.workdir / "control-plane" / f"{component}.log"):
            if p.exists():
                return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
        return ""

    def get(self, path: str) -> dict[str, Any]:
        """GET an API path as admin, decoded."""
        assert self.cp is not None
        out: dict[str, Any] = json.loads(self.cp.get(path))
        return out

    def wait_node_ready(self, timeout: float = 90) -> None:
        """Ready, without the taints that keep the scheduler away, and kube-proxy programming Services."""
        deadline = time.monotonic() + timeout
        why = "not registered"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                node = self.get(f"/api/v1/nodes/{self.name}")
                ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
                taints = [t["key"] for t in node["spec"].get("taints", []) if t["effect"] != "PreferNoSchedule"]
                why = f"Ready={ready[0]['status'] if ready else '?'} taints={taints}"
                if ready and ready[0]["status"] == "True" and not taints and self._proxy_healthy():
                    return
            except OSError as e:
                why = str(e)
            time.sleep(0.3)
        raise NodeError(f"node not ready in {timeout}s ({why}):\n{self.tail('kubelet')}")

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> KubeNode:
        begin = time.monotonic()
        reason = unavailable()
        if reason:
            raise NodeUnavailable(reason)
        self.tools = self.tools or tool_env()
        missing = [k for k in ("LIVENEXUS_KUBELET", "LIVENEXUS_KUBE_PROXY", "LIVENEXUS_KUBE_SCHEDULER")
                   if not Path(self.tools.get(k, "/nonexistent")).exists()]
        if missing:
            raise NodeUnavailable(f"hack/install-tools.sh did not provide {missing}")
        self._lock()
        nodehost.cleanup(self.workdir, self.containerd_sock)  # whatever a crashed run left
        self.procs, self.cp = {}, None
        snap = nodehost.snapshot()
        if foreign := nodehost.foreign_kube_chains(snap):
            raise NodeUnavailable(f"another kube-proxy/kubelet owns iptables chains here: {foreign[:3]}")
        clash = [n for n in _addresses_in_use() if n.overlaps(ipaddress.ip_network(f"{self.node_ip}/32"))
                 or any(n.overlaps(ipaddress.ip_network(c)) for c in (self.pod_cidr, self.service_cidr))]
        if clash:
            raise NodeUnavailable(f"node/pod/Service ranges overlap this host's networks: {clash}")
        self.host_before = self.host_before or snap
        self.workdir.mkdir(parents=True)
        nodehost.STATE.write_text(json.dumps(snap))
        nodehost.setup_network(self.node_ip, self.pod_gateway, self.service_cidr)
        # Pod -> Service -> pod on the same bridge needs the bridged reply to pass conntrack (un-DNAT).
        nodehost.write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
        self._make_cgroup_root()
        write_configs(self)
        self._spawn("containerd", ["containerd", "--config", str(self.workdir / "containerd" / "config.toml")],
                    env={"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                         "NO_PROXY": f"localhost,127.0.0.1,{self.node_ip}"})
        self.cp = KubeControlPlane(tools=self.tools, workdir=self.workdir / "control-plane", address=self.node_ip,
                                   port=6443, service_cidr=self.service_cidr, with_nodes=True)
        try:
            self.cp.start()
        except ControlPlaneError as e:
            raise NodeError(str(e)) from e
        self._issue_client_certs()
        self._wait_containerd()
        self.import_image(pause_image())
        w = self.workdir
        self._spawn("kubelet", [
            self.tools["LIVENEXUS_KUBELET"], f"--config={w / 'kubelet.json'}",
            f"--kubeconfig={w / 'kubelet.kubeconfig'}", f"--hostname-override={self.name}",
            f"--node-ip={self.node_ip}", f"--root-dir={w / 'kubelet'}", f"--cert-dir={w / 'kubelet' / 'pki'}",
            "--v=1",
        ])
        self._spawn("kube-proxy", [self.tools["LIVENEXUS_KUBE_PROXY"], f"--config={w / 'kube-proxy.json'}"])
        self._spawn("kube-scheduler", [
            self.tools["LIVENEXUS_KUBE_SCHEDULER"], f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0",
        ])
        self.wait_node_ready()
        self.timings["start"] = time.monotonic() - begin
        return self

    def stop(self) -> None:
        """Pods first (kubelet unmounts and tears down their networks), then every process, then the host."""
        begin = time.monotonic()
        if self.cp is not None and self._alive("kubelet") and self.cp.procs.get("kube-apiserver"):
            self._terminate(self.cp.procs.pop("kube-controller-manager", None))  # nothing recreates pods
            self._terminate(self.procs.pop("kube-scheduler", None))
            self._delete_pods()
        for name in ("kubelet", "kube-proxy", "kube-scheduler", "containerd"):
            self._terminate(self.procs.pop(name, None))
        if self._lock_fd is not None:
            self._keep_logs()
        if self.cp is not None:
            self.cp.stop()
            self.cp = None
        if self._lock_fd is not None:  # without the lock, the state may be another session's node
            nodehost.cleanup(self.workdir, self.containerd_sock)
        self._unlock()
        self.timings["stop"] = time.monotonic() - begin

    def leftovers(self) -> list[str]:
        """What is left on the host compared with before the first start (empty after a clean stop)."""
        return nodehost.leftovers(self.workdir, self.host_before)

    # -- internals ----------------------------------------------------------------------------------------

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + float(os.environ.get("LIVENEXUS_NODE_LOCK_WAIT", "900"))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise NodeUnavailable(f"another test session holds {LOCK}") from None
                time.sleep(1)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, **(env or {})})
        log.close()

    def _alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise NodeError(f"{name} exited with {p.returncode}:\n{self.tail(name)}")

    @staticmethod
    def _terminate(p: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    def _keep_logs(self) -> None:
        """Copy component logs to $LIVENEXUS_NODE_LOGS (for CI artifacts) before the workdir goes."""
        dest = os.environ.get("LIVENEXUS_NODE_LOGS")
        if dest:
            Path(dest).mkdir(parents=True, exist_ok=True)
            for log in [*self.workdir.glob("*.log"), *self.workdir.glob("control-plane/*.log")]:
                shutil.copy(log, Path(dest) / log.name)

    def _make_cgroup_root(self) -> None:
        """kubelet wants its --cgroup-root to exist; a v1 cpuset child starts with no CPUs unless given some."""
        for root in nodehost.hierarchies():
            (root / nodehost.CGROUP).mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (root / f).exists():
                    (root / nodehost.CGROUP / f).write_text((root / f).read_text())

    def _issue_client_certs(self) -> None:
        assert self.cp is not None
        pki = self.cp.pki
        pki.issue("kubelet", f"system:node:{self.name}", org="system:nodes")
        pki.issue("kube-proxy", "system:kube-proxy")
        pki.issue("kubelet-serving", self.name, server=True)
        for name in ("kubelet", "kube-proxy"):
            self.cp.write_kubeconfig(self.workdir / f"{name}.kubeconfig", name)

    def _wait_containerd(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.containerd_sock.exists():
                try:
                    self.ctr("version", timeout=5)
                    return
                except NodeError:
                    pass
            time.sleep(0.1)
        raise NodeError(f"containerd not ready in {timeout}s:\n{self.tail('containerd')}")

    def _proxy_healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.node_ip}:10256/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _delete_pods(self, timeout: float = 60) -> None:
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false",
                     check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.get("/api/v1/pods")["items"]:
                    return
            except OSError:
                return
            time.sleep(0.3)


__all__ = ["PAUSE_IMAGE", "KubeNode", "NodeError", "NodeUnavailable", "unavailable"]
