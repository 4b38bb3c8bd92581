"""Running the console service and the Chromium driver for the browser tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONSOLE_DIR = REPO / "console"
DRIVER = Path(__file__).resolve().parent / "drive.mjs"
CHROMIUM = Path(os.environ.get("LIVENEXUS_CHROMIUM", "/usr/bin/chromium"))


def require_browser_tools() -> None:
    """Fail (not skip) with the fix when a tool the browser tests need is missing: bootstrap installs them all."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium chromium-driver)")
    if not (CONSOLE_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("console/node_modules (cd console && npm ci)")
    if missing:
        raise RuntimeError("browser tests need: " + "; ".join(missing) + " (or run `make bootstrap`)")


def build_console() -> Path:
    """``npm run build`` (type check + Vite) so the tests exercise the current sources; returns console/dist."""
    out = subprocess.run(["npm", "run", "build"], cwd=CONSOLE_DIR, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"npm run build failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return CONSOLE_DIR / "dist"


class ConsoleProcess:
    """``python -m livenexus_console`` on a free loopback port, as the demo starts it."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livenexus_console", "--host", "127.0.0.1", "--port", "0", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()
        self.url = self._wait_for_url()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _wait_for_url(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("LiveNexus console: "):
                    found.append(line.split(": ", 1)[1].strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            raise RuntimeError(f"console did not start: {''.join(self.stderr)[-2000:]}")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def console_service(args: list[str], env: Mapping[str, str]) -> Iterator[ConsoleProcess]:
    proc = ConsoleProcess(args, env)
    try:
        yield proc
    finally:
        proc.stop()


def driver_command(options: Mapping[str, Any]) -> list[str]:
    return ["node", str(DRIVER), json.dumps({"chromium": str(CHROMIUM), **options})]


def parse_result(stdout: str, stderr: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise AssertionError(f"the driver printed no result.\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}")


def run_driver(options: Mapping[str, Any], timeout: float = 300) -> dict[str, Any]:
    out = subprocess.run(driver_command(options), capture_output=True, text=True, timeout=timeout)
    return parse_result(out.stdout, out.stderr)


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
