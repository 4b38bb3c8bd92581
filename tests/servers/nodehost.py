"""Host state the test node changes, and how to put it back: links, routes, iptables, sysctls, mounts, cgroups.

Everything is named so that a later run recognises what an earlier, crashed run left behind; what existed
before the run (iptables chains and nft tables, sysctl values, fixed host directories) is written to STATE
first, and cleanup only removes what is not in that snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

BRIDGE, DUMMY, CGROUP, GUARD = "lnxbr0", "lnxnode0", "livenexus", "LNX-NODE-FWD"
STATE = Path("/run/livenexus-node.json")
# kube-proxy's and kubelet's chains, the portmap plugin's, the guard; never CNI-<hash> of other runtimes.
OUR_CHAIN_PREFIXES = ("KUBE-", "LNX-", "CNI-HOSTPORT-", "CNI-DN-")
FAMILIES = ("iptables", "ip6tables")
# kubelet rewrites the kernel.* and vm.* tunables at start; the rest must simply come out as they went in.
SYSCTLS = (
    "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables", "net/ipv4/conf/all/route_localnet", "vm/overcommit_memory",
    "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
DAEMONS = frozenset({"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy",
                     "kubelet", "containerd", "containerd-shim-runc-v2", "runc"})
SHIM_SOCKETS = Path("/run/containerd/s")
CNI_RESULTS = Path("/var/lib/cni/results")
CONTAINER_LOGS = Path("/var/log/containers")
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
# Fixed paths outside the workdir that the components create whatever they are configured with: containerd
# 1.6 shim sockets, libcni's result cache, kubelet's device-plugin socket and container log symlinks.
HOST_DIRS = (SHIM_SOCKETS.parent, SHIM_SOCKETS, CNI_RESULTS.parent, CNI_RESULTS, CONTAINER_LOGS,
             DEVICE_PLUGINS.parent, DEVICE_PLUGINS)


def sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(args), capture_output=True, text=True, input=input, timeout=60)
    if check and out.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)}: {out.stderr.strip()}")
    return out


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", name).write_text(value)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def chains() -> dict[str, dict[str, list[str]]]:
    """{family: {table: [chain, ...]}} as iptables-save prints them."""
    found: dict[str, dict[str, list[str]]] = {}
    for fam in FAMILIES:
        table = ""
        for line in sh(f"{fam}-save", check=False).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                found.setdefault(fam, {})[table] = []
            elif line.startswith(":") and table:
                found[fam][table].append(line[1:].split()[0])
    return found


def nft_tables() -> list[str]:
    if shutil.which("nft") is None:
        return []
    out = sh("nft", "list", "tables", check=False).stdout
    return sorted(line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table "))


def snapshot() -> dict[str, Any]:
    return {
        "sysctls": {s: read_sysctl(s) for s in SYSCTLS},
        "chains": chains(),
        "nft_tables": nft_tables(),
        "dirs": [str(d) for d in HOST_DIRS if d.exists()],
    }


def foreign_kube_chains(snap: dict[str, Any]) -> list[str]:
    """KUBE-* chains of another kube-proxy or kubelet: ours would share their names."""
    return [f"{fam} {table} {c}" for fam, tables in snap["chains"].items() for table, cs in tables.items()
            for c in cs if c.startswith("KUBE-")]


def setup_network(node_ip: str, pod_gateway: str, service_cidr: str) -> None:
    """Node IP on a dummy link, and the pod bridge made up front, so that pod and Service ranges are routed
    to links of ours from the first moment, never along the default route."""
    # Kernels built without the dummy driver (like this CI VM's) still have ifb, which also drops all it is
    # given unless tc redirects it; an empty bridge is the last resort.
    for kind in ("dummy", "ifb", "bridge"):
        if sh("ip", "link", "add", DUMMY, "type", kind, check=False).returncode == 0:
            break
    else:
        raise RuntimeError(f"cannot create {DUMMY}: no dummy, ifb or bridge link type")
    sh("ip", "addr", "add", f"{node_ip}/32", "dev", DUMMY)
    sh("ip", "link", "set", DUMMY, "up")
    sh("ip", "route", "add", service_cidr, "dev", DUMMY, "src", node_ip)
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", pod_gateway, "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    # Only what enters on the pod bridge may be forwarded (a pod -> Service -> pod DNAT); the host's global
    # ip_forward stays as it was, which is why the CNI bridge plugin is not the gateway (it would set it).
    write_sysctl(f"net/ipv4/conf/{BRIDGE}/forwarding", "1")
    # mangle FORWARD runs before kube-proxy's filter rules (which ACCEPT masquerade-marked packets), so
    # nothing is forwarded between the pod bridge and any other link, whatever kube-proxy programs or
    # whoever else turns forwarding on.
    rules = [f"-A {GUARD} -i {BRIDGE} -o {BRIDGE} -j RETURN", f"-A {GUARD} -i {BRIDGE} -j DROP",
             f"-A {GUARD} -o {BRIDGE} -j DROP"]
    for fam in FAMILIES:
        sh(f"{fam}-restore", "--noflush", input="\n".join(["*mangle", f":{GUARD} - [0:0]", *rules,
                                                            f"-I FORWARD 1 -j {GUARD}", "COMMIT", ""]))


def _proc_info(pid: int) -> tuple[str, str]:
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe")).removesuffix(" (deleted)")
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return exe, cmd
    except OSError:
        return "", ""


def hierarchies() -> list[Path]:
    """The cgroup v2 root, or every v1 (and hybrid) hierarchy."""
    cg = Path("/sys/fs/cgroup")
    return [cg] if (cg / "cgroup.controllers").exists() else [d for d in cg.iterdir() if d.is_dir()]


def cgroup_dirs() -> list[Path]:
    """Our --cgroup-root in each hierarchy."""
    return [h / CGROUP for h in hierarchies() if (h / CGROUP).is_dir()]


def our_pids(workdir: Path) -> list[int]:
    """Our daemons (their command line names the workdir) and every process in our pod cgroups."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            exe, cmd = _proc_info(int(entry.name))
            if exe in DAEMONS and str(workdir) in cmd:
                pids.add(int(entry.name))
    for root in cgroup_dirs():
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    pids.discard(os.getpid())
    return sorted(pids)


