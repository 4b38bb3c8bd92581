"""Where events go in the CLI: JSON lines or a terminal view with partials updating in place."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from livenexus_worker.core.events import TranscriptEvent


def fmt_ts(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class JsonlSink:
    """One JSON object per line, partials included."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self._lock = threading.Lock()

    def __call__(self, event: TranscriptEvent) -> None:
        with self._lock:
            self.out.write(event.to_json() + "\n")
            self.out.flush()


class TerminalSink:
    """Finals on their own lines; the live partial rewritten in place when the output is a TTY."""

    def __init__(self, out: TextIO = sys.stdout, show_partials: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty()
        self.show_partials = self.tty if show_partials is None else show_partials
        self._lock = threading.Lock()
        self._live = False

    def __call__(self, event: TranscriptEvent) -> None:
        with self._lock:
            if event.is_final:
                if self._live and self.tty:
                    self.out.write("\r\033[K")
                self.out.write(
                    f"[{fmt_ts(event.start)} → {fmt_ts(event.end)}] {event.speaker}: {event.text}"
                    f"  ({event.latency_ms:.0f} ms)\n"
                )
                self._live = False
            elif self.show_partials:
                if self.tty:
                    stable = f"\033[1m{event.stable}\033[0m" if event.stable else ""
                    self.out.write(f"\r\033[K… {stable} \033[2m{event.unstable}\033[0m")
                    self._live = True
                else:
                    self.out.write(f"… {event.stable} | {event.unstable}\n")
            self.out.flush()
