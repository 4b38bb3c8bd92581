"""The worker and operator images built from this checkout (hack/build-images.sh), for tests that run them.

``ensure_images()`` builds what is missing (a cold build takes minutes: Debian base, pip downloads, model)
and otherwise only hashes the sources (well under a second). The archives are OCI archives that
``ctr -n k8s.io images import`` loads under ``worker_ref`` / ``operator_ref``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "build-images.sh"
CACHE = Path(os.environ.get("LIVENEXUS_IMAGES", Path.home() / ".cache" / "livenexus" / "images"))
LOG = CACHE / "build-images.log"
"""Full log of the last ensure_images() run."""


class ImageBuildError(RuntimeError):
    """hack/build-images.sh failed; the message carries the tail of its log."""


@dataclass(frozen=True)
class Images:
    worker_ref: str
    """localhost/livenexus-worker:<content hash>"""
    worker_archive: Path
    """OCI archive of the worker image."""
    operator_ref: str
    """localhost/livenexus-operator:<content hash>"""
    operator_archive: Path
    """OCI archive of the operator image (it also serves the console)."""
    built: bool
    """Whether this call built anything (False: the archives for these sources already existed)."""
    seconds: float
    """Wall time of the call."""
    buildah: tuple[str, ...] = field(default=())
    """Global buildah options of the storage that holds the images (``buildah *buildah images``)."""


def ensure_images(timeout: float = 3600) -> Images:
    """Build (or reuse) both images; raises :class:`ImageBuildError` with the log tail on failure."""
    if not SCRIPT.is_file():
        raise ImageBuildError(f"{SCRIPT} is missing")
    start = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        LOG.write_text(err)
        raise ImageBuildError(f"hack/build-images.sh timed out after {timeout:.0f} s (log {LOG}):\n"
                              f"{_tail(err)}") from None
    seconds = time.monotonic() - start
    LOG.write_text(proc.stderr)
    if proc.returncode != 0:
        raise ImageBuildError(f"hack/build-images.sh exited {proc.returncode} (full log {LOG}):\n{_tail(proc.stderr)}")
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if line.startswith("LIVENEXUS_"))
    try:
        images = Images(
            worker_ref=env["LIVENEXUS_WORKER_IMAGE"],
            worker_archive=Path(env["LIVENEXUS_WORKER_ARCHIVE"]),
            operator_ref=env["LIVENEXUS_OPERATOR_IMAGE"],
            operator_archive=Path(env["LIVENEXUS_OPERATOR_ARCHIVE"]),
            built=env.get("LIVENEXUS_IMAGES_BUILT") == "1",
            seconds=seconds,
            buildah=tuple(shlex.split(env.get("LIVENEXUS_BUILDAH", ""))),
        )
    except KeyError as e:
        raise ImageBuildError(f"hack/build-images.sh printed no {e.args[0]}:\n{proc.stdout}") from None
    for archive in (images.worker_archive, images.operator_archive):
        if not archive.is_file():
            raise ImageBuildError(f"hack/build-images.sh reported {archive}, which does not exist")
    return images


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])
