"""A real livekit-server on loopback for the demo and the tests (built by hack/install-tools.sh)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class DevServerError(RuntimeError):
    """livekit-server could not be found, built or started; the message says what to do."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary() -> Path:
    """$LIVENEXUS_LIVEKIT_SERVER, else the cached build (building it when the repo's script is present)."""
    env = os.environ.get("LIVENEXUS_LIVEKIT_SERVER")
    if env and Path(env).is_file():
        return Path(env)
    script = REPO / "hack" / "install-tools.sh"
    if script.is_file():
        out = subprocess.run(["bash", str(script), "livekit"], capture_output=True, text=True, timeout=3600)
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                if line.startswith("LIVENEXUS_LIVEKIT_SERVER="):
                    return Path(line.split("=", 1)[1])
        raise DevServerError(f"building livekit-server failed:\n{out.stderr[-2000:]}")
    found = shutil.which("livekit-server")
    if found:
        return Path(found)
    raise DevServerError("livekit-server not found: run hack/install-tools.sh livekit or set LIVENEXUS_LIVEKIT_SERVER")


@dataclass
class LiveKitServer:
    """livekit-server bound to one local address (127.0.0.1 by default), with fixed ports so it can be restarted
    in place."""

    binary: Path = field(default_factory=find_binary)
    host: str = "127.0.0.1"
    """The only address it binds and offers as an ICE candidate (a test node's own address where pods must reach it)."""
    interface: str = "lo"
    """The interface that carries ``host`` (candidates are gathered from it alone)."""
    """The livekit-server executable."""
    api_key: str = "livenexus-dev"
    """API key accepted by the server."""
    api_secret: str = field(default_factory=lambda: secrets.token_urlsafe(36), repr=False)
    """API secret (32+ characters, random per server)."""
    port: int = field(default_factory=free_port)
    """HTTP/WebSocket signalling port."""
    rtc_tcp_port: int = field(default_factory=free_port)
    """ICE-TCP port."""
    rtc_udp_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    """Single UDP port for all media (UDP mux)."""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="livenexus-lk-")))
    """Config and log files."""
    proc: subprocess.Popen[bytes] | None = None
    """The running process."""
    webhook_urls: tuple[str, ...] = ()
    """Where livekit-server POSTs its webhooks (signed with :attr:`api_key`); empty: none."""

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "livekit.log"

    def config(self) -> str:
        # Loopback only: no external IP discovery (it would contact STUN servers on the internet), no TURN,
        # candidates from the loopback interface alone.
        return f"""
port: {self.port}
bind_addresses: ["{self.host}"]
rtc:
  tcp_port: {self.rtc_tcp_port}
  udp_port: {self.rtc_udp_port}
  node_ip: {self.host}
  use_external_ip: false
  enable_loopback_candidate: true
  stun_servers: []
  interfaces:
    includes: [{self.interface}]
  ips:
    includes: [{self.host}/32]
turn:
  enabled: false
keys:
  {self.api_key}: {self.api_secret}
logging:
  level: info
""" + self._webhook_config()

    def _webhook_config(self) -> str:
        if not self.webhook_urls:
            return ""
        urls = ", ".join(f'"{u}"' for u in self.webhook_urls)
        return f"webhook:\n  api_key: {self.api_key}\n  urls: [{urls}]\n"

    def start(self, timeout: float = 30.0) -> LiveKitServer:
        cfg = self.workdir / "livekit.yaml"
        cfg.write_text(self.config())
        cfg.chmod(0o600)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(self.binary), "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DevServerError(f"livekit-server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise DevServerError(f"livekit-server did not answer within {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as a crash would (reconnection tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> LiveKitServer:
        self.kill()
        return self.start()

    def __enter__(self) -> LiveKitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
