"""spec.sinks through the operator: CRD validation, admission under the room policy (URL and signing-key
Secret), and the worker environment and volume it renders, read back by the worker's own settings."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from livenexus_common.sinks import SINK_ENV, SinkEnv
from livenexus_operator import config, kube, reconcile
from livenexus_operator.policy import CREDENTIALS_LABEL, POLICY_KEY, Approval, PolicyError
from livenexus_operator.render import SINK_SECRET_ANNOTATION, render
from livenexus_operator.spec import RoomSpec, SpecError, WorkerTemplate
from livenexus_worker.room.sinks import SinkSettings
from tests.operator.helpers import FakeApi, crd_schema, room_body


def kubelet_env(env: list[dict[str, Any]], secrets: dict[str, str]) -> dict[str, str]:
    """What the kubelet hands the container: plain values, secretKeyRefs resolved from ``secrets``."""
    return {e["name"]: e["value"] if "value" in e else secrets[e["valueFrom"]["secretKeyRef"]["key"]] for e in env}


HOOK = {"url": "https://hooks.example.com/lnx", "secretRef": {"name": "hook-key"}}
TEMPLATE = WorkerTemplate.from_values({"image": "reg.test/w:1"})


def approval(body: dict[str, Any], version: str = "3") -> Approval:
    lk = body["spec"]["livekit"]
    hook = body["spec"].get("sinks", {}).get("webhook")
    return Approval(lk["credentialsSecretRef"]["name"], "", lk["url"],
                    (hook["secretRef"]["name"], version, hook["url"]) if hook else ("", "", ""))


def container(body: dict[str, Any], template: WorkerTemplate = TEMPLATE) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = render(body, template, approval(body)).deployment["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    return pod, c


def test_crd_accepts_sinks_and_refuses_user_info_and_other_schemes() -> None:
    schema = crd_schema()
    jsonschema.validate(room_body(sinks={"webhook": HOOK, "file": {"enabled": True}}), schema)
    for url in ("https://user:pw@hooks.example.com/x", "ftp://hooks.example.com/", "https://a\\@b/"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(room_body(sinks={"webhook": {**HOOK, "url": url}}), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(room_body(sinks={"webhook": {"url": HOOK["url"]}}), schema)  # no key, no webhook


def test_no_sinks_renders_nothing_of_them() -> None:
    pod, c = container(room_body())
    assert not {e["name"] for e in c["env"]} & SINK_ENV
    assert "transcripts" not in {v["name"] for v in pod["spec"]["volumes"]}


def test_webhook_and_file_render_and_the_worker_reads_them_back() -> None:
    body = room_body(sinks={"webhook": {**HOOK, "timeoutSeconds": 2.5, "maxQueue": 50}, "file": {"enabled": True}})
    tmpl = WorkerTemplate.from_values({"image": "reg.test/w:1", "transcripts": {"pvc": "transcripts",
                                                                                   "maxFileBytes": 1 << 20}})
    pod, c = container(body, tmpl)
    env = {e["name"]: e for e in c["env"]}
    assert env[SinkEnv.WEBHOOK_SECRET]["valueFrom"]["secretKeyRef"] == {"name": "hook-key", "key": "hmac-key",
                                                                         "optional": False}
    assert SinkEnv.WEBHOOK_ALLOW_HTTP not in env
    assert {"name": "transcripts", "persistentVolumeClaim": {"claimName": "transcripts"}} in pod["spec"]["volumes"]
    assert {"name": "transcripts", "mountPath": "/transcripts"} in c["volumeMounts"]
    assert pod["metadata"]["annotations"][SINK_SECRET_ANNOTATION] == "3"  # a new key rolls the pod
    s = SinkSettings.from_env(kubelet_env([e for e in c["env"] if e["name"] in SINK_ENV],
                                          {"hmac-key": "k" * 32}))
    assert (s.webhook_url, s.webhook_key, s.webhook_timeout_s, s.webhook_max_queue) == (
        HOOK["url"], b"k" * 32, 2.5, 50)
    assert (s.file_dir, s.file_max_bytes) == ("/transcripts/team-a", 1 << 20)


def test_without_a_pvc_the_file_goes_to_a_bounded_empty_dir() -> None:
    pod, _c = container(room_body(sinks={"file": {"enabled": True}}))
    assert {"name": "transcripts", "emptyDir": {"sizeLimit": "1Gi"}} in pod["spec"]["volumes"]


def test_http_is_passed_on_as_admitted_and_extra_env_cannot_shadow_the_sinks() -> None:
    body = room_body(sinks={"webhook": {**HOOK, "url": "http://receiver.team-a.svc:8080/t"}})
    tmpl = WorkerTemplate.from_values({"image": "reg.test/w:1", "extraEnv": [
        {"name": SinkEnv.WEBHOOK_URL, "value": "https://attacker.example.net/"},
        {"name": SinkEnv.WEBHOOK_ALLOW_HTTP, "value": "1"}]})
    _pod, c = container(body, tmpl)
    urls = [e["value"] for e in c["env"] if e["name"] == SinkEnv.WEBHOOK_URL]
    assert urls == ["http://receiver.team-a.svc:8080/t"]
    assert [e["value"] for e in c["env"] if e["name"] == SinkEnv.WEBHOOK_ALLOW_HTTP] == ["1"]


def test_an_unapproved_webhook_is_not_rendered() -> None:
    body = room_body(sinks={"webhook": HOOK})
    lk = body["spec"]["livekit"]
    with pytest.raises(PolicyError, match="not approved"):
        render(body, TEMPLATE, Approval(lk["credentialsSecretRef"]["name"], "", lk["url"]))
    other = copy.deepcopy(body)
    other["spec"]["sinks"]["webhook"]["url"] = "https://elsewhere.example.com/"
    with pytest.raises(PolicyError, match="not approved"):
        render(other, TEMPLATE, approval(body))


@pytest.mark.parametrize("sinks", [
    {"webhook": {**HOOK, "url": "https://u@hooks.example.com/"}},
    {"webhook": {**HOOK, "maxQueue": 0}},
    {"webhook": {"url": HOOK["url"]}},
    {"file": {"enabled": "yes"}},
    "everything",
])
def test_bad_sinks_are_a_spec_error(sinks: Any) -> None:
    with pytest.raises(SpecError):
        RoomSpec.from_body(room_body(sinks=sinks))


def _fake(monkeypatch: pytest.MonkeyPatch, hook_labels: dict[str, str] | None,
          policy: dict[str, Any] | None = None) -> FakeApi:
    cm = {"data": {"worker.yaml": yaml.safe_dump({"image": "reg.test/w:1"}),
                   POLICY_KEY: yaml.safe_dump(policy or {})}}
    creds = {"metadata": {"resourceVersion": "7", "labels": {CREDENTIALS_LABEL: "true"}},
             "data": {"api-key": "aw==", "api-secret": "cw=="}}
    hook = {"metadata": {"resourceVersion": "9", "labels": hook_labels or {}}, "data": {"hmac-key": "aw=="}}
    api = FakeApi({("ConfigMap", "tmpl"): cm, ("Secret", "lk-creds"): creds, ("Secret", "hook-key"): hook})
    monkeypatch.setattr(kube, "get", api.get)
    monkeypatch.setattr(kube, "apply", api.apply)
    monkeypatch.setattr(reconcile, "scrape_worker", _no_scrape)
    config.install(config.OperatorConfig(namespace="ops", template_configmap="tmpl", metrics_port=0))
    return api


async def _no_scrape(*_: Any) -> None:
    return None


def _ready(out: reconcile.Outcome) -> dict[str, Any]:
    return next(c for c in out.status["conditions"] if c["type"] == "Ready")


async def test_a_signing_key_secret_not_marked_for_use_refuses_the_room(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _fake(monkeypatch, hook_labels=None)
    out = await reconcile.reconcile(room_body(sinks={"webhook": HOOK}), "test")
    assert (_ready(out)["status"], _ready(out)["reason"]) == ("False", "SinkSecretNotAllowed")
    assert ("apply", "Deployment") not in api.calls


async def test_a_plain_http_webhook_off_the_admins_list_refuses_the_room(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _fake(monkeypatch, hook_labels={CREDENTIALS_LABEL: "true"})
    body = room_body(sinks={"webhook": {**HOOK, "url": "http://attacker.example.net/t"}})
    out = await reconcile.reconcile(body, "test")
    assert (_ready(out)["reason"], out.problem is not None) == ("SinkUrlNotAllowed", True)
    assert ("apply", "Deployment") not in api.calls


async def test_an_admitted_webhook_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, hook_labels=None, policy={"credentialSecrets": ["team-a/hook-key"],
                                                 "livekit": {"insecureHosts": ["receiver.team-a.svc"]}})
    applied: list[dict[str, Any]] = []

    async def apply(obj: dict[str, Any]) -> dict[str, Any]:
        applied.append(obj)
        return obj

    monkeypatch.setattr(kube, "apply", apply)
    body = room_body(sinks={"webhook": {**HOOK, "url": "http://receiver.team-a.svc/t"}, "file": {"enabled": True}})
    out = await reconcile.reconcile(body, "test")
    assert out.problem is None
    (dep,) = [o for o in applied if o["kind"] == "Deployment"]
    assert dep["spec"]["template"]["metadata"]["annotations"][SINK_SECRET_ANNOTATION] == "9"
