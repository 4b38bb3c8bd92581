"""A damaged model never crash-loops the worker silently: it falls back to the next rung, or exits with code 4
and says why (stderr and the Kubernetes termination message). Real models, copied under tmp_path.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livenexus_common.cli import EXIT_MODEL, write_termination_message
from livenexus_dev.tts import write_wav
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.inference import models
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tiny_source() -> Path:
    return models.resolve("tiny.en").path


@pytest.fixture
def cache(tmp_path: Path, tiny_source: Path) -> Path:
    """A cache holding a good tiny.en, as the worker image's does."""
    shutil.copytree(tiny_source, tmp_path / "cache" / "tiny.en")
    return tmp_path / "cache"


def damaged(tiny_source: Path, dst: Path, record: bool) -> Path:
    """A copy of tiny.en with model.bin cut short, with or without the record written when it was prepared."""
    shutil.copytree(tiny_source, dst)
    os.truncate(dst / "model.bin", 40_000_000)
    if not record:
        (dst / "SHA256").unlink()
    return dst


@pytest.mark.parametrize("record", [True, False], ids=["recorded", "unrecorded"])
def test_runtime_falls_back_to_the_next_rung(tmp_path: Path, cache: Path, tiny_source: Path, record: bool) -> None:
    """Recorded: the sha256/size check refuses it; unrecorded: CTranslate2's own load error is caught."""
    bad = damaged(tiny_source, tmp_path / "bad", record)
    ladder = (TierSpec(str(bad), "int8", 5, 250), TierSpec(str(bad), "int8", 1, 250), TierSpec("tiny.en", "int8", 1, 0))
    rt = Runtime.create(RuntimeOptions(tiers=ladder, threads=1, model_cache=str(cache)))
    try:
        assert rt.ready and rt.tier_index() == 2
        assert not rt.is_available(0) and not rt.is_available(1) and rt.is_available(2)
        _index, tier, engine = rt.engine_for(rt.tier_index())
        assert tier.model == "tiny.en" and engine.model_dir == cache / "tiny.en"
    finally:
        rt.close()


def test_no_usable_rung_raises_naming_the_damage(tmp_path: Path, tiny_source: Path) -> None:
    bad = damaged(tiny_source, tmp_path / "bad", record=True)
    with pytest.raises(models.ModelCorruptError) as err:
        Runtime.create(RuntimeOptions(tiers=(TierSpec(str(bad), "int8", 1, 0),), threads=1))
    assert "no tier has a usable model" in str(err.value) and "is damaged" in str(err.value)
    assert f"{bad / 'model.bin'} is corrupt" in str(err.value)


def test_cli_exits_4_with_the_reason_and_no_traceback(tmp_path: Path, tiny_source: Path) -> None:
    bad = damaged(tiny_source, tmp_path / "bad", record=True)
    wav = write_wav(tmp_path / "s.wav", np.zeros(16000, np.int16))
    proc = subprocess.run([sys.executable, "-m", "livenexus_worker.cli", "transcribe", str(wav), "--model", str(bad)],
                          capture_output=True, text=True, timeout=300,
                          env={"LIVENEXUS_MODEL_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == EXIT_MODEL, proc.stderr
    assert f"{bad / 'model.bin'} is corrupt" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_leaves_a_termination_message(tmp_path: Path, tiny_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from livenexus_worker import cli

    bad = damaged(tiny_source, tmp_path / "bad", record=False)  # CTranslate2's refusal, not our check
    wav = write_wav(tmp_path / "s.wav", np.zeros(16000, np.int16))
    log = tmp_path / "termination-log"
    log.write_text("stale text from an earlier run, longer than the new message " * 200)
    monkeypatch.setattr(cli, "write_termination_message", functools.partial(write_termination_message, path=str(log)))
    assert cli.main(["transcribe", str(wav), "--model", str(bad), "--threads", "1"]) == EXIT_MODEL
    text = log.read_text()
    assert text.startswith("model unusable: no tier has a usable model") and "RuntimeError" in text, text
    assert "stale text" not in text and len(text.encode()) <= 4096


def test_termination_message_is_only_written_where_the_kubelet_made_the_file(tmp_path: Path) -> None:
    assert not write_termination_message("x", str(tmp_path / "absent"))
    assert not (tmp_path / "absent").exists()


def test_worker_run_exits_4_before_touching_livekit(tmp_path: Path, tiny_source: Path) -> None:
    """The pod's own command: every rung damaged → exit 4 with the reason, not a crash loop of tracebacks."""
    import json

    bad = damaged(tiny_source, tmp_path / "bad", record=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "LIVEKIT_URL": "ws://127.0.0.1:9",  # never dialled: the model is loaded before joining the room
        "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": "secret-secret-secret-secret-secret",
        "LIVENEXUS_ROOM": "room",
        "LIVENEXUS_METRICS_PORT": "0",
        "LIVENEXUS_MODEL_CACHE": str(tmp_path / "cache"),
        "LIVENEXUS_TIERS": json.dumps([{"model": str(bad), "beamSize": 1}, {"model": str(bad), "beamSize": 5}]),
    }
    proc = subprocess.run([sys.executable, "-m", "livenexus_worker.cli", "run"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == EXIT_MODEL, proc.stderr
    assert "no tier has a usable model" in proc.stderr and "is corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_service_starts_on_the_fallback_rung_and_says_so(tmp_path: Path, cache: Path,
                                                                 tiny_source: Path) -> None:
    """Runtime, tier policy and /metrics agree on the rung the worker fell back to."""
    import json

    from livenexus_worker.room.service import WorkerService
    from livenexus_worker.room.settings import WorkerSettings

    bad = damaged(tiny_source, tmp_path / "bad", record=True)
    settings = WorkerSettings.from_env({
        "LIVENEXUS_METRICS_PORT": "0", "LIVENEXUS_MODEL_CACHE": str(cache), "LIVENEXUS_THREADS": "1",
        "LIVENEXUS_TIERS": json.dumps([{"model": str(bad)}, {"model": "tiny.en", "beamSize": 1}]),
    })
    svc = WorkerService.start(settings, require_livekit=False)
    try:
        assert svc.runtime.tier_index() == 1 and svc.tiers.manager.active == 1
        assert svc.metrics.registry.get_sample_value("livenexus_tier_index") == 1
        assert svc.metrics.registry.get_sample_value("livenexus_model_loaded") == 1
    finally:
        svc.close()
