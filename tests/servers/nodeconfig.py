"""Configuration files of the test node's containerd, CNI, kubelet and kube-proxy, all under its workdir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import nodehost
from .nodeimages import PAUSE_IMAGE

if TYPE_CHECKING:
    from .node import KubeNode


def _json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def containerd_toml(node: KubeNode) -> str:
    c = node.workdir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    # restrict_oom_score_adj: containers may not ask for an oom_score_adj below containerd's own.
    # netns_mounts_under_state_dir: pod network namespaces live (and get unmounted) under the workdir.
    # runc with cgroupfs: crun and the systemd driver fail on these hybrid cgroup hosts.
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{node.containerd_sock}"

[ttrpc]
  address = "{node.containerd_sock}.ttrpc"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{node.workdir / 'cni' / 'net.d'}"
  max_conf_num = 1

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "runc"
  Root = "{node.workdir / 'runc'}"
  SystemdCgroup = false
"""


def write_configs(node: KubeNode) -> None:
    w = node.workdir
    gateway = node.pod_gateway.split("/")[0]
    (w / "containerd").mkdir(parents=True, exist_ok=True)
    (w / "containerd" / "config.toml").write_text(containerd_toml(node))
    _json(w / "cni" / "net.d" / "10-livenexus.conflist", {
        "cniVersion": "1.0.0", "name": "livenexus",
        "plugins": [
            # The bridge and its gateway address exist already (nodehost.setup_network); as gateway the plugin
            # would switch on forwarding for the whole host.
            {"type": "bridge", "bridge": nodehost.BRIDGE, "isGateway": False, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(w / "cni" / "ipam"),
                      "ranges": [[{"subnet": node.pod_cidr, "gateway": gateway}]],
                      "routes": [{"dst": "0.0.0.0/0", "gw": gateway}]}},
            # snat off: hostPort traffic is never masqueraded (no route_localnet on the host either).
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
        ],
    })
    # Pods get no nameserver that could leave the machine (glibc then tries the pod's own loopback).
    (w / "resolv.conf").write_text("# livenexus test node: no DNS\n")
    pki = w / "control-plane" / "pki"
    _json(w / "kubelet.json", {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.node_ip, "port": 10250, "readOnlyPort": 0, "healthzPort": 0,
        "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{nodehost.CGROUP}", "failSwapOn": False, "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{node.containerd_sock}",
        "resolvConf": str(w / "resolv.conf"), "podLogsDir": str(w / "pod-logs"),
        "volumePluginDir": str(w / "volume-plugins"), "clusterDomain": "cluster.local",
        # The disk is shared with builds and model caches: never evict or garbage-collect test images.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "maxPods": 60, "shutdownGracePeriod": "0s",
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
    })
    _json(w / "kube-proxy.json", {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clusterCIDR": node.pod_cidr, "hostnameOverride": node.name,
        "bindAddress": node.node_ip, "healthzBindAddress": f"{node.node_ip}:10256",
        "metricsBindAddress": f"{node.node_ip}:10249",
        "clientConnection": {"kubeconfig": str(w / "kube-proxy.kubeconfig")},
        "detectLocalMode": "ClusterCIDR", "nodePortAddresses": [f"{node.node_ip}/32"],
        # Zeros leave the host's conntrack sysctls alone; no localhost NodePorts means no route_localnet.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "minSyncPeriod": "0s",
                     "syncPeriod": "30s"},
    })
