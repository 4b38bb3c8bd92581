"""Intel MKL's optimised kernels for CTranslate2 on AMD CPUs.

CTranslate2's Linux wheels carry Intel MKL (statically linked) and oneDNN. On an Intel CPU they multiply with
MKL, weights packed; on any other vendor with oneDNN, because MKL there takes its generic code (``CT2_USE_MKL=1``
alone made a decode ~10x slower on an AMD EPYC). MKL asks whether the CPU is Intel's through one exported hook,
``mkl_serv_get_cpu_true`` (it returns the function that answers), which ``libctranslate2`` calls through its
PLT. A library that defines that symbol and is loaded with ``RTLD_GLOBAL`` before ``libctranslate2`` answers in
its place; MKL then picks its kernels by the CPU's feature flags (AVX2, AVX-512, VNNI), as on an Intel CPU.

Measured on 2 cores of an AMD EPYC (Zen 4, AVX-512 VNNI), Whisper base int8, one thread, 4 s windows of the
meeting benchmark, medians of 9: oneDNN (CTranslate2's default there) encoder 62 ms, decoder 142 ms at beam 1
and 141 ms at beam 5; MKL through this hook 57 / 49 / 69 ms, the same text. Unpacked MKL weights
(``CT2_PACKED_GEMM=0``) took 121 ms at beam 1: the packing is most of the gain.

The library is a 4 kB ELF written here (no compiler in the image, nothing to ship), loaded from a
memfd (or a temporary file where memfds may not be mapped executable). It counts MKL's calls
(:func:`consulted`): zero after a model load means MKL never asked, so it would run its generic code. The
thread-timing child (:mod:`calibrate`) reports it, and the worker then keeps oneDNN; a load that never asked in
the worker itself is logged as a warning. ``LIVENEXUS_MKL_ON_AMD=off`` (or ``CT2_USE_MKL=0``) keeps oneDNN.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from livenexus_common.contract import Env

log = logging.getLogger(__name__)

HOOK_SYMBOL = "mkl_serv_get_cpu_true"
COUNTER_SYMBOL = "livenexus_mkl_hook_calls"
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
"""oneDNN's cache of primitives (one per shape); set to 8 when the hook goes in, unless already set."""
_MFD_CLOEXEC, _MFD_EXEC = 0x1, 0x10
_OFF = ("off", "0", "false", "no")
"""How ``LIVENEXUS_MKL_ON_AMD`` and ``CT2_USE_MKL`` say no."""


@dataclass(frozen=True)
class HookState:
    """What :func:`install` did in this process."""

    installed: bool
    """The hook is loaded and ``CT2_USE_MKL=1`` is set: CTranslate2 multiplies with MKL."""
    reason: str
    """Why (for the log): the CPU, the setting, or what failed."""


_state: HookState | None = None
_lib: ctypes.CDLL | None = None


def allowed(raw: str) -> bool:
    """The ``LIVENEXUS_MKL_ON_AMD`` setting: ``auto`` (or empty, ``on``, ``1``) or ``off`` (``0``); ValueError
    for anything else."""
    value = raw.strip().lower()
    if value in ("", "auto", "on", "1", "true", "yes"):
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{Env.MKL_ON_AMD} must be auto or off, got {raw[:40]!r}")


def _wanted(env: os._Environ[str] | dict[str, str], cpuinfo: str, machine: str) -> str | None:
    """None when the hook should go in, else why not."""
    try:
        if not allowed(env.get(Env.MKL_ON_AMD, "")):
            return f"{Env.MKL_ON_AMD}={env[Env.MKL_ON_AMD]}"
    except ValueError as exc:
        return str(exc)
    if env.get("CT2_USE_MKL", "1").strip().lower() in _OFF:
        return f"CT2_USE_MKL={env['CT2_USE_MKL']} is set"  # set to 1 (by us, in a parent) the hook is still needed
    if machine not in ("x86_64", "amd64"):
        return f"{machine} CPU"
    vendor = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("vendor_id")),
                  "unknown")
    if vendor != "AuthenticAMD":
        return f"{vendor} CPU (MKL is CTranslate2's own choice on Intel; oneDNN elsewhere)"
    return None


def install() -> HookState:
    """Load the hook and ask CTranslate2 for MKL, on an AMD x86-64 CPU, unless switched off. Once per process,
    before CTranslate2 is first imported (later it is too late, and nothing is changed)."""
    global _state, _lib
    if _state is not None:
        return _state
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    why = _wanted(os.environ, cpuinfo, platform.machine().lower())
    if why is None and "ctranslate2" in sys.modules:
        why = "CTranslate2 was imported first"
    if why is None:
        try:
            _lib = _load(hook_elf())
            os.environ["CT2_USE_MKL"] = "1"
            # oneDNN still runs the encoder's convolutions and keeps what it makes for each input shape (1,024
            # by default). With MKL the windows are cut to 0.1 s (engine.EngineOptions.bucket_frames), and over
            # 1-12 s windows that cache held ~140 MiB; capped, the encoder was no slower (measured, one thread).
            os.environ.setdefault(ONEDNN_CACHE_ENV, "8")
        except OSError as exc:
            why = f"the hook did not load: {exc}"
    _state = HookState(why is None, why or "AMD CPU: MKL with its vendor check answered")
    log.debug("MKL hook: %s", _state.reason)
    return _state


def consulted() -> int:
    """How many times MKL asked the hook (0 when it is not installed)."""
    return ctypes.c_int.in_dll(_lib, COUNTER_SYMBOL).value if _lib is not None else 0


