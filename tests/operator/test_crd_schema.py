"""Offline checks of the CRD: structural, the documented shape, and defaults that agree with the operator.

The API server's own verdict on the same file is in test_cluster.py; these run without a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from livenexus_operator.spec import COMPUTE_TYPES, RoomSpec
from livenexus_operator.status import CONDITION_TYPES, PHASES
from tests.operator.helpers import MANIFESTS, crd_schema, load_crd, room_body


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The API server's structural defaulting: fill absent fields of objects that exist, recursively."""
    if isinstance(value, dict):
        out = dict(value)
        for name, sub in (schema.get("properties") or {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(sub, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def test_identity_and_printer_columns() -> None:
    crd = load_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "transcriptionrooms.livenexus.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "TranscriptionRoom"
    assert spec["names"]["shortNames"] == ["troom"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Room", "Phase", "Model", "Latency", "CPU", "Scaled", "Scaled-To", "Scaled-At", "Age"]
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert paths["CPU"] == ".status.autoscaling.cpu"
    assert paths["Scaled"] == ".status.autoscaling.lastDecision.action"
    # The columns read fields the status schema declares (a typo'd path just prints <none>).
    status = crd_schema()["properties"]["status"]["properties"]["autoscaling"]["properties"]
    assert {"cpu", "lastDecision"} <= status.keys()
    assert {"action", "toCpu", "time"} <= status["lastDecision"]["properties"].keys()


def test_schema_is_structural() -> None:
    for path, node in walk(crd_schema()):
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            continue
        assert "type" in node, f"{path or '<root>'} has no type (not structural)"
        if "default" in node:
            # Defaults must themselves be valid against their node, or the API server refuses the CRD.
            jsonschema.validate(node["default"], node)


def test_documented_constraints() -> None:
    s = crd_schema()["properties"]["spec"]
    p = s["properties"]
    assert s["required"] == ["livekit"]
    assert p["livekit"]["required"] == ["url", "credentialsSecretRef"]
    ref = p["livekit"]["properties"]["credentialsSecretRef"]
    assert ref["required"] == ["name"]
    assert ref["properties"]["apiKeyKey"]["default"] == "api-key"
    assert ref["properties"]["apiSecretKey"]["default"] == "api-secret"
    model = p["model"]["properties"]
    assert model["computeType"]["enum"] == list(COMPUTE_TYPES)
    assert (model["beamSize"]["minimum"], model["beamSize"]["maximum"], model["beamSize"]["default"]) == (1, 10, 5)
    vad = p["vad"]["properties"]
    assert (vad["aggressiveness"]["minimum"], vad["aggressiveness"]["maximum"]) == (0, 3)
    assert (vad["hangoverMs"]["minimum"], vad["hangoverMs"]["maximum"], vad["hangoverMs"]["default"]) == (30, 5000,
                                                                                                         250)
    tiers = p["tiers"]
    rules = " ".join(r["rule"] for r in tiers["x-kubernetes-validations"])
    assert "self.cpuLow < self.cpuHigh" in rules and "self.lagLowMs < self.lagHighMs" in rules
    assert p["suspend"] == {**p["suspend"], "type": "boolean", "default": False}
    status = crd_schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(PHASES)
    conds = status["conditions"]
    assert conds["x-kubernetes-list-type"] == "map" and conds["x-kubernetes-list-map-keys"] == ["type"]
    assert conds["items"]["properties"]["type"]["enum"] == list(CONDITION_TYPES)
    for field in ("observedGeneration", "workerRef", "currentModel", "currentTier", "finalLatencyP50Ms",
                  "finalLatencyP95Ms", "realtimeFactor", "activeSpeakers"):
        assert field in status


def test_crd_defaults_equal_the_operator_defaults() -> None:
    """A minimal room defaulted by the schema must mean exactly what the operator assumes without it."""
    minimal = room_body()
    defaulted = apply_defaults(crd_schema(), minimal)
    assert defaulted["spec"]["model"] == {"name": "base", "computeType": "int8", "language": "en", "beamSize": 5}
    assert RoomSpec.from_body(defaulted) == RoomSpec.from_body(minimal)
    with_ladder = room_body(tiers={"ladder": [{"model": "base"}]})
    assert RoomSpec.from_body(apply_defaults(crd_schema(), with_ladder)) == RoomSpec.from_body(with_ladder)
    drafted = room_body(tiers={"ladder": [{"model": "base", "partialModel": "tiny.en"}]})
    assert RoomSpec.from_body(apply_defaults(crd_schema(), drafted)).effective_ladder[0].partial_model == "tiny.en"


def test_example_room_is_valid_and_bad_rooms_are_not() -> None:
    schema = crd_schema()
    example = yaml.safe_load((MANIFESTS / "examples" / "transcriptionroom.yaml").read_text())
    jsonschema.validate(example, schema)
    RoomSpec.from_body(apply_defaults(schema, example))
    bad = [
        {"model": {"computeType": "fp16"}},
        {"model": {"beamSize": 11}},
        {"vad": {"aggressiveness": 4}},
        {"vad": {"hangoverMs": "long"}},
        {"livekit": {"url": "ftp://x", "credentialsSecretRef": {"name": "s"}}},
        {"livekit": {"url": "wss://x"}},
        {"tiers": {"cpuHigh": 1.5}},
        {"tiers": {"ladder": []}},
        {"tiers": {"ladder": [{"model": "base", "partialModel": "$(evil)"}]}},
        {"model": {"language": "English"}},
        {"resources": {"limits": {"cpu": "two"}}},
    ]
    for patch in bad:
        body = room_body(**patch)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)


def test_example_secret_names_the_keys_the_crd_defaults_to() -> None:
    secret = yaml.safe_load((MANIFESTS / "examples" / "secret.yaml").read_text())
    example = yaml.safe_load((MANIFESTS / "examples" / "transcriptionroom.yaml").read_text())
    ref = example["spec"]["livekit"]["credentialsSecretRef"]
    assert secret["metadata"]["name"] == ref["name"]
    assert set(secret["stringData"]) == {ref["apiKeyKey"], ref["apiSecretKey"]} == {"api-key", "api-secret"}
