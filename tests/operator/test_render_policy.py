"""The room policy: which Secrets and LiveKit URLs a TranscriptionRoom may use (policy.py, reconcile, render)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from livenexus_operator import config, kube, reconcile
from livenexus_operator.policy import CREDENTIALS_LABEL, MAX_ENTRIES, POLICY_KEY, Approval, PolicyError, RoomPolicy
from livenexus_operator.render import render
from livenexus_operator.spec import WorkerTemplate
from tests.operator.helpers import FakeApi, approved, room_body

STRICT = RoomPolicy()
LOCAL = RoomPolicy.from_values({"livekit": {"insecureHosts": ["127.0.0.1", "*.svc.cluster.local", "lk"]}})
PINNED = RoomPolicy.from_values({"livekit": {"allowedHosts": ["livekit.example.com", "*.rtc.example.org"]}})


@pytest.mark.parametrize(("policy", "url"), [
    (STRICT, "wss://livekit.example.com"),
    (STRICT, "https://livekit.example.com:7443/rtc"),
    (STRICT, "wss://anything.example.net"),  # no allowedHosts: any host, but only over TLS
    (LOCAL, "ws://127.0.0.1:7880"),
    (LOCAL, "ws://livekit.livekit.svc.cluster.local:7880"),
    (LOCAL, "http://lk:7880"),
    (PINNED, "wss://livekit.example.com"),
    (PINNED, "wss://LiveKit.Example.com."),
    (PINNED, "wss://eu.rtc.example.org/rtc"),
])
def test_allowed_urls(policy: RoomPolicy, url: str) -> None:
    assert policy.url_problem(url) is None


@pytest.mark.parametrize(("policy", "url", "says"), [
    (STRICT, "ws://127.0.0.1:7880", "not encrypted"),
    (STRICT, "http://livekit.example.com", "not encrypted"),
    (LOCAL, "ws://10.0.0.9:7880", "not encrypted"),  # private, but not listed
    (LOCAL, "ws://attacker.example.com", "not encrypted"),
    (PINNED, "wss://attacker.example.com", "not in operator.roomPolicy.livekit.allowedHosts"),
    (PINNED, "wss://rtc.example.org", "not in"),  # "*.rtc.example.org" is the names under it only
    (PINNED, "wss://livekit.example.com.attacker.net", "not in"),
    (PINNED, "wss://evil.com\\@livekit.example.com", "not a plain"),  # WHATWG: host evil.com
    (PINNED, "wss://livekit.example.com@evil.com", "not a plain"),
    (PINNED, "wss://livekit%2eexample.com", "not a plain"),
    (PINNED, "wss://livekit.example.com:99999", "invalid port"),
    (STRICT, "ftp://livekit.example.com", "not a plain"),
    (STRICT, "wss://", "not a plain"),
])
def test_refused_urls_say_why(policy: RoomPolicy, url: str, says: str) -> None:
    problem = policy.url_problem(url)
    assert problem is not None and says in problem


def test_plain_ws_to_a_public_host_is_refused_even_when_listed() -> None:
    """An admin's insecureHosts entry for a public name does not make ws:// to it acceptable."""
    policy = RoomPolicy.from_values({"livekit": {"insecureHosts": ["livekit.example.com", "8.8.8.8"]}})
    for url in ("ws://livekit.example.com", "ws://8.8.8.8:7880"):
        problem = policy.url_problem(url)
        assert problem is not None and "loopback, private or in-cluster" in problem
    assert policy.url_problem("wss://livekit.example.com") is None


def test_secrets_opt_in_by_label_or_admin_list() -> None:
    assert STRICT.secret_problem("team-a", "lk", {CREDENTIALS_LABEL: "true"}) is None
    for labels in (None, {}, {CREDENTIALS_LABEL: "yes"}, {"other": "true"}):
        problem = STRICT.secret_problem("team-a", "db-password", labels)
        assert problem is not None and "kubectl label secret -n team-a db-password" in problem
    listed = RoomPolicy.from_values({"credentialSecrets": ["shared-lk", "team-b/lk"]})
    assert listed.secret_problem("any-ns", "shared-lk", {}) is None
    assert listed.secret_problem("team-b", "lk", {}) is None
    assert listed.secret_problem("team-a", "lk", {}) is not None  # "team-b/lk" is that namespace's only


