"""spec.sinks on the real control plane: the CRD defaults and validates it, and the operator (as the chart's
ServiceAccount) renders a webhook only once its signing-key Secret opted in."""

from __future__ import annotations

import pytest
import yaml

from livenexus_common.sinks import SinkEnv
from tests.operator.clusterlib import Cluster, Release, Scene, apply, condition, deployment, get_room, room, wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

HOOK = {"url": "http://127.0.0.1:8080/hook", "secretRef": {"name": "hook"}}
KEY = {"hmac-key": "x" * 32}


def test_the_crd_defaults_sinks_and_refuses_a_url_with_user_info(cluster: Cluster, release: Release,
                                                                  ns: str) -> None:
    apply(cluster, room(ns, "hooked", sinks={"webhook": HOOK, "file": {}}))
    sinks = (get_room(cluster, ns, "hooked") or {})["spec"]["sinks"]
    assert sinks["webhook"]["secretRef"]["key"] == "hmac-key"
    assert (sinks["webhook"]["timeoutSeconds"], sinks["webhook"]["maxQueue"], sinks["file"]["enabled"]) == (
        5, 1000, False)
    bad = room(ns, "bad", sinks={"webhook": {**HOOK, "url": "https://u:p@hooks.example.com/x"}})
    proc = cluster.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0 and "spec.sinks.webhook.url" in proc.stderr
    assert get_room(cluster, ns, "bad") is None


def test_the_signing_key_secret_must_opt_in_before_the_worker_gets_it(scene: Scene) -> None:
    cluster, ns = scene.cluster, scene.ns
    scene.credentials()
    scene.credentials("hook", labelled=False, **KEY)
    with scene.operator():
        apply(cluster, room(ns, "hooked", sinks={"webhook": HOOK, "file": {"enabled": True}}))
        ready = wait_for(lambda: (c := condition(get_room(cluster, ns, "hooked"), "Ready")).get("reason")
                         == "SinkSecretNotAllowed" and c, 30, "Ready reason SinkSecretNotAllowed")
        assert "livenexus.io/credentials=true" in str(ready["message"])
        assert deployment(cluster, ns, "hooked") is None

        scene.credentials("hook", **KEY)  # the owner opts it in: the retry renders the worker
        dep = wait_for(lambda: deployment(cluster, ns, "hooked"), 30, "deployment once the key Secret is labelled")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env[SinkEnv.WEBHOOK_URL]["value"] == HOOK["url"] and env[SinkEnv.WEBHOOK_ALLOW_HTTP]["value"] == "1"
    assert env[SinkEnv.WEBHOOK_SECRET]["valueFrom"]["secretKeyRef"]["name"] == "hook"
    assert env[SinkEnv.FILE_DIR]["value"] == f"/transcripts/{ns}"
    assert {"name": "transcripts", "mountPath": "/transcripts"} in c["volumeMounts"]
    assert any(v["name"] == "transcripts" and "emptyDir" in v for v in pod["volumes"])
