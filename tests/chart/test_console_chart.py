"""The chart's web console (templates/console-*.yaml), rendered by the real helm binary.

Off by default; on, it is a hardened Deployment of ``livenexus-console`` from the operator image with its own
ServiceAccount that may only list TranscriptionRooms where it shows rooms. The container's environment is
fed back into the service's own config parser (and a real process), so the chart and the service cannot
drift apart. The ``kube`` tests install the chart into a real kube-apiserver and use the ServiceAccount's
token, so "least privilege" is what the API server enforces, not what a dict comparison says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from livenexus_console.cli import build_parser, config_from_args
from livenexus_console.config import ConsoleConfig
from tests.operator.helpers import CHART, KUBE_VERSION, helm_binary, helm_template

NS = "livenexus"
LK_URL = "wss://livekit.example.test"
SECRET = "lk-console"
ON = ("--set", "console.enabled=true", "--set", f"console.livekit.url={LK_URL}",
      "--set", f"console.livekit.credentialsSecretRef.name={SECRET}",
      "--set", "console.auth.mode=token", "--set", f"console.auth.tokenSecretRef.name={SECRET}")
# What the Secret holds in these tests, substituted for the secretKeyRefs when the env is parsed.
SECRET_DATA = {"api-key": "APIconsole", "api-secret": "console-secret-" + "x" * 32,
               "console-access-key": "access-" + "k" * 24}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def console_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects of the console: labelled component=console, or named after it."""
    return [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "console"
            or d["metadata"]["name"].endswith("-console")]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(console_docs(docs), kind)
    return doc


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def resolved_env(c: dict[str, Any], secret: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment as the kubelet would build it (secretKeyRefs read from ``secret``)."""
    data = SECRET_DATA if secret is None else secret
    env: dict[str, str] = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET, ref
            env[e["name"]] = data[ref["key"]]
    return env


def parsed(c: dict[str, Any], in_pod: bool = True) -> ConsoleConfig:
    """The config ``livenexus-console`` builds from the container's args and environment."""
    env = resolved_env(c)
    if in_pod:
        env["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
    return config_from_args(build_parser().parse_args(c.get("args", [])), env)


def helm_fails(*args: str) -> str:
    proc = subprocess.run([helm_binary(), "template", "x", str(CHART), "--kube-version", KUBE_VERSION, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, f"rendered: {args}"
    return proc.stderr


# --- off by default -------------------------------------------------------------------------------------


def test_off_by_default_renders_no_console_objects() -> None:
    docs = helm_template()
    assert console_docs(docs) == []
    assert all("console" not in json.dumps(d) for d in docs if d["kind"] != "ConfigMap")


def test_lint_passes_with_the_console_on_and_off() -> None:
    for extra in ((), ON, (*ON, "--set", "console.ingress.enabled=true", "--set", "console.rooms.allNamespaces=true")):
        proc = subprocess.run([helm_binary(), "lint", str(CHART), "--strict", *extra], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --- on: the objects ------------------------------------------------------------------------------------


def test_on_renders_deployment_service_account_and_namespaced_rbac() -> None:
    docs = helm_template(*ON)
    kinds = sorted(d["kind"] for d in console_docs(docs))
    assert kinds == ["Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    dep, svc, sa = one(docs, "Deployment"), one(docs, "Service"), one(docs, "ServiceAccount")
    role, binding = one(docs, "Role"), one(docs, "RoleBinding")
    for d in (dep, svc, sa, role, binding):
        assert d["metadata"]["name"] == "lnx-livenexus-console"
        assert d["metadata"]["namespace"] == NS
    # Only list, only TranscriptionRooms, only the release namespace; no cluster-wide grant for the console.
    assert role["rules"] == [{"apiGroups": ["livenexus.io"], "resources": ["transcriptionrooms"], "verbs": ["list"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}]
    assert not [d for d in by_kind(docs, "ClusterRole") + by_kind(docs, "ClusterRoleBinding")
                if "console" in d["metadata"]["name"]]
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] is False  # only the console pod opts in, and only to list rooms
    assert pod["automountServiceAccountToken"] is True
    assert pod["enableServiceLinks"] is False
    assert dep["spec"]["replicas"] == 1
    # The Service reaches the pods of this Deployment only (not the operator's).
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert svc["spec"]["selector"]["app.kubernetes.io/name"] == "livenexus-console"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert not by_kind(console_docs(docs), "Ingress")
    # The operator is untouched: still exactly one operator Deployment and ServiceAccount.
    assert [d["metadata"]["name"] for d in by_kind(docs, "Deployment")] == ["lnx-livenexus-console",
                                                                             "lnx-livenexus-operator"]


def test_console_pod_is_hardened_like_the_operator() -> None:
    docs = helm_template(*ON)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (op_dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    op_pod = op_dep["spec"]["template"]["spec"]
    assert pod["securityContext"] == op_pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    sc = c["securityContext"]
    assert sc == op_pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False and sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable path is a small /tmp.
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    assert c["resources"]["limits"]["memory"]
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_probes_port_and_command() -> None:
    docs = helm_template(*ON, "--set", "console.port=9090", "--set", "console.service.port=8081")
    c = container(docs)
    assert c["command"] == ["livenexus-console"] and "args" not in c
    assert c["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 8081
    assert parsed(c).port == 9090
    assert container(helm_template(*ON, "--set", "console.verbose=true"))["args"] == ["--verbose"]


def test_an_all_digit_tag_is_a_string_given_as_one() -> None:
    # A content-hash or date tag may be all digits: --set makes it a number, which the schema refuses (the
    # e2e install failed so on a tag "201029010109"); --set-string keeps it, leading zeros included.
    c = container(helm_template(*ON, "--set-string", "operator.image.tag=0201029010109"))
    assert c["image"] == "livenexus-operator:0201029010109"
    with pytest.raises(subprocess.CalledProcessError) as err:
        helm_template(*ON, "--set", "operator.image.tag=201029010109")
    assert "want string" in err.value.stderr


def test_image_is_the_operator_image_unless_overridden() -> None:
    c = container(helm_template(*ON))
    assert c["image"] == "livenexus-operator:0.1.0" and c["imagePullPolicy"] == "IfNotPresent"
    c = container(helm_template(*ON, "--set", "operator.image.repository=acme/op",
                                "--set", "operator.image.tag=1.2.3", "--set", "operator.image.pullPolicy=Always"))
    assert c["image"] == "acme/op:1.2.3" and c["imagePullPolicy"] == "Always"
    c = container(helm_template(*ON, "--set", "operator.image.tag=1.2.3", "--set", "console.image.tag=9.9.9"))
    assert c["image"] == "livenexus-operator:9.9.9"
    c = container(helm_template(*ON, "--set", "console.image.repository=acme/console",
                                "--set", "console.image.pullPolicy=Never"))
    assert c["image"] == "acme/console:0.1.0" and c["imagePullPolicy"] == "Never"
    docs = helm_template(*ON, "--set", "operator.imagePullSecrets[0].name=pull")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "pull"}]


# --- on: the env contract with the service ---------------------------------------------------------------


def test_env_wires_url_credentials_and_rooms_into_the_service_config() -> None:
    c = container(helm_template(*ON, "--set", "console.livekit.credentialsSecretRef.apiKeyKey=key",
                                "--set", "console.livekit.credentialsSecretRef.apiSecretKey=secret"))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"LIVEKIT_API_KEY": {"name": SECRET, "key": "key"},
                    "LIVEKIT_API_SECRET": {"name": SECRET, "key": "secret"},
                    "LIVENEXUS_CONSOLE_AUTH_TOKEN": {"name": SECRET, "key": "console-access-key"}}
    cfg = config_from_args(build_parser().parse_args([]), resolved_env(
        c, {"key": "APIk", "secret": "s" * 40, "console-access-key": "a" * 20}))
    assert (cfg.api_key, cfg.api_secret) == ("APIk", "s" * 40)
    cfg = parsed(container(helm_template(*ON)))
    assert cfg.host == "0.0.0.0" and cfg.port == 8080
    assert cfg.livekit_url == LK_URL and cfg.public_livekit_url == LK_URL
    assert (cfg.api_key, cfg.api_secret) == (SECRET_DATA["api-key"], SECRET_DATA["api-secret"])
    assert cfg.kube is True and cfg.namespace == NS and cfg.rooms == ()
    # Kube mode is explicit, not only inferred from KUBERNETES_SERVICE_HOST.
    assert parsed(container(helm_template(*ON)), in_pod=False).kube is True
    assert (cfg.token_ttl_s, cfg.rate_per_minute, cfg.burst) == (120, 6.0, 5)
    assert (cfg.trusted_proxies, cfg.proxy_hops, cfg.auth_mode) == ((), 0, "token")
    assert cfg.auth_token == SECRET_DATA["console-access-key"] and cfg.allow_microphone is False
    env = resolved_env(container(helm_template(*ON)))
    assert "LIVENEXUS_CONSOLE_DIST" not in env  # the image's own value (where it put the page) counts
    assert env["HOME"] == "/tmp"


def test_settings_reach_the_service() -> None:
    c = container(helm_template(*ON, "--set", "console.tokenTtlSeconds=300", "--set", "console.rateLimit.perMinute=30",
                                "--set", "console.rateLimit.burst=2", "--set", "console.trustedProxies.hops=1",
                                "--set", "console.staticDir=/srv/page", "--set", "console.livekit.url=http://lk:7880"))
    cfg = parsed(c)
    assert (cfg.token_ttl_s, cfg.rate_per_minute, cfg.burst, cfg.proxy_hops) == (300, 30.0, 2, 1)
    assert str(cfg.static_dir) == "/srv/page"
    assert cfg.public_livekit_url == "ws://lk:7880"


def test_rooms_of_another_namespace_get_their_role_there() -> None:
    docs = helm_template(*ON, "--set", "console.rooms.namespace=team-a")
    role, binding = one(docs, "Role"), one(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "team-a"
    assert binding["subjects"][0]["namespace"] == NS
    assert parsed(container(docs)).namespace == "team-a"


def test_all_namespaces_use_a_list_only_cluster_role() -> None:
    docs = helm_template(*ON, "--set", "console.rooms.allNamespaces=true")
    assert not by_kind(console_docs(docs), "Role") and not by_kind(console_docs(docs), "RoleBinding")
    role, binding = one(docs, "ClusterRole"), one(docs, "ClusterRoleBinding")
    assert "namespace" not in role["metadata"]
    assert role["rules"] == [{"apiGroups": ["livenexus.io"], "resources": ["transcriptionrooms"], "verbs": ["list"]}]
    assert binding["roleRef"]["kind"] == "ClusterRole" and binding["subjects"][0]["namespace"] == NS
    cfg = parsed(container(docs))
    assert cfg.kube is True and cfg.namespace == "" and cfg.all_namespaces is True


def test_a_static_room_list_needs_no_api_access() -> None:
    docs = helm_template(*ON, "--set", "console.rooms.static={demo,standup}")
    kinds = sorted(d["kind"] for d in console_docs(docs))
    assert kinds == ["Deployment", "Service", "ServiceAccount"]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    cfg = parsed(container(docs))  # even in a pod, the fixed list wins over TranscriptionRooms
    assert cfg.kube is False and cfg.rooms == ("demo", "standup")
    assert "static" in helm_fails(*ON, "--set", "console.rooms.static={demo}", "--set", "console.rooms.namespace=x")
    assert "allNamespaces" in helm_fails(*ON, "--set", "console.rooms.allNamespaces=true",
                                         "--set", "console.rooms.namespace=x")


def test_rbac_create_false_leaves_rbac_to_the_admin() -> None:
    docs = helm_template(*ON, "--set", "rbac.create=false", "--set", "console.serviceAccount.create=false",
                         "--set", "console.serviceAccount.name=own-sa")
    assert sorted(d["kind"] for d in console_docs(docs)) == ["Deployment", "Service"]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "own-sa"


def test_a_release_named_livenexus_cannot_leak_service_env_into_the_config() -> None:
    # Its Service is "livenexus-console": service links would set LIVENEXUS_CONSOLE_PORT=tcp://... in pods.
    docs = helm_template(*ON, release="livenexus")
    dep = one(docs, "Deployment")
    assert dep["metadata"]["name"] == one(docs, "Service")["metadata"]["name"] == "livenexus-console"
    assert dep["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_the_rendered_environment_starts_the_real_service() -> None:
    """``livenexus-console`` with exactly the chart's env listens on all interfaces and serves its API."""
    c = container(helm_template(*ON, "--set", "console.rooms.static={demo}"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "LIVENEXUS_", "KUBERNETES_"))}
    # Port 0: the console takes a free one and says which. A port picked here and freed before the console
    # bound it could be taken in between (a full CI run once saw the console print nothing).
    env = {**base, **resolved_env(c), "LIVENEXUS_CONSOLE_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "livenexus_console", *c.get("args", [])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("LiveNexus console: http://0.0.0.0:"):
            proc.kill()
            pytest.fail(f"the console did not say it listens on all interfaces: {line!r}; "
                        f"its stderr: {proc.stderr.read()[-2000:]}")
        port = int(line.rsplit(":", 1)[1].rstrip("/"))
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:  # the chart's console is never open
            urllib.request.urlopen(url + "/api/config", timeout=5)
        assert refused.value.code == 401
        key = {"Authorization": f"Bearer {SECRET_DATA['console-access-key']}"}
        with urllib.request.urlopen(urllib.request.Request(url + "/api/config", headers=key), timeout=5) as r:
            assert json.load(r) == {"livekitUrl": LK_URL, "rooms": ["demo"], "tokenTtlSeconds": 120, "auth": "token",
                                    "microphone": False, "agentIdentityPrefix": "livenexus-agent"}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert SECRET_DATA["api-secret"] not in err


# --- ingress ----------------------------------------------------------------------------------------------


def test_ingress_only_when_enabled() -> None:
    assert not by_kind(helm_template(*ON), "Ingress")
    assert not by_kind(helm_template("--set", "console.ingress.enabled=true"), "Ingress")  # console off
    docs = helm_template(*ON, "--set", "console.ingress.enabled=true", "--set", "console.ingress.className=nginx",
                         "--set", "console.ingress.host=console.example.test",
                         "--set", "console.ingress.annotations.cert-manager\\.io/cluster-issuer=ca",
                         "--set", "console.ingress.tls[0].secretName=console-tls",
                         "--set", "console.ingress.tls[0].hosts[0]=console.example.test")
    ing = one(docs, "Ingress")
    assert ing["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "ca"}
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"secretName": "console-tls", "hosts": ["console.example.test"]}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "console.example.test"
    (path,) = rule["http"]["paths"]
    assert path == {"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "lnx-livenexus-console", "port": {"name": "http"}}}}
    bare = one(helm_template(*ON, "--set", "console.ingress.enabled=true"), "Ingress")
    assert "host" not in bare["spec"]["rules"][0] and "tls" not in bare["spec"]
    assert "ingressClassName" not in bare["spec"]


def test_node_port_only_for_node_port_services() -> None:
    svc = one(helm_template(*ON, "--set", "console.service.type=NodePort", "--set", "console.service.nodePort=30080"),
              "Service")
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["ports"][0]["nodePort"] == 30080
    svc = one(helm_template(*ON, "--set", "console.service.nodePort=30080"), "Service")
    assert "nodePort" not in svc["spec"]["ports"][0]


def test_scheduling_values_pass_through() -> None:
    docs = helm_template(*ON, "--set", "console.nodeSelector.pool=web", "--set", "console.replicas=2",
                         "--set", "console.tolerations[0].key=web", "--set", "console.tolerations[0].operator=Exists",
                         "--set", "console.podLabels.team=a", "--set", "console.priorityClassName=low")
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    assert pod["nodeSelector"] == {"pool": "web"} and pod["tolerations"] == [{"key": "web", "operator": "Exists"}]
    assert pod["priorityClassName"] == "low"
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "a"
