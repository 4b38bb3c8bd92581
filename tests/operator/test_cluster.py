"""The chart against a real etcd + kube-apiserver + kube-controller-manager: install, CRD, RBAC, Lease.

The operator's identity in these tests is a TokenRequest token of the chart's ServiceAccount, so what
is allowed is exactly what the chart's RBAC grants. (kopf's ConnectionInfo cannot carry Impersonate-*
headers; a real token is the stricter test anyway.)
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable

import aiohttp
import pytest
import yaml

from livenexus_operator import config, kube
from livenexus_operator.leader import LeaseElector
from livenexus_operator.main import run
from tests.operator.clusterlib import Cluster, Release, room, wait_for
from tests.operator.helpers import CHART, KUBE_VERSION

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def test_helm_template_validates_against_the_api_server(cluster: Cluster, release: Release) -> None:
    """Every rendered object passes server-side dry-run (schema and admission of the real API server)."""
    out = subprocess.run([cluster.helm, "template", "dry", str(CHART), "--namespace", release.namespace,
                          "--kube-version", KUBE_VERSION, "--set", "operator.watchNamespaces={default}"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    proc = cluster.run("apply", "--dry-run=server", "-f", "-", input=out)
    assert proc.stdout.count("(server dry run)") == len([d for d in yaml.safe_load_all(out) if d])


def test_crd_is_established(cluster: Cluster, release: Release) -> None:
    crd = cluster.call("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                              "transcriptionrooms.livenexus.io")
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds["Established"] == "True" and conds["NamesAccepted"] == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["troom"]
    # The operator pods exist as a Deployment of the release (no kubelet runs them here).
    dep = cluster.get("apps/v1", "Deployment", release.namespace, f"{release.name}-livenexus-operator")
    assert dep is not None and dep["spec"]["template"]["spec"]["serviceAccountName"] == release.service_account


INVALID = [
    ({"model": {"computeType": "fp16"}}, ["spec.model.computeType", "Unsupported value", "int8"]),
    ({"model": {"beamSize": 11}}, ["spec.model.beamSize", "less than or equal to 10"]),
    ({"model": {"language": "English"}}, ["spec.model.language", "should match"]),
    ({"vad": {"aggressiveness": -1}}, ["spec.vad.aggressiveness", "greater than or equal to 0"]),
    ({"vad": {"hangoverMs": "long"}}, ["spec.vad.hangoverMs", "must be of type integer"]),
    ({"suspend": "yes"}, ["spec.suspend", "must be of type boolean"]),
    ({"tiers": {"cpuHigh": 0.4, "cpuLow": 0.6}}, ["tiers.cpuLow must be lower than tiers.cpuHigh"]),
    ({"tiers": {"lagHighMs": 100, "lagLowMs": 100}}, ["tiers.lagLowMs must be lower than tiers.lagHighMs"]),
    ({"tiers": {"ladder": [{"beamSize": 2}]}}, ["spec.tiers.ladder[0].model", "Required value"]),
    ({"tiers": {"ladder": [{"model": "base", "partialModel": "tiny en"}]}},
     ["spec.tiers.ladder[0].partialModel", "should match"]),
    ({"livekit": {"credentialsSecretRef": {"name": "lk"}}}, ["spec.livekit.url", "Required value"]),
    ({"livekit": {"url": "ftp://x", "credentialsSecretRef": {"name": "lk"}}}, ["spec.livekit.url", "should match"]),
    ({"livekit": {"url": "ws://x"}}, ["spec.livekit.credentialsSecretRef", "Required value"]),
    ({"resources": {"limits": {"cpu": "lots"}}}, ["spec.resources.limits.cpu", "should match"]),
]


@pytest.mark.parametrize(("spec", "expected"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_rooms_are_rejected_with_readable_messages(cluster: Cluster, release: Release, spec: dict[
        str, object], expected: list[str]) -> None:
    body = room("default", "bad-room", **spec)
    proc = cluster.run("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert proc.returncode != 0, f"accepted: {spec}"
    for fragment in expected:
        assert fragment in proc.stderr, f"{fragment!r} not in: {proc.stderr}"
    missing = cluster.run("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(room("default", "r")),
                          check=False)
    assert missing.returncode == 0, missing.stderr  # the same object without the mistake is fine


def test_api_server_applies_the_defaults(cluster: Cluster, release: Release) -> None:
    proc = cluster.run("create", "--dry-run=server", "-o", "yaml", "-f", "-",
                       input=yaml.safe_dump(room("default", "defaults")))
    spec = yaml.safe_load(proc.stdout)["spec"]
    assert spec["model"] == {"name": "base", "computeType": "int8", "language": "en", "beamSize": 5}
    assert spec["vad"] == {"aggressiveness": 2, "hangoverMs": 250}
    assert spec["livekit"]["credentialsSecretRef"] == {"name": "lk", "apiKeyKey": "api-key",
                                                       "apiSecretKey": "api-secret"}
    assert spec["tiers"]["cpuHigh"] == 0.75 and spec["tiers"]["lagLowMs"] == 150
    assert spec["suspend"] is False


def test_service_account_is_limited_to_what_the_operator_needs(as_operator: Cluster, release: Release) -> None:
    allowed = [
        ("GET", "/apis/livenexus.io/v1alpha1/transcriptionrooms"),
        ("GET", f"/api/v1/namespaces/{release.namespace}/configmaps/{release.template_configmap}"),
    ]
    for method, path in allowed:
        kube.call(method, path)
    forbidden = [
        ("GET", "/api/v1/namespaces/default/secrets"),  # get one by name, never list
        ("GET", f"/api/v1/namespaces/{release.namespace}/configmaps"),
        ("GET", "/api/v1/namespaces/default/pods/anything"),  # pods: list only (the autoscaler)
        ("GET", "/apis/livenexus.io/v1alpha1/namespaces/default/transcriptionrooms/anything"),  # list/watch only
        ("DELETE", "/apis/apps/v1/namespaces/default/deployments/anything"),
        ("GET", f"/apis/coordination.k8s.io/v1/namespaces/{release.namespace}/leases/someone-elses"),
    ]
    for method, path in forbidden:
        with pytest.raises(kube.ApiError) as err:
            kube.call(method, path)
        assert err.value.status == 403, (method, path, err.value)


async def test_lease_gives_one_leader_and_hands_over(as_operator: Cluster, release: Release) -> None:
    def elector(identity: str) -> LeaseElector:
        return LeaseElector(release.namespace, release.lease, identity, lease_duration_s=3, renew_deadline_s=2,
                            retry_period_s=0.25)

    a, b = elector("replica-a"), elector("replica-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    stop_a = asyncio.Event()
    keeper = asyncio.create_task(a.keep(stop_a))
    # While a renews, b cannot take over even well past the lease duration.
    stop_b = asyncio.Event()
    asyncio.get_running_loop().call_later(4.0, stop_b.set)
    assert not await b.acquire(stop_b)
    stop_a.set()
    await keeper
    await a.release()
    started = time.monotonic()
    assert await b.acquire()
    assert time.monotonic() - started < 2.0, "a released lease must be taken over at once"
    lease = await kube.get("coordination.k8s.io/v1", "Lease", release.namespace, release.lease)
    assert lease["spec"]["holderIdentity"] == "replica-b"
    transitions = lease["spec"]["leaseTransitions"]
    # b now dies without releasing: a may take over only after the lease duration.
    started = time.monotonic()
    assert await a.acquire()
    assert time.monotonic() - started >= 2.5
    lease = await kube.get("coordination.k8s.io/v1", "Lease", release.namespace, release.lease)
    assert lease["spec"]["holderIdentity"] == "replica-a"
    assert lease["spec"]["leaseTransitions"] == transitions + 1
    await a.release()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_main_waits_as_standby_then_leads(as_operator: Cluster, release: Release, ns: str) -> None:
    """``run()``: standby while another replica holds the Lease, kopf only once it leads, Lease released."""
    holder = LeaseElector(release.namespace, release.lease, "other-replica", lease_duration_s=15,
                          renew_deadline_s=10, retry_period_s=0.5)
    assert await holder.acquire()
    cfg = config.OperatorConfig(
        namespace=release.namespace, watch_namespaces=(ns,), template_configmap=release.template_configmap,
        leader_election=True, lease_name=release.lease, identity="test-replica", metrics_port=_free_port(),
        metrics_host="127.0.0.1",
        liveness_port=_free_port())
    config.install(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(run(cfg, stop))
    base = f"http://127.0.0.1:{cfg.metrics_port}"

    async def get(path: str) -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession() as s, s.get(base + path) as r:
                return r.status, await r.text()
        except aiohttp.ClientError:
            return 0, ""

    async def until(path: str, pred: Callable[[tuple[int, str]], bool], what: str) -> tuple[int, str]:
        deadline = time.monotonic() + 30
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            last = await get(path)
            if pred(last):
                return last
            await asyncio.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}: {last}")

    await until("/healthz", lambda r: r[0] == 200 and "standby" in r[1], "standby health")
    _, metrics = await until("/metrics", lambda r: r[0] == 200, "metrics")
    assert "livenexus_operator_leader 0.0" in metrics
    await holder.release()
    await until("/metrics", lambda r: "livenexus_operator_leader 1.0" in r[1], "leadership")
    await until("/healthz", lambda r: r[0] == 200 and "kopf liveness" in r[1], "kopf liveness via /healthz")
    stop.set()
    assert await asyncio.wait_for(task, timeout=60) == 0
    lease = await kube.get("coordination.k8s.io/v1", "Lease", release.namespace, release.lease)
    assert not lease["spec"].get("holderIdentity"), "a cleanly stopped leader must release the Lease"


def test_wait_for_reports_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="the impossible"):
        wait_for(lambda: None, 0.3, "the impossible")
