"""Shared bits of the operator tests: paths, the helm binary, sample rooms."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from livenexus_operator import kube
from livenexus_operator.policy import Approval

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "livenexus"
CRD_FILE = CHART / "crds" / "transcriptionrooms.yaml"
MANIFESTS = ROOT / "manifests"
KUBE_VERSION = "1.31.0"


def installed_tool(var: str) -> str | None:
    """A binary hack/install-tools.sh already built (it only prints paths here; nothing is built)."""
    script = ROOT / "hack" / "install-tools.sh"
    if not script.exists():
        return None
    out = subprocess.run(["bash", str(script), "--print-env"], capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        name, _, path = line.partition("=")
        if name == var and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return None


def helm_binary() -> str:
    """$LIVENEXUS_HELM, helm on PATH, or the one hack/install-tools.sh built; skips the test otherwise."""
    exe = os.environ.get("LIVENEXUS_HELM") or shutil.which("helm") or installed_tool("LIVENEXUS_HELM")
    if not exe or not Path(exe).exists():
        pytest.skip("helm not found (set LIVENEXUS_HELM or run hack/install-tools.sh)")
    return exe


def helm_template(*args: str, namespace: str = "livenexus", release: str = "lnx") -> list[dict[str, Any]]:
    cmd = [helm_binary(), "template", release, str(CHART), "--namespace", namespace,
           "--kube-version", KUBE_VERSION, *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def load_crd() -> dict[str, Any]:
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def crd_schema() -> dict[str, Any]:
    (version,) = load_crd()["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def room_body(name: str = "standup", namespace: str = "team-a", uid: str = "0b6c3b1e-1111-2222-3333-444455556666",
              **spec: Any) -> dict[str, Any]:
    """A TranscriptionRoom as the API server would hand it to the operator (defaults not applied)."""
    base: dict[str, Any] = {
        "livekit": {"url": "wss://livekit.example.test", "credentialsSecretRef": {"name": "lk-creds"}},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": "livenexus.io/v1alpha1",
        "kind": "TranscriptionRoom",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 1},
        "spec": base,
    }


def approved(body: dict[str, Any], version: str = "") -> Approval:
    """The Approval reconcile would hand render for ``body`` once its Secret and URL passed the room policy."""
    livekit = body["spec"]["livekit"]
    return Approval(livekit["credentialsSecretRef"]["name"], version, livekit["url"])


class FakeApi:
    """kube.get/apply stand-ins recording what reconcile asked for (no server)."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.calls: list[tuple[str, str]] = []

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", kind))
        try:
            return self.objects[(kind, name)]
        except KeyError:
            raise kube.NotFound(name) from None

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", obj["kind"]))
        return obj
