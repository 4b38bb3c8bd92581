"""What every LiveNexus command does alike: log lines, exit codes, and SIGTERM/SIGINT as a stop event.

The worker, the operator, the console and the dev demo all run in pods or terminals where the kubelet's
SIGTERM (or Ctrl-C) must end them cleanly: each sets an :class:`asyncio.Event` that its loops watch, so
shutdown work (flushing finals, releasing the Lease, closing the listener) still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from livenexus_common.contract import Env

T = TypeVar("T")

EXIT_OK: Final = 0
"""Done, or stopped by SIGTERM/SIGINT after a clean shutdown."""
EXIT_FAILURE: Final = 1
"""Ran, then failed in a way a restart may fix (leadership lost, the port was taken)."""
EXIT_ERROR: Final = 2
"""Could not do the job as asked: bad settings or input (the message on stderr names it), or an unexpected error."""
EXIT_AUTH: Final = 3
"""LiveKit refused the credentials: retrying with the same ones cannot help."""
EXIT_MODEL: Final = 4
"""The model on disk is damaged (size/sha256 differ from its record) and no tier could fall back: a restart
cannot help until the image or the model volume is replaced."""
EXIT_INTERRUPTED: Final = 130
"""Ctrl-C outside an event loop (128 + SIGINT, what shells report)."""

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


LOG_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def setup_logging(verbose: bool = False) -> None:
    """Log lines on stderr (stdout stays for what a command prints as its result); DEBUG with ``-v``, else
    the level :data:`Env.LOG_LEVEL` names. An unknown name logs INFO and says so: a typo in a log level should
    not stop a worker from transcribing."""
    asked = os.environ.get(Env.LOG_LEVEL, "").strip().lower()
    level = logging.DEBUG if verbose else LOG_LEVELS.get(asked or "info", logging.INFO)
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    if asked and asked not in LOG_LEVELS:
        logging.getLogger("livenexus").warning("%s=%r is none of %s: logging at info", Env.LOG_LEVEL, asked[:40],
                                               ", ".join(LOG_LEVELS))


def fail(prog: str, message: object, code: int = EXIT_ERROR) -> int:
    """Print ``<prog>: error: <message>`` on stderr (argparse's form) and return ``code`` for ``main`` to return."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


TERMINATION_LOG: Final = "/dev/termination-log"
"""Kubernetes' default ``terminationMessagePath``: what a container writes there becomes its last state's
``message`` (``kubectl describe pod``, and what an operator can turn into a condition)."""


def write_termination_message(message: object, path: str = TERMINATION_LOG) -> bool:
    """Leave ``message`` (cut to Kubernetes' 4 KiB) where the kubelet reads it; False outside a pod.

    Only an existing file is written: the kubelet creates it in every container, and elsewhere nothing
    should appear under /dev.
    """
    text = str(message).encode("utf-8", errors="replace")[:4096]
    try:
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(text)
    except OSError:
        return False
    return True


def stop_on_signals(stop: asyncio.Event) -> None:
    """Make SIGTERM and SIGINT set ``stop``; call it from the running event loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Only the main thread may install signal handlers; elsewhere (tests) the caller sets ``stop`` itself.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """``asyncio.run(main(stop))`` with ``stop`` set by SIGTERM/SIGINT; returns what ``main`` returns."""

    async def run() -> T:
        stop = asyncio.Event()
        stop_on_signals(stop)
        return await main(stop)

    return asyncio.run(run())


async def sleep_or_stop(stop: asyncio.Event | None, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile; returns whether it is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
