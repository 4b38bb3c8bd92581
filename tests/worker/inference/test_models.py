from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from livenexus_worker.inference import models


def test_prepares_cache_from_packages_once(tmp_path: Path) -> None:
    res = models.resolve("base", tmp_path)
    assert res.source == "package" and models.is_model_dir(res.path)
    assert (res.path / "model.bin").stat().st_size == models.PACKAGED[0].size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging dir left behind"
    again = models.resolve("base", tmp_path)
    assert again.source == "cache" and again.path == res.path


def test_prepared_cache_is_world_readable() -> None:
    """An image build prepares the cache as root under a strict umask; the worker reads it as uid 10001."""
    # Not tmp_path: pytest's base temp dir is 0700, which would hide the cache from another uid anyway.
    base = Path(tempfile.mkdtemp(prefix="livenexus-models-"))
    try:
        base.chmod(0o755)
        old = os.umask(0o077)
        try:
            res = models.resolve("base", base / "cache")
        finally:
            os.umask(old)
        assert stat.S_IMODE(res.path.stat().st_mode) == 0o755
        files = list(res.path.iterdir())
        assert {"model.bin", "config.json", "tokenizer.json"} <= {f.name for f in files}
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
        if os.geteuid() == 0:
            # Read it the way the worker pod does: an unprivileged uid with no group or ownership in common.
            for f in files:
                out = subprocess.run(["head", "-c", "16", str(f)], user=10001, group=10001, extra_groups=[],
                                     capture_output=True)
                assert out.returncode == 0, (f, out.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_corrupt_parts_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tuple(dataclasses.replace(p, sha256="0" * 64) for p in models.PACKAGED)
    monkeypatch.setattr(models, "PACKAGED", bad)
    with pytest.raises(models.ModelNotFoundError) as err:
        models.resolve("base", tmp_path, allow_download=False)
    assert "sha256" in str(err.value)
    assert not (tmp_path / "base").exists()


def test_unknown_model_lists_every_place_searched(tmp_path: Path) -> None:
    with pytest.raises(models.ModelNotFoundError) as err:
        models.resolve("large-v9", tmp_path, allow_download=False)
    msg = str(err.value)
    for place in ("cache", "packages", "download"):
        assert place in msg


def test_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(models.ModelNotFoundError, match="not a CTranslate2"):
        models.resolve(str(tmp_path))
    prepared = models.resolve("base").path
    assert models.resolve(str(prepared)).source == "path"


def test_cli_models_list_and_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from livenexus_worker.cli import main

    assert main(["models", "prepare", "--cache", str(tmp_path)]) == 0
    assert main(["models", "list", "--cache", str(tmp_path)]) == 0
    assert f"base\tcache {tmp_path / 'base'}" in capsys.readouterr().out


def test_tiny_en_ships_whole_and_prepares_like_base(tmp_path: Path, speech_cache: dict[str, object]) -> None:
    """The lowest rung: one package holding a whole model.bin (and vocabulary.txt, not .json)."""
    from livenexus_worker.inference.engine import WhisperEngine
    from livenexus_worker.inference.textnorm import wer
    from tests.conftest import speak

    res = models.resolve("tiny.en", tmp_path)
    assert res.source == "package"
    spec = next(p for p in models.PACKAGED if p.name == "tiny.en")
    assert (res.path / "model.bin").stat().st_size == spec.size
    assert stat.S_IMODE(res.path.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in res.path.iterdir())
    assert models.resolve("tiny.en", tmp_path).source == "cache"
    ref = "please call stella and ask her to bring these things"
    text = WhisperEngine(res.path, "int8").transcribe(speak(speech_cache, ref), beam_size=1).text  # type: ignore[arg-type]
    assert wer(ref, text) <= 0.35, text
