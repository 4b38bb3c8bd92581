"""The JSONL file sink: one line per final in ``<dir>/<room>.jsonl``, appended, flushed and fsynced per batch.

Writes happen on one thread of their own (an fsync on a network volume can take a while; the event loop
must not wait for it), in batches of whatever queued meanwhile. The file is opened ``O_APPEND`` (a line is
never written over another writer's) and ``O_NOFOLLOW`` (a symlink planted on a shared volume cannot redirect
the transcripts). Past ``max_bytes`` the file is *rotated* to ``<room>.<n>.jsonl`` (the first free n) rather
than refused: nothing is lost, every file stays bounded; the volume's size bounds the total.

A write that fails (volume full, read-only, gone) is logged as an error and counted; its records stay queued
and are tried again with the next batch, up to ``max_queue`` records (past it they are counted and logged:
the worker keeps transcribing whatever the volume does). A line a failed write tore is ended with a newline
before the next one, so readers lose at most that line's own copy, never the next one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livenexus_common.sinks import SinkRecord, record_bytes

log = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0
_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FileSinkOptions:
    """Where and how big."""

    path: Path
    """The JSONL file (``<dir>/<room>.jsonl``)."""
    max_bytes: int = 1 << 30
    """Size at which the file is rotated to ``<stem>.<n>.jsonl``."""
    max_queue: int = 10000
    """Records waiting for the disk at most (~1 KiB each); beyond it they are counted and logged."""
    mode: int = 0o640
    """Permission bits of a new file (transcripts are not world-readable)."""


class FileSink:
    """Thread-safe :meth:`submit`; a daemon thread writes. :meth:`close` writes what is left (bounded wait)."""

    def __init__(self, options: FileSinkOptions, on_result: Callable[[str, int], None] | None = None) -> None:
        self.options = options
        self._on_result = on_result or (lambda result, n: None)
        self._pending: deque[SinkRecord] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._fd: int | None = None
        self._torn = False
        self._last_error_log = -_LOG_EVERY_S
        self.written = 0
        self.failed = 0
        self.last_error: str = ""
        self._thread = threading.Thread(target=self._run, name="livenexus-file-sink", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def submit(self, record: SinkRecord) -> bool:
        """Queue one record; False (counted, logged) when the queue is full or the sink closed."""
        with self._cond:
            if self._closing or len(self._pending) >= self.options.max_queue:
                self.failed += 1
                log.error("final %s NOT written to %s: %d records already wait for the disk (%s)", record["id"],
                          self.options.path, len(self._pending), self.last_error or "sink closed")
                self._on_result("failed", 1)
                return False
            self._pending.append(record)
            self._cond.notify()
            return True

    def close(self, timeout: float) -> int:
        """Write what is queued within ``timeout`` seconds; returns the records left unwritten (logged)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(max(0.0, timeout))
        with self._cond:
            left = len(self._pending)
            self._pending.clear()
        if left:
            self.failed += left
            self._on_result("failed", left)
            log.error("%d final(s) NOT written to %s at shutdown (%s)", left, self.options.path,
                      self.last_error or "the disk was too slow")
        return left

    # ---- writer thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    break
                # After a failure, wait a little (or for more) before trying the same batch again.
                if backoff and not self._closing:
                    self._cond.wait(backoff)
                batch = list(self._pending)
            try:
                done = self._write(batch)
            except Exception:  # a bug here must not stop the thread: the records stay queued
                log.exception("file sink %s failed", self.options.path)
                done = 0
            ok = done == len(batch)
            with self._cond:
                for _ in range(done):
                    self._pending.popleft()
                if not ok and self._closing:
                    break  # the volume is failing: close() counts and logs what is left
            backoff = 0.0 if ok else min(5.0, max(0.2, backoff * 2))
        self._close_fd()

    def _write(self, batch: list[SinkRecord]) -> int:
        """Append ``batch`` in chunks that fit the current file (rotating between them); returns how many of
        its records are on disk (fsynced)."""
        lines = [record_bytes(r) + b"\n" for r in batch]
        done = 0
        try:
            while done < len(lines):
                fd, size = self._open(len(lines[done]))
                end, total = done, 0
                # A line longer than the whole limit still gets a file of its own rather than being refused.
                while end < len(lines) and (end == done or size + total + len(lines[end]) <= self.options.max_bytes):
                    total += len(lines[end])
                    end += 1
                self._append(fd, b"".join(lines[done:end]))
                os.fsync(fd)
                self.written += end - done
                self._on_result("delivered", end - done)
                done = end
        except OSError as exc:
            self._error(exc, len(batch) - done)
            self._close_fd()
            return done
        self.last_error = ""
        return done

    def _append(self, fd: int, data: bytes) -> None:
        if self._torn:
            data = b"\n" + data
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(fd, view[written:])
        finally:
            self._torn = 0 < written < len(view)

    def _open(self, first_line: int) -> tuple[int, int]:
        """The file's descriptor and size, rotated first when ``first_line`` would not fit any more."""
        path = self.options.path
        if self._fd is None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._fd = os.open(path, _FLAGS, self.options.mode)
            size = os.fstat(self._fd).st_size
            if size:
                # A line torn by a crash (or another writer's failure) must not swallow our first one.
                self._torn = self._torn or os.pread(self._fd, 1, size - 1) != b"\n"
        size = os.fstat(self._fd).st_size
        if size and size + first_line > self.options.max_bytes:
            self._rotate()
            self._fd = os.open(path, _FLAGS, self.options.mode)
            size = 0
        return self._fd, size

    def _rotate(self) -> None:
        path = self.options.path
        self._close_fd()
        n = 1
        while (target := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
            n += 1
        os.rename(path, target)
        self._torn = False
        log.info("transcript file %s reached %d bytes: rotated to %s", path, self.options.max_bytes, target.name)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _error(self, exc: OSError, n: int) -> None:
        what = {errno.ENOSPC: "the volume is full", errno.EDQUOT: "the volume quota is used up",
                errno.EROFS: "the volume is read-only", errno.EACCES: "no permission",
                errno.EFBIG: "the file is too large for the volume"}.get(exc.errno or 0, "")
        self.last_error = f"{what}: {exc}" if what else str(exc)
        now = time.monotonic()
        if now - self._last_error_log >= _LOG_EVERY_S:
            self._last_error_log = now
            log.error("cannot write %d final(s) to %s (%s); keeping them queued (at most %d) and retrying",
                      n, self.options.path, self.last_error, self.options.max_queue)