def kill_all(workdir: Path, grace: float = 5.0) -> None:
    pids = our_pids(workdir)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
            time.sleep(0.05)
        if not pids:
            return


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def mounts_under(workdir: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].encode().decode("unicode_escape")
        if mp == str(workdir) or mp.startswith(f"{workdir}/"):
            found.append(mp)
    return found


def unmount_all(workdir: Path) -> None:
    for _ in range(5):
        mps = mounts_under(workdir)
        if not mps:
            return
        for mp in sorted(set(mps), key=len, reverse=True):
            if sh("umount", mp, check=False).returncode != 0:
                sh("umount", "-l", mp, check=False)


def _is_ours(chain: str, before: dict[str, list[str]], table: str) -> bool:
    return chain.startswith(OUR_CHAIN_PREFIXES) and chain not in before.get(table, [])


def remove_chains(snap_chains: dict[str, dict[str, list[str]]] | None) -> None:
    """Delete jumps into our chains from chains that are not ours, then flush and delete ours. Without a
    snapshot only the guard chain is known to be ours."""
    for fam in FAMILIES:
        before = (snap_chains or {}).get(fam, {})
        table, script = "", []
        ours: list[str] = []
        foreign_rules: list[str] = []
        for line in sh(f"{fam}-save", check=False).stdout.splitlines():
            if line.startswith("*"):
                table, ours, foreign_rules = line[1:], [], []
            elif line == "COMMIT" and ours:
                script += [f"*{table}", *foreign_rules, *(f"-F {c}" for c in ours), *(f"-X {c}" for c in ours),
                           "COMMIT"]
            elif line.startswith(":"):
                c = line[1:].split()[0]
                if (_is_ours(c, before, table) if snap_chains is not None else c == GUARD):
                    ours.append(c)
            elif line.startswith("-A "):
                words = shlex.split(line)
                target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")), "")
                if target in ours and words[1] not in ours:
                    foreign_rules.append("-D" + line[2:])
        if script:
            sh(f"{fam}-restore", "--noflush", input="\n".join(script) + "\n", check=False)


def remove_nft_tables(before: list[str] | None) -> None:
    """iptables-nft leaves its tables behind once used; drop those that did not exist and hold no rules."""
    if before is None or shutil.which("nft") is None:
        return
    for table in set(nft_tables()) - set(before):
        out = sh("nft", "-j", "list", "table", *table.split(), check=False)
        if out.returncode == 0 and '"rule"' not in out.stdout:
            sh("nft", "delete", "table", *table.split(), check=False)


