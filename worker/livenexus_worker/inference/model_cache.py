"""Integrity of the prepared-model cache: verify what is there, stage and publish new models durably, and
sweep what crashed preparers left behind.

A model directory is trusted only after its ``model.bin`` matches the size and sha256 recorded when it was
prepared: a truncated or bit-flipped file either makes CTranslate2 raise at load or, worse, loads and decodes
garbage. Hashing the base model costs ~0.15 s with a warm page cache (the load reads the file anyway).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

RECORD = "SHA256"
"""File in a prepared model directory: ``<sha256>  model.bin`` (the format ``sha256sum -c`` reads)."""
STAGING_PREFIX = ".staging-"
"""Directories being prepared: ``.staging-<model>-<random>`` beside the target, renamed onto it when complete."""
QUARANTINE_PREFIX = ".corrupt-"
"""A corrupt model directory is renamed to ``.corrupt-<model>-<random>`` before it is deleted."""
LOCK_NAME = ".preparing"
"""Lock file inside a staging directory, held (flock) by the process writing it."""
STALE_STAGING_S = 30 * 60.0
"""A staging directory untouched this long, whose lock nobody holds, is a crashed preparer's: removed."""
# Staging directories of earlier versions: mkdtemp(prefix=".<model>.") — a dot, the model, a dot, 8 chars.
_LEGACY_STAGING = re.compile(r"^\.[^.][^/]*\.[A-Za-z0-9_]{8}$")


class IntegrityError(ValueError):
    """A model directory whose ``model.bin`` does not match its recorded size or sha256."""


class NoSpaceError(OSError):
    """The cache's filesystem ran out of space (or quota) while a model was prepared."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_record(model_dir: Path) -> str | None:
    """The sha256 recorded for ``model.bin``, or None when there is no (readable, well-formed) record."""
    try:
        text = (model_dir / RECORD).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text.split()
    if len(fields) >= 2 and fields[1].lstrip("*") == "model.bin" and re.fullmatch(r"[0-9a-f]{64}", fields[0]):
        return fields[0]
    return None


def verify(model_dir: Path, size: int | None = None, sha256: str | None = None) -> bool:
    """Check ``model.bin`` against ``size`` and ``sha256`` (the record's when not given).

    Returns whether anything was checked (False: nothing is known about this directory, as for a model
    downloaded from a hub or a hand-made path without a record). Raises :class:`IntegrityError`.
    """
    expected = sha256 or read_record(model_dir)
    model_bin = model_dir / "model.bin"
    try:
        actual_size = model_bin.stat().st_size
    except OSError as exc:
        raise IntegrityError(f"{model_bin}: {exc.strerror or exc}") from exc
    if size is not None and actual_size != size:
        what = "truncated" if actual_size < size else "too long"
        raise IntegrityError(f"{model_bin} is {what}: {actual_size} bytes, expected {size}")
    if expected is None:
        return size is not None
    try:
        actual = sha256_file(model_bin)
    except OSError as exc:
        raise IntegrityError(f"{model_bin}: unreadable: {exc.strerror or exc}") from exc
    if actual != expected:
        raise IntegrityError(f"{model_bin} is corrupt: sha256 {actual} ({actual_size} bytes), expected {expected}")
    return True


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_ours(name: str) -> bool:
    return name.startswith((STAGING_PREFIX, QUARANTINE_PREFIX)) or (
        name != ".hub" and _LEGACY_STAGING.match(name) is not None
    )


def _last_touched(path: Path) -> float:
    newest = path.lstat().st_mtime
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def _lock_is_held(staging: Path) -> bool:
    try:
        fd = os.open(staging / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False  # no lock file: a preparer that died early, or one about to rename (then it is fresh)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may just have taken
    return False


def sweep_stale(cache_dir: Path, older_than_s: float = STALE_STAGING_S, now: float | None = None) -> list[Path]:
    """Remove staging and quarantine directories of ``cache_dir`` that nobody is writing; returns them.

    One is left alone while its preparer holds its lock or anything in it changed within ``older_than_s``
    (the age also covers a preparer on another machine sharing the volume, where flock may not reach).
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(cache_dir))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.is_dir(follow_symlinks=False) and _is_ours(entry.name)):
            continue
        path = Path(entry.path)
        try:
            if now - _last_touched(path) < older_than_s or _lock_is_held(path):
                continue
        except OSError:
            continue  # vanished meanwhile: its owner finished or another sweeper got it
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            log.info("removed stale model staging directory %s", path)
            removed.append(path)
    return removed


def quarantine(model_dir: Path) -> None:
    """Move a corrupt model directory out of the way (atomically), then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=f"{QUARANTINE_PREFIX}{model_dir.name}-", dir=model_dir.parent))
    aside.rmdir()
    model_dir.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A locked, empty directory beside ``target``; removed on the way out unless it was renamed away."""
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))
    lock_fd = -1
    try:
        lock_fd = os.open(staging / LOCK_NAME, os.O_CREAT | os.O_WRONLY, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield staging
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, target: Path) -> bool:
    """Make ``staging`` durable and rename it onto ``target``; False if another preparer got there first.

    Every file and the directory are fsynced before the rename and the parent after it, so a power loss
    leaves either no model or a whole one, never a name pointing at unwritten blocks.
    """
    with contextlib.suppress(FileNotFoundError):
        (staging / LOCK_NAME).unlink()  # the fd stays open (and locked) until staging_dir() exits
    for path in staging.iterdir():
        fsync_path(path)
    fsync_path(staging)
    try:
        staging.rename(target)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        return False
    fsync_path(target.parent)
    return True


def publish_readable(staging: Path, target: Path, size: int | None, sha256: str) -> bool:
    """Make ``staging`` readable by a non-root worker and :func:`publish` it onto ``target``. When another
    preparer got there first, theirs is as good as ours if it is whole: checked against ``size`` and ``sha256``
    (ValueError if it is not this model). Returns whether ours was published."""
    # mkdtemp makes the directory 0700 and the umask shapes the files: a cache prepared by root (an image
    # build) must still be readable by the non-root user that runs the worker.
    for path in staging.iterdir():
        path.chmod(0o644)
    staging.chmod(0o755)
    if publish(staging, target):
        return True
    try:
        verify(target, size, sha256)
    except IntegrityError as exc:
        raise ValueError(f"{target} exists and is not this model: {exc}") from exc
    return False


def check_space(directory: Path, needed: int) -> None:
    """Fail before writing when ``directory``'s filesystem lacks ``needed`` bytes (writes still check)."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise NoSpaceError(errno.ENOSPC, f"no space left in {directory}: {free} bytes free, {needed} needed")


def no_space(exc: OSError, directory: Path, needed: int) -> OSError:
    """Say what a full disk means here; other errors pass unchanged."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(exc, NoSpaceError):
        return NoSpaceError(exc.errno, f"no space left in {directory} while preparing ({needed} bytes needed)")
    return exc
