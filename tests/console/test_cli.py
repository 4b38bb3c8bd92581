"""``livenexus-console`` (``python -m livenexus_console``) as the demo and a pod start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from livenexus_console.cli import build_parser, config_from_args, main
from livenexus_console.config import ConfigError

from .helpers import ConsoleProcess

ENV = {"LIVEKIT_URL": "ws://127.0.0.1:7880", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "cli-secret-" + "z" * 30}


def test_serves_on_a_free_loopback_port_and_stops_on_sigterm() -> None:
    proc = ConsoleProcess(["--rooms", "demo,other"], ENV)
    try:
        assert proc.url.startswith("http://127.0.0.1:") and not proc.url.endswith(":0/")
        with urllib.request.urlopen(proc.url + "api/config", timeout=5) as r:
            assert json.load(r) == {
                "livekitUrl": ENV["LIVEKIT_URL"],
                "rooms": ["demo", "other"],
                "tokenTtlSeconds": 120,
                "auth": "none",
                "microphone": True,
                "agentIdentityPrefix": "livenexus-agent",
            }
        with urllib.request.urlopen(proc.url + "healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.proc.terminate()
        assert proc.proc.wait(15) == 0
    assert ENV["LIVEKIT_API_SECRET"] not in "".join(proc.stderr)


def test_missing_credentials_exit_2_without_echoing_secrets() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "LIVENEXUS_CONSOLE_"))}
    out = subprocess.run(
        [sys.executable, "-m", "livenexus_console", "--rooms", "demo", "--livekit-url", "ws://x:1"],
        env={**env, "LIVEKIT_API_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "LIVEKIT_API_SECRET" in out.stderr


def test_room_source_selection(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    local = config_from_args(parse(["--rooms", "a,b"]), dict(ENV))
    assert local.rooms == ("a", "b") and not local.kube and local.host == "127.0.0.1" and local.port == 8080
    ns_file = tmp_path / "namespace"
    ns_file.write_text("team-a\n")
    in_pod = {**ENV, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    pod = config_from_args(parse([]), in_pod, namespace_file=ns_file)
    assert pod.kube and pod.rooms == ()
    # A pod lists its own namespace's rooms unless every namespace is asked for explicitly.
    assert pod.namespace == "team-a" and not pod.all_namespaces
    every = config_from_args(parse(["--all-namespaces"]), in_pod, namespace_file=ns_file)
    assert every.all_namespaces and every.namespace == ""
    other = config_from_args(parse(["--namespace", "team-b"]), in_pod, namespace_file=ns_file)
    assert other.namespace == "team-b"
    with pytest.raises(ConfigError, match="all-namespaces"):  # outside a pod nothing says which namespace
        config_from_args(parse(["--kube"]), dict(ENV), namespace_file=tmp_path / "missing")
    pinned = config_from_args(parse(["--rooms", "x"]), in_pod, namespace_file=ns_file)
    assert not pinned.kube
    flags = config_from_args(
        parse(["--host", "0.0.0.0", "--port", "9000", "--token-ttl", "300", "--burst", "3", "--kube",
               "--namespace", "n", "--auth", "none"]),
        dict(ENV),
    )
    assert (flags.host, flags.port, flags.token_ttl_s, flags.burst, flags.kube) == ("0.0.0.0", 9000, 300, 3, True)
    with pytest.raises(ConfigError):
        config_from_args(parse(["--rooms", "bad room"]), dict(ENV))
    assert main(["--rooms", "bad room", "--livekit-url", "nope"]) == 2
