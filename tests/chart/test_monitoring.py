"""The chart's monitoring objects: they parse, and every metric their PromQL names really exists.

Metric names are checked against the live registries (``WorkerMetrics`` and, when it exists, the
operator's metrics module), never against a list kept here, so renaming a metric without updating the
dashboard or the alerts fails this test.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

from livenexus_worker.core.tier_spec import DEFAULT_TIERS
from livenexus_worker.ops.metrics import WorkerMetrics
from tests.operator.helpers import helm_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "livenexus"
DASHBOARD = CHART / "dashboards" / "livenexus.json"
RULES = CHART / "templates" / "monitoring" / "_rules.yaml"
OPERATOR_METRICS = ROOT / "operator" / "livenexus_operator" / "metrics.py"

METRIC_RE = re.compile(r"\blivenexus_[a-zA-Z0-9_]+")
# Grafana macros are not PromQL; substitute what Grafana would before parsing.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}


# Series a family of each type exposes, even before a labelled family has its first child.
TYPE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def registry_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in TYPE_SUFFIXES.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def worker_names() -> set[str]:
    m = WorkerMetrics()
    m.set_tier(0, DEFAULT_TIERS[0])  # tier_info only has a series once a tier is set
    return registry_names(m.registry)


def operator_names() -> set[str]:
    """Names the operator exports, if it has a metrics module.

    Looked up in module-level registries, in ``*Metrics`` classes' ``registry``, and in the default REGISTRY.
    """
    if not OPERATOR_METRICS.exists():
        return set()
    mod = importlib.import_module("livenexus_operator.metrics")
    registries = [v for v in vars(mod).values() if isinstance(v, CollectorRegistry)]
    for value in list(vars(mod).values()):
        own_class = isinstance(value, type) and value.__module__ == mod.__name__
        if own_class and value.__name__.endswith("Metrics"):
            try:
                inst = value()
            except TypeError:
                continue
            reg = getattr(inst, "registry", None)
            if isinstance(reg, CollectorRegistry):
                registries.append(reg)
    registries.append(REGISTRY)
    return {n for r in registries for n in registry_names(r) if n.startswith("livenexus_operator_")}


def load_rules() -> dict[str, Any]:
    """The rule groups from the Helm partial, without Helm: drop the comment/define/end, unescape {{`…`}}."""
    text = RULES.read_text()
    text = re.sub(r"\{\{-? */\*.*?\*/ *-?\}\}", "", text, flags=re.S)
    define = r'\{\{-? *define "livenexus.monitoring.rules" *-?\}\}'
    body = re.search(define + r"(.*)\{\{-? *end *-?\}\}", text, re.S)
    assert body is not None, "rules partial lost its define block"
    inner = re.sub(r"\{\{`(.*?)`\}\}", r"\1", body.group(1), flags=re.S)
    # Whatever is left between braces is Prometheus templating inside annotations, never Helm logic.
    for action in re.findall(r"\{\{(.*?)\}\}", inner, re.S):
        assert action.strip().startswith("$"), f"Helm logic inside the rules partial: {action!r}"
    data = yaml.safe_load(inner)
    assert isinstance(data, dict)
    return data


def rule_exprs(rules: dict[str, Any]) -> list[str]:
    return [str(r["expr"]) for g in rules["groups"] for r in g["rules"]]


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))  # collapsed rows nest their panels


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in walk_panels(dash["panels"]) for t in p.get("targets", []) if t.get("expr")]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and isinstance(q, str):
            exprs.append(q)
    return exprs


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return load_rules()


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    panels = list(walk_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        if p.get("type") != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
            assert p["datasource"]["uid"] == "${datasource}", "panels must follow the datasource variable"
    var_names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "room"} <= var_names


def test_dashboard_covers_the_issue_panels(dashboard: dict[str, Any]) -> None:
    used = {n for e in dashboard_exprs(dashboard) for n in METRIC_RE.findall(e)}
    wanted = {
        "livenexus_final_latency_seconds_bucket",  # final latency p50/p95
        "livenexus_realtime_factor",
        "livenexus_frames_silence_total", "livenexus_frames_received_total",  # silence fraction
        "livenexus_tier_index",
        "livenexus_process_cpu_ratio",
        "livenexus_cpu_cores",  # CPU allotment vs use per room (autoscaling)
        "livenexus_process_rss_bytes",
        "livenexus_active_speakers",
        "livenexus_lag_seconds",
    }
    assert wanted - used == set()
    latency = [e for e in dashboard_exprs(dashboard) if "final_latency_seconds_bucket" in e]
    assert any("histogram_quantile(0.50" in e for e in latency)
    assert any("histogram_quantile(0.95" in e for e in latency)


def test_rules_alert_on_the_issue_conditions(rules: dict[str, Any]) -> None:
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    degraded = by_name["LiveNexusRoomDegraded"]
    assert "livenexus_tier_index" in degraded["expr"] and degraded["expr"].rstrip().endswith("> 0")
    assert degraded["for"] == "10m"
    latency = by_name["LiveNexusFinalLatencyHigh"]
    assert "histogram_quantile(0.95" in latency["expr"] and latency["expr"].rstrip().endswith("> 1.5")
    assert "livenexus_final_latency_seconds_bucket" in latency["expr"]
    not_ready = by_name["LiveNexusWorkerNotReady"]
    assert "livenexus_livekit_connected == 0" in not_ready["expr"]
    assert "livenexus_model_loaded == 0" in not_ready["expr"]
    assert not_ready["for"] == "5m"
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_every_referenced_metric_is_exported(dashboard: dict[str, Any], rules: dict[str, Any]) -> None:
    exported = worker_names() | operator_names()
    exprs = dashboard_exprs(dashboard) + rule_exprs(rules)
    referenced = {n for e in exprs for n in METRIC_RE.findall(e)}
    assert referenced, "no metric referenced at all?"
    assert referenced - exported == set(), f"not exported by WorkerMetrics/operator: {referenced - exported}"


def test_promql_parses(dashboard: dict[str, Any], rules: dict[str, Any]) -> None:
    promql_parser = pytest.importorskip("promql_parser")
    for expr in dashboard_exprs(dashboard) + rule_exprs(rules):
        if expr.startswith("label_values("):
            expr = expr[len("label_values("):].rsplit(",", 1)[0]  # Grafana function around a selector
        for macro, value in GRAFANA_MACROS.items():
            expr = expr.replace(macro, value)
        promql_parser.parse(expr)  # raises on a syntax error


def helm() -> str:
    """The helm the operator tests use ($LIVENEXUS_HELM, PATH, or hack/install-tools.sh's); else skip."""
    if not (CHART / "Chart.yaml").exists():
        pytest.skip("chart has no Chart.yaml yet")
    return helm_binary()


def render(*sets: str) -> list[dict[str, Any]]:
    # An explicit --kube-version: a helm built from source defaults to an old one the chart refuses.
    args = [helm(), "template", "t", str(CHART), "--namespace", "obs", "--kube-version", "1.30.0"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_helm_renders_nothing_from_monitoring_by_default() -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [d for d in render() if d["kind"] == "ConfigMap"
                and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]


def test_helm_renders_monitoring(dashboard: dict[str, Any], rules: dict[str, Any]) -> None:
    docs = render("monitoring.serviceMonitor.enabled=true", "monitoring.prometheusRule.enabled=true",
                  "monitoring.dashboard.enabled=true")
    monitors = {d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in docs
                if d["kind"] == "ServiceMonitor"}
    assert set(monitors) >= {"livenexus-worker", "livenexus-operator"}
    for name, mon in monitors.items():
        assert mon["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name
        assert [e["port"] for e in mon["spec"]["endpoints"]] == ["metrics"]
    assert monitors["livenexus-worker"]["spec"]["namespaceSelector"] == {"any": True}
    # The operator's own Service must be what the operator ServiceMonitor selects.
    (svc,) = [d for d in docs if d["kind"] == "Service"
              and d["metadata"]["labels"].get("app.kubernetes.io/name") == "livenexus-operator"]
    selector = monitors["livenexus-operator"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items()
    assert "metrics" in [p["name"] for p in svc["spec"]["ports"]]
    relabel = monitors["livenexus-worker"]["spec"]["endpoints"][0]["relabelings"]
    meta = "__meta_kubernetes_pod_annotation_livenexus_io_room"
    room_from = {"sourceLabels": [meta], "targetLabel": "room"}
    assert room_from in relabel

    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == rules
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["livenexus.json"]) == dashboard


def test_helm_pod_monitor_variant() -> None:
    docs = render("monitoring.serviceMonitor.enabled=true", "monitoring.serviceMonitor.workerPodMonitor=true",
                  "operator.watchNamespaces={team-a,team-b}")
    (pm,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
