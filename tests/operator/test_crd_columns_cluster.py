"""`kubectl get troom` on the real control plane: the autoscaling columns read what the operator writes."""

from __future__ import annotations

import re

import pytest

from tests.operator.clusterlib import Cluster, Release, apply, room

pytestmark = [pytest.mark.kube]


def table(cluster: Cluster, *args: str) -> dict[str, str]:
    """Header → cell of a one-row ``kubectl get`` table; cells sit under their headers, an absent field is blank."""
    header, row = cluster.run("get", *args).stdout.splitlines()
    starts = [(m.start(), m.group()) for m in re.finditer(r"\S+", header)]
    ends = [s for s, _ in starts[1:]] + [len(row)]
    return {name: row[s:e].strip() for (s, name), e in zip(starts, ends, strict=True)}


def test_get_shows_cpu_and_last_decision(cluster: Cluster, release: Release, ns: str) -> None:
    apply(cluster, room(ns, "cols"))
    before = table(cluster, "troom", "-n", ns, "cols")
    assert before["NAME"] == "cols" and before["CPU"] == before["SCALED"] == ""  # never autoscaled
    # What the operator writes after a resize (no operator runs here, so the admin writes it the same way).
    cluster.call("PATCH", f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms/cols/status",
                 body={"status": {"autoscaling": {
                     "enabled": True, "cpu": "1500m", "desiredCpu": "1500m", "minCpu": "500m", "maxCpu": "2",
                     "lastDecision": {"action": "Up", "fromCpu": "1", "toCpu": "1500m",
                                      "reason": "final p95 2.1 s > 1.5 s", "time": "2026-01-01T00:00:00Z"}}}},
                 content_type="application/merge-patch+json")
    cols = table(cluster, "troom", "-n", ns, "cols")
    assert cols["CPU"] == "1500m" and cols["SCALED"] == "Up"
    assert "SCALED-TO" not in cols  # only with -o wide: the default table stays narrow
    wide = table(cluster, "troom", "-n", ns, "cols", "-o", "wide")
    assert wide["SCALED-TO"] == "1500m" and wide["SCALED-AT"].endswith("d")  # an age, in days since 2026-01-01
