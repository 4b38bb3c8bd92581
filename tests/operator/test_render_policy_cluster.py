"""The room policy on the real control plane: the operator (as the chart's ServiceAccount) refuses rooms that
name a Secret which did not opt in or a LiveKit URL outside the policy, with a condition and no worker."""

from __future__ import annotations

import pytest

from tests.operator.clusterlib import (
    CREDENTIALS,
    Cluster,
    Scene,
    apply,
    condition,
    deployment,
    get_room,
    reasons,
    room,
    status_of,
    wait_for,
)

pytestmark = [pytest.mark.kube, pytest.mark.slow]

KEYS = {**CREDENTIALS, "db-root-password": "hunter2"}


def _ready(cluster: Cluster, ns: str, name: str, reason: str) -> dict[str, object]:
    return wait_for(lambda: (c := condition(get_room(cluster, ns, name), "Ready")).get("reason") == reason and c,
                    30, f"Ready reason {reason} on {name}")


def test_unlabelled_secret_is_refused_until_it_opts_in(scene: Scene) -> None:
    cluster, ns = scene.cluster, scene.ns
    scene.credentials("app-secrets", labelled=False, **KEYS)
    with scene.operator():
        apply(cluster, room(ns, "exfil", secret="app-secrets"))
        ready = _ready(cluster, ns, "exfil", "SecretNotAllowed")
        assert ready["status"] == "False"
        message = str(ready["message"])
        assert "livenexus.io/credentials=true" in message
        # Nothing about the refused Secret's content reaches the room's status.
        assert "db-root-password" not in message and "api-key" not in message
        assert status_of(cluster, ns, "exfil")["phase"] == "Error"
        wait_for(lambda: reasons(cluster, ns, "exfil").get("SecretNotAllowed") == "Warning", 15, "Warning event")
        assert deployment(cluster, ns, "exfil") is None

        # The owner opts the Secret in: the retry creates the worker.
        scene.credentials("app-secrets", **KEYS)
        wait_for(lambda: deployment(cluster, ns, "exfil"), 30, "deployment once the Secret is labelled")
        _ready(cluster, ns, "exfil", "WorkerUnavailable")


def test_livekit_url_outside_the_policy_is_refused(scene: Scene) -> None:
    cluster, ns = scene.cluster, scene.ns
    scene.credentials(**KEYS)
    with scene.operator():
        # ws:// is allowed to 127.0.0.1 only (the release's policy); not to another host, even a private one.
        for name, url in (("plain-ws", "ws://10.1.2.3:7880"), ("userinfo", "wss://127.0.0.1@attacker.test")):
            apply(cluster, room(ns, name, livekit={"url": url, "credentialsSecretRef": {"name": "lk"}}))
        for name in ("plain-ws", "userinfo"):
            ready = _ready(cluster, ns, name, "LiveKitUrlNotAllowed")
            assert ready["status"] == "False"
            wait_for(lambda n=name: reasons(cluster, ns, n).get("LiveKitUrlNotAllowed") == "Warning", 15,
                     f"Warning event on {name}")
        # A TLS URL (any host by default) with the same Secret is fine: the refusals were about the URLs.
        apply(cluster, room(ns, "tls", livekit={"url": "wss://livekit.example.test",
                                                "credentialsSecretRef": {"name": "lk"}}))
        wait_for(lambda: deployment(cluster, ns, "tls"), 30, "deployment of the wss:// room")
        assert deployment(cluster, ns, "plain-ws") is None and deployment(cluster, ns, "userinfo") is None
        # Changing a refused room's URL to an allowed one lets it through.
        cluster.run("patch", "troom", "plain-ws", "-n", ns, "--type", "merge",
                    "-p", '{"spec":{"livekit":{"url":"ws://127.0.0.1:7880"}}}')
        wait_for(lambda: deployment(cluster, ns, "plain-ws"), 30, "deployment after the URL was fixed")