@pytest.mark.parametrize("raw", [
    "just a string",
    {"livekit": ["wss://x"]},
    {"livekit": {"allowedHosts": "livekit.example.com"}},
    {"livekit": {"allowedHosts": ["wss://livekit.example.com"]}},  # a host, not a URL
    {"livekit": {"insecureHosts": ["127.0.0.1:7880"]}},
    {"livekit": {"allowedHosts": [""]}},
    {"livekit": {"allowedHosts": ["x"] * (MAX_ENTRIES + 1)}},
    {"credentialSecrets": ["Not_A_Name"]},
    {"credentialSecrets": "lk"},
])
def test_malformed_policy_is_an_error(raw: Any) -> None:
    with pytest.raises(PolicyError):
        RoomPolicy.from_values(raw)


def test_render_refuses_a_spec_other_than_the_approved_one() -> None:
    body = room_body()
    tmpl = WorkerTemplate()
    assert render(body, tmpl, approved(body)).deployment
    for other in (Approval("another-secret", "", body["spec"]["livekit"]["url"]),
                  Approval(body["spec"]["livekit"]["credentialsSecretRef"]["name"], "", "wss://elsewhere.test")):
        with pytest.raises(PolicyError, match="approved"):
            render(body, tmpl, other)




def _fake(monkeypatch: pytest.MonkeyPatch, secret_labels: dict[str, str] | None,
          policy: dict[str, Any] | None = None) -> FakeApi:
    cm = {"data": {"worker.yaml": yaml.safe_dump({"image": "reg.test/w:1"})}}
    if policy is not None:
        cm["data"][POLICY_KEY] = yaml.safe_dump(policy)
    secret = {"metadata": {"resourceVersion": "7", "labels": secret_labels or {}},
              "data": {"api-key": "aw==", "api-secret": "cw==", "db-root-password": "cA=="}}
    api = FakeApi({("ConfigMap", "tmpl"): cm, ("Secret", "lk-creds"): secret})
    monkeypatch.setattr(kube, "get", api.get)
    monkeypatch.setattr(kube, "apply", api.apply)
    config.install(config.OperatorConfig(namespace="ops", template_configmap="tmpl", metrics_port=0))
    return api


async def test_unlabelled_secret_gets_a_condition_and_no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _fake(monkeypatch, secret_labels=None)
    out = await reconcile.reconcile(room_body(), "test")
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert (out.status["phase"], ready["status"], ready["reason"]) == ("Error", "False", "SecretNotAllowed")
    assert "livenexus.io/credentials=true" in ready["message"]
    # The refused Secret's key names stay out of the room's status (the room's author may not read it).
    assert "db-root-password" not in ready["message"] and "api-key" not in ready["message"]
    assert ("apply", "Deployment") not in api.calls and ("apply", "Service") not in api.calls
    assert "SecretNotAllowed" in [e.reason for e in out.events if e.warning]


async def test_refused_url_gets_a_condition_without_reading_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _fake(monkeypatch, secret_labels={CREDENTIALS_LABEL: "true"})
    out = await reconcile.reconcile(room_body(livekit={"url": "ws://attacker.example.net:7880",
                                                       "credentialsSecretRef": {"name": "lk-creds"}}), "test")
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "LiveKitUrlNotAllowed")
    assert "ws://attacker.example.net:7880" in ready["message"]
    assert ("get", "Secret") not in api.calls and ("apply", "Deployment") not in api.calls


async def test_admitted_room_renders_with_the_secret_version(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _fake(monkeypatch, secret_labels=None, policy={"credentialSecrets": ["team-a/lk-creds"],
                                                          "livekit": {"insecureHosts": ["127.0.0.1"]}})
    monkeypatch.setattr(reconcile, "scrape_worker", _no_scrape)
    out = await reconcile.reconcile(room_body(livekit={"url": "ws://127.0.0.1:7880",
                                                       "credentialsSecretRef": {"name": "lk-creds"}}), "test")
    assert ("apply", "Deployment") in api.calls and out.problem is None
    assert out.status["phase"] == "Pending"


async def _no_scrape(*_: Any) -> None:
    return None
