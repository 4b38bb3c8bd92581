"""MKL's kernels on AMD CPUs: the hook library written by hand, when it goes in, and what it does to a decode."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livenexus_common.contract import Env
from livenexus_worker.inference import mkl_hook
from livenexus_worker.inference.models import resolve
from tests.conftest import speak

AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\n"


def test_the_hook_library_loads_answers_yes_and_counts(tmp_path: Path) -> None:
    so = tmp_path / "hook.so"
    so.write_bytes(mkl_hook.hook_elf())
    lib = ctypes.CDLL(str(so))  # RTLD_LOCAL: nothing else in this process resolves to it
    lib.mkl_serv_get_cpu_true.restype = ctypes.c_void_p
    calls = ctypes.c_int.in_dll(lib, mkl_hook.COUNTER_SYMBOL)
    assert calls.value == 0
    answer = ctypes.CFUNCTYPE(ctypes.c_int)(lib.mkl_serv_get_cpu_true())
    assert answer() == 1, "the function MKL asks says: an Intel CPU"
    lib.mkl_serv_get_cpu_true()
    assert calls.value == 2, "each question counted"


def test_the_hook_goes_in_on_amd_x86_only_and_can_be_switched_off() -> None:
    assert mkl_hook._wanted({}, AMD, "x86_64") is None
    assert mkl_hook._wanted({"CT2_USE_MKL": "1"}, AMD, "x86_64") is None, "MKL asked for (by a parent): still needed"
    assert "GenuineIntel" in (mkl_hook._wanted({}, INTEL, "x86_64") or ""), "Intel: CTranslate2 uses MKL itself"
    assert "aarch64" in (mkl_hook._wanted({}, AMD, "aarch64") or "")
    assert mkl_hook._wanted({}, "", "x86_64") is not None, "no /proc/cpuinfo: left alone"
    for off in ({Env.MKL_ON_AMD: "off"}, {Env.MKL_ON_AMD: "0"}, {"CT2_USE_MKL": "0"}):
        assert mkl_hook._wanted(off, AMD, "x86_64") is not None, off
    assert "must be auto or off" in (mkl_hook._wanted({Env.MKL_ON_AMD: "maybe"}, AMD, "x86_64") or ""), \
        "a wrong value installs nothing (the worker's settings refuse it at start)"


_PROBE = """
import json, os, sys, time
import numpy as np
from livenexus_worker.inference import mkl_hook
from livenexus_worker.inference.engine import WhisperEngine
state = mkl_hook.install()
engine = WhisperEngine(__import__("pathlib").Path(sys.argv[1]), "int8", threads=1)
bucket = engine.bucket_frames
engine.bucket_frames = 100  # one window length for both libraries: the same input, the same words
audio = np.load(sys.argv[2])
hyp = engine.transcribe(audio, beam_size=5)
t0 = time.perf_counter()
for _ in range(3):
    engine.transcribe(audio, beam_size=1)
print(json.dumps({"installed": state.installed, "calls": mkl_hook.consulted(), "kernels": engine.kernels,
                  "text": hyp.text, "bucket": bucket, "onednn_cache": os.environ.get(mkl_hook.ONEDNN_CACHE_ENV),
                  "beam1_s": (time.perf_counter() - t0) / 3}))
"""


def _probe(audio: Path, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE, str(resolve("base").path), str(audio)], env=env,
                          capture_output=True, text=True, timeout=180, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif("AuthenticAMD" not in Path("/proc/cpuinfo").read_text(errors="replace"),
                    reason="the hook is for AMD CPUs; elsewhere it is never installed (tested above)")
def test_on_this_amd_host_mkl_is_asked_and_reads_the_same(speech_cache: dict, tmp_path: Path) -> None:
    audio = tmp_path / "speech.npy"
    np.save(audio, speak(speech_cache, "The release moved to Thursday because the vendor needs one more week."))
    env = {k: v for k, v in os.environ.items() if k not in ("CT2_USE_MKL", Env.MKL_ON_AMD, mkl_hook.ONEDNN_CACHE_ENV)}
    hooked = _probe(audio, env)
    plain = _probe(audio, {**env, Env.MKL_ON_AMD: "off"})
    assert hooked["installed"] and hooked["calls"] > 0, hooked  # type: ignore[operator]
    assert hooked["kernels"] == "MKL (vendor hook, packed weights)"
    assert not plain["installed"] and plain["calls"] == 0 and "oneDNN" in str(plain["kernels"])
    assert hooked["text"] == plain["text"], "the same words through either library"
    # Windows are cut to 0.1 s with MKL, which keeps nothing per shape; oneDNN keeps primitives per shape.
    assert (hooked["bucket"], plain["bucket"]) == (10, 100)
    # ... and oneDNN, which still runs the convolutions, is told to keep few of them.
    assert (hooked["onednn_cache"], plain["onednn_cache"]) == ("8", None)
    print(f"beam-1 decode of the sentence: MKL {hooked['beam1_s'] * 1000:.0f} ms, "
          f"oneDNN {plain['beam1_s'] * 1000:.0f} ms")