def check_after_load() -> str:
    """For the log once a model is loaded (MKL asks while the weights are packed): which kernels decode."""
    if _state is None or not _state.installed:
        return "oneDNN or MKL, CTranslate2's choice" + (f" ({_state.reason})" if _state else "")
    if consulted() == 0:
        log.warning("MKL never asked the vendor hook: on this AMD CPU it may run its generic code, several times "
                    "slower than oneDNN; set %s=off if decodes are slow", Env.MKL_ON_AMD)
        return "MKL, vendor hook not consulted"
    return "MKL (vendor hook, packed weights)"


def _load(image: bytes) -> ctypes.CDLL:
    """dlopen ``image`` with RTLD_GLOBAL: from a memfd, else a temporary file (kernels that refuse to map a
    memfd executable, ``vm.memfd_noexec``)."""
    try:
        try:
            fd = os.memfd_create("livenexus-mkl-hook", _MFD_CLOEXEC | _MFD_EXEC)
        except OSError:  # MFD_EXEC is Linux 6.3+; older kernels map any memfd executable
            fd = os.memfd_create("livenexus-mkl-hook", _MFD_CLOEXEC)
        try:
            os.write(fd, image)
            return ctypes.CDLL(f"/proc/self/fd/{fd}", mode=ctypes.RTLD_GLOBAL)
        finally:
            os.close(fd)  # the mapping stays
    except (OSError, AttributeError):
        with tempfile.NamedTemporaryFile(prefix="livenexus-mkl-hook-", suffix=".so") as f:
            f.write(image)
            f.flush()
            return ctypes.CDLL(f.name, mode=ctypes.RTLD_GLOBAL)


def hook_elf() -> bytes:
    """An x86-64 ELF shared object exporting ``mkl_serv_get_cpu_true`` (returns a function that returns 1, and
    counts the call) and the counter ``livenexus_mkl_hook_calls``. One read+execute page (headers, symbol
    tables, code) and one read+write page (the dynamic section, which the loader may relocate in place, and the
    counter); a non-executable stack (``PT_GNU_STACK``: glibc 2.41 refuses to dlopen a library without one)."""
    page = 0x1000
    names = b"\0" + HOOK_SYMBOL.encode() + b"\0" + COUNTER_SYMBOL.encode() + b"\0liblivenexus-mkl-hook.so\0"
    hook_name, counter_name = 1, 2 + len(HOOK_SYMBOL)
    soname = counter_name + len(COUNTER_SYMBOL) + 1
    n_phdr, n_dyn = 4, 7
    hash_at = 64 + 56 * n_phdr
    symtab_at = hash_at + 4 * 6
    strtab_at = symtab_at + 24 * 3
    text_at = -(-(strtab_at + len(names)) // 16) * 16
    yes_at, hook_at = text_at, text_at + 16
    dynamic_at = page
    counter_at = dynamic_at + 16 * n_dyn
    end_rw = counter_at + 8

    endbr64 = bytes.fromhex("f30f1efa")
    yes = endbr64 + bytes.fromhex("b801000000c3")  # mov eax, 1; ret
    inc_next, lea_next = hook_at + 11, hook_at + 18  # the instruction after each rip-relative operand
    hook = (endbr64 + bytes.fromhex("f0ff05") + struct.pack("<i", counter_at - inc_next)  # lock inc [counter]
            + bytes.fromhex("488d05") + struct.pack("<i", yes_at - lea_next) + b"\xc3")  # lea rax, [yes]; ret
    text = yes.ljust(16, b"\xcc") + hook
    end_rx = text_at + len(text)

    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
            + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, n_phdr, 64, 0, 0))
    pt_load, pt_dynamic, pt_gnu_stack = 1, 2, 0x6474E551
    r, w, x = 4, 2, 1
    phdrs = b"".join(struct.pack("<IIQQQQQQ", *p) for p in (
        (pt_load, r | x, 0, 0, 0, end_rx, end_rx, page),
        (pt_load, r | w, page, page, page, end_rw - page, end_rw - page, page),
        (pt_dynamic, r | w, dynamic_at, dynamic_at, dynamic_at, 16 * n_dyn, 16 * n_dyn, 8),
        (pt_gnu_stack, r | w, 0, 0, 0, 0, 0, 16),
    ))
    # SysV hash with one bucket: the loader walks the chain 2 -> 1 comparing names.
    sysv_hash = struct.pack("<6I", 1, 3, 2, 0, 0, 1)
    stt_func, stt_object, stb_global = 2, 1, 1
    symbols = (bytes(24)
               + struct.pack("<IBBHQQ", hook_name, stb_global << 4 | stt_func, 0, 1, hook_at, len(hook))
               + struct.pack("<IBBHQQ", counter_name, stb_global << 4 | stt_object, 0, 2, counter_at, 4))
    dt_hash, dt_strtab, dt_symtab, dt_strsz, dt_syment, dt_soname = 4, 5, 6, 10, 11, 14
    dynamic = b"".join(struct.pack("<qQ", *d) for d in (
        (dt_hash, hash_at), (dt_strtab, strtab_at), (dt_symtab, symtab_at), (dt_strsz, len(names)),
        (dt_syment, 24), (dt_soname, soname), (0, 0)))

    image = bytearray(end_rw)
    for at, blob in ((0, ehdr), (64, phdrs), (hash_at, sysv_hash), (symtab_at, symbols), (strtab_at, names),
                     (text_at, text), (dynamic_at, dynamic)):
        image[at : at + len(blob)] = blob
    return bytes(image)
