"""Helpers for the tests that talk to the real control plane from ``kube_cluster``."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes.client import ApiClient, Configuration

from livenexus_operator import config, kube
from livenexus_operator.policy import CREDENTIALS_LABEL
from livenexus_operator.render import SPEC_HASH_ANNOTATION, child_name

T = TypeVar("T")


@dataclass
class Cluster:
    """The test control plane as the admin sees it."""

    kubeconfig: Path
    """Admin kubeconfig written by the fixture."""
    config: Configuration
    """Admin client configuration loaded from it."""
    kubectl: str
    """kubectl binary."""
    helm: str
    """helm binary."""

    @property
    def api(self) -> ApiClient:
        return ApiClient(self.config)

    def call(self, method: str, path: str, body: Any = None, content_type: str | None = None,
             query: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
        return kube.call(method, path, body, content_type, query, api=self.api)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return kube.call("GET", kube.object_path(api_version, kind, namespace, name), api=self.api)
        except kube.NotFound:
            return None

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl with the admin kubeconfig."""
        proc = subprocess.run([self.kubectl, "--kubeconfig", str(self.kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sa_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A real token for a ServiceAccount from the TokenRequest API."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        out = self.call("POST", path, body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                            "spec": {"expirationSeconds": seconds}})
        return str(out["status"]["token"])

    def sa_config(self, namespace: str, name: str) -> Configuration:
        """Client configuration that authenticates as the ServiceAccount (and nothing else)."""
        return kube.token_config(self.config.host, self.sa_token(namespace, name), self.config.ssl_ca_cert)


def _attr(obj: object, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value:
            return value
    return None


def binary(env: str, name: str) -> str:
    exe = os.environ.get(env) or shutil.which(name)
    if not exe:
        pytest.skip(f"{name} not found (set {env} or run hack/install-tools.sh)")
    return exe


def cluster_from_fixture(kube_cluster: object) -> Cluster:
    kubeconfig = _attr(kube_cluster, "kubeconfig", "kubeconfig_path", "admin_kubeconfig")
    assert kubeconfig, f"kube_cluster fixture exposes no kubeconfig: {kube_cluster!r}"
    cfg = Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    assert cfg.host.startswith("https://127.0.0.1:"), f"test cluster must listen on 127.0.0.1, got {cfg.host}"
    kubectl = _attr(kube_cluster, "kubectl") or binary("LIVENEXUS_KUBECTL", "kubectl")
    helm = _attr(kube_cluster, "helm") or binary("LIVENEXUS_HELM", "helm")
    return Cluster(Path(kubeconfig), cfg, str(kubectl), str(helm))


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def secret_manifest(namespace: str, name: str, labelled: bool = True, **data: str) -> dict[str, Any]:
    """A Secret; ``labelled`` opts it in as room credentials (the operator's room policy refuses it otherwise)."""
    labels = {CREDENTIALS_LABEL: "true"} if labelled else {}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def events_for(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.call("GET", f"/api/v1/namespaces/{namespace}/events",
                       query=[("fieldSelector", f"involvedObject.name={name}")])
    return list(out.get("items") or [])


UNREACHABLE = "http://127.0.0.1:1/metrics"  # nothing listens on port 1: a fast connection refusal


@dataclass
class Release:
    """The helm release under test."""

    name: str
    """Helm release name."""
    namespace: str
    """Operator namespace."""
    service_account: str
    """The operator's ServiceAccount."""
    template_configmap: str
    """The worker-template ConfigMap."""
    lease: str
    """The leader Lease name."""


@dataclass
class MetricsBoard:
    """Where the operator scrapes each worker: tests register 127.0.0.1 servers per (namespace, service)."""

    urls: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, service) → URL of /metrics."""

    def url(self, service: Mapping[str, Any], port: int) -> str:
        meta = service["metadata"]
        return self.urls.get((meta["namespace"], meta["name"]), UNREACHABLE)


def start_operator(release: Release, board: MetricsBoard, *namespaces: str) -> KopfRunner:
    """An in-process operator (use as a context manager); all namespaces unless some are given."""
    config.install(config.OperatorConfig(
        namespace=release.namespace, template_configmap=release.template_configmap, status_interval_s=1.0,
        retry_delay_s=2.0, metrics_url=board.url, leader_election=False, metrics_port=0))
    scope = [a for n in namespaces for a in ("--namespace", n)] or ["--all-namespaces"]
    return KopfRunner(["run", "--standalone", *scope, "-m", "livenexus_operator.handlers"], timeout=60)


def apply(cluster: Cluster, *objs: dict[str, Any]) -> None:
    cluster.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objs))


def room(namespace: str, name: str, secret: str = "lk", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"livekit": {"url": "ws://127.0.0.1:7880", "credentialsSecretRef": {"name": secret}}}
    body.update(spec)
    return {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionRoom",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def get_room(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    return cluster.get("livenexus.io/v1alpha1", "TranscriptionRoom", namespace, name)


def deployment(cluster: Cluster, namespace: str, room_name: str) -> dict[str, Any] | None:
    return cluster.get("apps/v1", "Deployment", namespace, child_name(room_name))


def pod_hash(dep: dict[str, Any] | None) -> str:
    meta = ((dep or {}).get("spec") or {}).get("template", {}).get("metadata") or {}
    return str((meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION, ""))


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict((get_room(cluster, namespace, name) or {}).get("status") or {})


def reasons(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """Event reason → type (Normal/Warning) for a room's events."""
    return {e["reason"]: e["type"] for e in events_for(cluster, namespace, name)}


def output_of(runner: KopfRunner) -> str:
    """The in-process operator's log tail, for assertion messages."""
    try:
        return runner.output[-6000:]
    except Exception as exc:  # the runner may not have finished
        return f"(no operator output: {exc})"


CREDENTIALS = {"api-key": "APItest", "api-secret": "not-a-real-secret"}
"""Keys of the room credentials Secret the operator tests give their rooms (nothing checks them: no LiveKit)."""


@dataclass
class Scene:
    """Where an operator test on the real control plane starts: the chart installed, the operator's client
    pointed at the chart's ServiceAccount, a fresh "restricted" namespace and the board of worker metrics."""

    cluster: Cluster
    """The admin's view (the operator's own client is configured separately, as the ServiceAccount)."""
    release: Release
    """The helm release under test."""
    ns: str
    """The test's own namespace for rooms and Secrets."""
    board: MetricsBoard
    """Where the in-process operator scrapes each worker."""

    def credentials(self, name: str = "lk", labelled: bool = True, **data: str) -> dict[str, Any]:
        """Apply a room credentials Secret in ``ns`` (``data`` or :data:`CREDENTIALS`); returns its manifest."""
        secret = secret_manifest(self.ns, name, labelled, **(data or CREDENTIALS))
        apply(self.cluster, secret)
        return secret

    @contextlib.contextmanager
    def operator(self, all_namespaces: bool = False) -> Iterator[KopfRunner]:
        """The in-process operator for the block (watching ``ns`` only, unless ``all_namespaces``); once the block
        is done it must have stopped cleanly (its log tail is the failure message)."""
        with start_operator(self.release, self.board, *(() if all_namespaces else (self.ns,))) as runner:
            yield runner
        assert runner.exit_code == 0, output_of(runner)
