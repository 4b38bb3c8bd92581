"""The model cache's integrity: damaged cache hits, durable publishing, stale staging dirs, a full disk.

Every test works on copies under tmp_path; the real cache (~/.cache/livenexus/models) is only read.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livenexus_worker.inference import model_cache, models

TINY = next(p for p in models.PACKAGED if p.name == "tiny.en")


@pytest.fixture(scope="module")
def tiny_source() -> Path:
    """A prepared tiny.en to copy from (never modified)."""
    return models.resolve("tiny.en").path


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def hide_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the worker image: the model packages were removed once the cache was prepared."""
    monkeypatch.setattr(models, "_package_data_dir", lambda module, folder="data": None)


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def test_truncated_cache_hit_is_prepared_again(tmp_path: Path, tiny_source: Path) -> None:
    cache = tmp_path / "cache"
    copy_model(tiny_source, cache / "tiny.en")
    os.truncate(cache / "tiny.en" / "model.bin", TINY.size // 2)
    res = models.resolve("tiny.en", cache, allow_download=False)
    assert res.source == "package", res
    assert (res.path / "model.bin").stat().st_size == TINY.size
    assert model_cache.sha256_file(res.path / "model.bin") == TINY.sha256
    assert leftovers(cache) == [], "quarantined or staging dir left behind"


def test_same_size_corruption_is_caught_by_the_recorded_sha256(tmp_path: Path, tiny_source: Path) -> None:
    cache = tmp_path / "cache"
    copy_model(tiny_source, cache / "tiny.en")
    flip_byte(cache / "tiny.en" / "model.bin", TINY.size // 2)  # a weight, not the header: would load silently
    res = models.resolve("tiny.en", cache, allow_download=False)
    assert res.source == "package"
    assert model_cache.sha256_file(res.path / "model.bin") == TINY.sha256


def test_corrupt_cache_without_packages_is_a_clear_error(
    tmp_path: Path, tiny_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    model_bin = copy_model(tiny_source, cache / "tiny.en") / "model.bin"
    os.truncate(model_bin, 1000)
    hide_packages(monkeypatch)
    with pytest.raises(models.ModelCorruptError) as err:
        models.resolve("tiny.en", cache, allow_download=False)
    msg = str(err.value)
    assert f"{model_bin} is truncated: 1000 bytes, expected {TINY.size}" in msg, msg
    assert model_bin.exists(), "nothing to repair it from: the evidence stays"


def test_explicit_path_with_a_record_is_verified(tmp_path: Path, tiny_source: Path) -> None:
    d = copy_model(tiny_source, tmp_path / "mine")
    assert models.resolve(str(d)).source == "path"
    flip_byte(d / "model.bin", 4096)
    with pytest.raises(models.ModelCorruptError, match="sha256"):
        models.resolve(str(d))


def test_a_record_that_lies_is_not_trusted_over_the_known_size(tmp_path: Path, tiny_source: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated file whose record was rewritten to match still fails: the size comes from the spec."""
    cache = tmp_path / "cache"
    model_bin = copy_model(tiny_source, cache / "tiny.en") / "model.bin"
    os.truncate(model_bin, TINY.size - 1)
    (model_bin.parent / "SHA256").write_text(f"{model_cache.sha256_file(model_bin)}  model.bin\n")
    hide_packages(monkeypatch)
    with pytest.raises(models.ModelCorruptError, match="truncated"):
        models.resolve("tiny.en", cache, allow_download=False)


def _make_dir(path: Path, age_s: float) -> Path:
    path.mkdir()
    (path / "model.bin").write_bytes(b"x" * 10)
    t = time.time() - age_s
    for p in (path / "model.bin", path):
        os.utime(p, (t, t))
    return path


def test_stale_staging_dirs_are_swept_but_live_ones_are_kept(tmp_path: Path) -> None:
    old = 2 * model_cache.STALE_STAGING_S
    dead = _make_dir(tmp_path / ".staging-base-abc123", old)
    legacy = _make_dir(tmp_path / ".base.k3j4h5g6", old)  # what earlier versions' mkdtemp made
    quarantined = _make_dir(tmp_path / ".corrupt-base-xyz", old)
    fresh = _make_dir(tmp_path / ".staging-base-fresh", 5)  # a preparer that has not taken its lock yet
    hub = _make_dir(tmp_path / ".hub", old)
    model = _make_dir(tmp_path / "base", old)
    live = _make_dir(tmp_path / ".staging-base-live", 0)
    fd = os.open(live / model_cache.LOCK_NAME, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t = time.time() - old  # a slow preparer: nothing written for a long time, but its lock is held
        for p in (live / model_cache.LOCK_NAME, live / "model.bin", live):
            os.utime(p, (t, t))
        removed = model_cache.sweep_stale(tmp_path)
    finally:
        os.close(fd)
    assert sorted(removed) == sorted([dead, legacy, quarantined])
    for kept in (fresh, hub, model, live):
        assert kept.is_dir(), kept
    # Once its preparer is gone (lock released), the old one goes too.
    assert model_cache.sweep_stale(tmp_path) == [live]


def test_preparing_sweeps_what_a_crashed_preparer_left(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = _make_dir(cache / ".staging-tiny.en-dead01", 2 * model_cache.STALE_STAGING_S)
    assert models.resolve("tiny.en", cache, allow_download=False).source == "package"
    assert not dead.exists()
    assert leftovers(cache) == []


def test_publishing_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model.bin and the staging dir reach the disk before the rename, the parent's entry after it."""
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    cache = tmp_path / "cache"
    target = models.resolve("tiny.en", cache, allow_download=False).path
    at = events.index(("rename", str(target)))
    before = [p for kind, p in events[:at] if kind == "fsync"]
    assert any(p.endswith("/model.bin") and "/.staging-tiny.en-" in p for p in before), before
    assert any(Path(p).name.startswith(".staging-tiny.en-") for p in before), before
    assert ("fsync", str(cache)) in events[at:]


# -- a full disk: a real (small) filesystem mounted for the test ---------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0755", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_while_preparing(small_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = small_fs / "cache"
    # 1. Known too small up front: refused before a byte is written.
    with pytest.raises(models.ModelNotFoundError) as err:
        models.resolve("tiny.en", cache, allow_download=False)
    assert f"no space left in {cache}" in str(err.value)
    assert list(cache.iterdir()) == []

    # 2. The space vanishes while writing (the check passed): the real ENOSPC, and the partial file is gone.
    monkeypatch.setattr(model_cache, "check_space", lambda directory, needed: None)
    with pytest.raises(models.ModelNotFoundError) as err:
        models.resolve("tiny.en", cache, allow_download=False)
    assert f"no space left in {cache} while preparing" in str(err.value), str(err.value)
    assert list(cache.iterdir()) == []
    assert shutil.disk_usage(small_fs).used < 1 << 20, "the partial model still takes space"
    monkeypatch.undo()

    # 3. Space is back: the next prepare succeeds.
    subprocess.run(["mount", "-o", "remount,size=100m", str(small_fs)], check=True)
    res = models.resolve("tiny.en", cache, allow_download=False)
    assert res.source == "package"
    assert model_cache.verify(res.path, TINY.size)
    assert leftovers(cache) == []


def test_a_cache_hit_also_sweeps_and_listing_ignores_staging(tmp_path: Path, tiny_source: Path) -> None:
    cache = tmp_path / "cache"
    copy_model(tiny_source, cache / "tiny.en")
    dead = copy_model(tiny_source, cache / ".staging-base-dead01")  # complete-looking, but never published
    t = time.time() - 2 * model_cache.STALE_STAGING_S
    for p in (*dead.iterdir(), dead):
        os.utime(p, (t, t))
    assert not [name for name in models.available(cache) if name.startswith(".")]
    assert models.resolve("tiny.en", cache, allow_download=False).source == "cache"
    assert not dead.exists()


def test_file_size_limit_while_preparing(tmp_path: Path) -> None:
    """The same promise under RLIMIT_FSIZE (where no tmpfs can be mounted, or a quota-like cap): a clear error,
    nothing left in the cache, and the next prepare without the limit succeeds."""
    cache = tmp_path / "cache"
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from livenexus_worker.inference import models\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))\n"
        "try:\n"
        "    models.resolve('tiny.en', Path(sys.argv[1]), allow_download=False)\n"
        "except models.ModelNotFoundError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(7)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(cache)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "File too large" in proc.stdout and "Traceback" not in proc.stderr
    assert list(cache.iterdir()) == []
    assert models.resolve("tiny.en", cache, allow_download=False).source == "package"


def test_concurrent_preparers_both_succeed_and_leave_one_model(tmp_path: Path) -> None:
    """Pods sharing a model volume start together: each stages its own copy, one rename wins, the other uses
    the winner's after checking it, and neither sweeps the other's staging dir away mid-write."""
    cache = tmp_path / "cache"
    script = ("import sys\nfrom pathlib import Path\nfrom livenexus_worker.inference import models\n"
              "r = models.resolve('tiny.en', Path(sys.argv[1]), allow_download=False)\nprint(r.source, r.path)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert {out.split()[1] for out, _ in outs} == {str(cache / "tiny.en")}
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.en"]
    assert model_cache.verify(cache / "tiny.en", TINY.size)


def test_losing_the_rename_race_checks_the_winner(tmp_path: Path, tiny_source: Path) -> None:
    cache = tmp_path / "cache"
    winner = copy_model(tiny_source, cache / "tiny.en")
    assert models.join_packaged(TINY, winner) == winner  # a whole model got there first: ours is dropped
    assert leftovers(cache) == []
    os.truncate(winner / "model.bin", 10)
    with pytest.raises(ValueError, match="exists and is not this model"):
        models.join_packaged(TINY, winner)
    assert leftovers(cache) == []
