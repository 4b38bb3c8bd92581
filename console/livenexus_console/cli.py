"""``livenexus-console``: serve the web console and mint room-scoped LiveKit tokens for it.

Credentials come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET (environment only). Rooms are either a fixed
list (``--rooms demo,other`` / LIVENEXUS_CONSOLE_ROOMS) or, with ``--kube`` (LIVENEXUS_CONSOLE_KUBE=1, the
default in a pod when no list is given), exactly the cluster's TranscriptionRooms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from livenexus_common.cli import EXIT_FAILURE, EXIT_OK, fail, run_until_stopped, setup_logging
from livenexus_console.app import build_app, static_dir_status
from livenexus_console.config import ConfigError, ConsoleConfig, parse_rooms
from livenexus_console.proxies import parse_networks

# Where a pod finds its own namespace: the console lists the rooms of that namespace unless told otherwise.
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

log = logging.getLogger("livenexus_console")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenexus-console", description=__doc__)
    p.add_argument("--host", help="bind address (default 127.0.0.1; $LIVENEXUS_CONSOLE_HOST)")
    p.add_argument("--port", type=int, help="bind port, 0 for a free one (default 8080; $LIVENEXUS_CONSOLE_PORT)")
    p.add_argument(
        "--livekit-url", help="LiveKit URL as browsers reach it ($LIVENEXUS_CONSOLE_LIVEKIT_URL or $LIVEKIT_URL)"
    )
    p.add_argument("--rooms", help="comma-separated rooms open to the console ($LIVENEXUS_CONSOLE_ROOMS)")
    p.add_argument("--kube", action="store_true", default=None, help="allow the cluster's TranscriptionRooms")
    p.add_argument(
        "--namespace", help="TranscriptionRooms of this namespace (default: the pod's; $LIVENEXUS_CONSOLE_NAMESPACE)"
    )
    p.add_argument(
        "--all-namespaces", action="store_true", default=None, help="TranscriptionRooms of every namespace"
    )
    p.add_argument("--static-dir", type=Path, help="the built page (default: console/dist; $LIVENEXUS_CONSOLE_DIST)")
    p.add_argument("--token-ttl", type=int, dest="token_ttl_s", help="token lifetime in seconds (default 900)")
    p.add_argument("--rate-per-minute", type=float, help="sustained tokens per client IP per minute (default 6)")
    p.add_argument("--burst", type=int, help="tokens a client IP may mint back to back (default 5)")
    p.add_argument(
        "--trusted-proxies",
        help="proxy addresses/CIDRs whose X-Forwarded-For entries count ($LIVENEXUS_CONSOLE_TRUSTED_PROXIES)",
    )
    p.add_argument("--proxy-hops", type=int, help="or: number of proxies in front ($LIVENEXUS_CONSOLE_PROXY_HOPS)")
    p.add_argument(
        "--auth",
        choices=("none", "token", "header"),
        dest="auth_mode",
        help="API access: token ($LIVENEXUS_CONSOLE_AUTH_TOKEN), header (auth proxy), none (default on loopback only)",
    )
    p.add_argument("--auth-user-header", help="header the auth proxy names the user in (default X-Auth-Request-User)")
    p.add_argument(
        "--read-only",
        action="store_false",
        default=None,
        dest="allow_microphone",
        help="visitors only read transcripts: tokens may not publish a microphone",
    )
    p.add_argument("--agent-prefix", dest="agent_identity_prefix", help="identity prefix of the transcriber")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(
    args: argparse.Namespace, env: dict[str, str] | None = None, namespace_file: Path = POD_NAMESPACE_FILE
) -> ConsoleConfig:
    e = dict(os.environ) if env is None else env
    kube = args.kube
    rooms = parse_rooms(args.rooms) if args.rooms is not None else None
    if kube is None and rooms is None and not e.get("LIVENEXUS_CONSOLE_ROOMS") and e.get("KUBERNETES_SERVICE_HOST"):
        kube = True  # in a pod with no explicit list: the TranscriptionRooms are the list
    namespace = args.namespace
    explicit_ns = namespace or e.get("LIVENEXUS_CONSOLE_NAMESPACE") or args.all_namespaces
    if kube and not explicit_ns and not e.get("LIVENEXUS_CONSOLE_ALL_NAMESPACES") and namespace_file.is_file():
        namespace = namespace_file.read_text().strip()  # the pod's own namespace, never all of them by default
    try:
        trusted = parse_networks(args.trusted_proxies) if args.trusted_proxies is not None else None
    except ValueError as exc:
        raise ConfigError(f"--trusted-proxies: {exc}") from exc
    return ConsoleConfig.from_env(
        e,
        host=args.host,
        port=args.port,
        livekit_url=args.livekit_url,
        rooms=rooms,
        kube=kube,
        namespace=namespace,
        all_namespaces=args.all_namespaces,
        static_dir=args.static_dir,
        token_ttl_s=args.token_ttl_s,
        rate_per_minute=args.rate_per_minute,
        burst=args.burst,
        trusted_proxies=trusted,
        proxy_hops=args.proxy_hops,
        auth_mode=args.auth_mode,
        auth_user_header=args.auth_user_header,
        allow_microphone=args.allow_microphone,
        agent_identity_prefix=args.agent_identity_prefix,
    )


class QuietBadRequests(logging.Filter):
    """aiohttp logs every unparsable request at ERROR with a traceback: one line at INFO says as much.

    A client that sends garbage would otherwise write a traceback into the log per request (and bury the
    real errors); the 400 it gets is the whole story.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "refused a malformed request (%d): %.120s", (exc.code, exc.message)
            record.exc_info, record.exc_text = None, None
        return True


async def serve(config: ConsoleConfig, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; prints ``LiveNexus console: <url>`` (with the real port) once listening."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in server_log.filters):
        server_log.addFilter(QuietBadRequests())
    runner = web.AppRunner(build_app(config), access_log=log if log.isEnabledFor(logging.DEBUG) else None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    try:
        port = int(runner.addresses[0][1]) if runner.addresses else config.port
        shown = f"[{config.host}]" if ":" in config.host else config.host
        rooms = (
            f"TranscriptionRooms of {config.namespace or 'every namespace'}"
            if config.kube
            else ",".join(config.rooms) or "(none)"
        )
        print(f"LiveNexus console: http://{shown}:{port}/", flush=True)
        log.info(
            "LiveKit %s, rooms %s, auth %s, page %s (%s)",
            config.public_livekit_url,
            rooms,
            config.auth_mode,
            config.static_dir,
            static_dir_status(config.static_dir),
        )
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return fail("livenexus-console", exc)
    try:
        run_until_stopped(lambda stop: serve(config, stop))
    except OSError as exc:
        return fail("livenexus-console", f"cannot listen on {config.host}:{config.port}: {exc}", EXIT_FAILURE)
    return EXIT_OK