def remove_cgroups() -> None:
    for root in cgroup_dirs():
        for _ in range(50):
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            try:
                root.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def host_files(workdir: Path, address: Path) -> list[Path]:
    """Our files in HOST_DIRS. containerd 1.6 names shim sockets sha256(address/namespace/id); libcni names
    results <network>-<sandbox id>-<ifname>; kubelet links container logs to the pod log dir."""
    state = workdir / "containerd" / "state"
    tasks = state / "io.containerd.runtime.v2.task"
    found, ids = [], set()
    for ns in tasks.iterdir() if tasks.is_dir() else []:
        for task in ns.iterdir():
            ids.add(task.name)
            found.append(SHIM_SOCKETS / hashlib.sha256(f"{address}/{ns.name}/{task.name}".encode()).hexdigest())
    sandboxes = state / "io.containerd.grpc.v1.cri" / "sandboxes"
    if sandboxes.is_dir():
        ids.update(d.name for d in sandboxes.iterdir())
    if CNI_RESULTS.is_dir():
        found += [f for f in CNI_RESULTS.iterdir()
                  if f.name.startswith("livenexus-") or any(f"-{i}-" in f.name for i in ids)]
    if CONTAINER_LOGS.is_dir():
        found += [f for f in CONTAINER_LOGS.iterdir() if f.is_symlink() and str(workdir) in os.readlink(f)]
    return [f for f in found if f.exists() or f.is_symlink()]


def remove_host_dirs(existed: list[str]) -> None:
    """The HOST_DIRS that did not exist before, if nothing but kubelet's own socket is left in them."""
    if str(DEVICE_PLUGINS) not in existed:
        (DEVICE_PLUGINS / "kubelet.sock").unlink(missing_ok=True)
    for d in sorted(HOST_DIRS, key=lambda p: len(p.parts), reverse=True):
        if str(d) not in existed:
            with contextlib.suppress(OSError):
                d.rmdir()


def cleanup(workdir: Path, containerd_sock: Path) -> None:
    """Idempotent; works after a clean stop and after a crash (then it reads STATE left by that run)."""
    state = json.loads(STATE.read_text()) if STATE.exists() else None
    kill_all(workdir)
    files = host_files(workdir, containerd_sock)
    unmount_all(workdir)
    for veth in sh("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout.splitlines():
        sh("ip", "link", "del", veth.split(":")[1].strip().split("@")[0], check=False)
    for link in (BRIDGE, DUMMY):
        if link_exists(link):
            sh("ip", "link", "del", link, check=False)
    remove_chains(state["chains"] if state else None)
    remove_nft_tables(state["nft_tables"] if state else None)
    remove_cgroups()
    for f in files:
        f.unlink(missing_ok=True)
    if state is not None:
        for name, value in state["sysctls"].items():
            if value is not None and read_sysctl(name) != value:
                write_sysctl(name, value)
        remove_host_dirs(state.get("dirs", [str(d) for d in HOST_DIRS]))
    shutil.rmtree(workdir, ignore_errors=True)
    STATE.unlink(missing_ok=True)


def leftovers(workdir: Path, snap: dict[str, Any]) -> list[str]:
    """What a finished cleanup should have removed, compared with the snapshot taken before the run."""
    found = [f"process {p} {_proc_info(p)[1][:120]}" for p in our_pids(workdir)]
    found += [f"mount {m}" for m in mounts_under(workdir)]
    found += [f"link {n}" for n in (BRIDGE, DUMMY) if link_exists(n)]
    found += [f"cgroup {d}" for d in cgroup_dirs()]
    for fam, tables in chains().items():
        found += [f"{fam} -t {t} chain {c}" for t, cs in tables.items() for c in cs
                  if _is_ours(c, snap["chains"].get(fam, {}), t)]
    found += [f"nft table {t}" for t in set(nft_tables()) - set(snap["nft_tables"])]
    found += [f"sysctl {k}={read_sysctl(k)} (was {v})" for k, v in snap["sysctls"].items() if read_sysctl(k) != v]
    found += [f"path {p}" for p in (workdir, STATE) if p.exists()]
    found += [f"path {d}" for d in HOST_DIRS if d.exists() and str(d) not in snap["dirs"]]
    found += [f"file {f}" for f in host_files(workdir, Path("/nonexistent"))]
    return found
