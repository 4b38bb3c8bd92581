"""The LiveNexus web console: a token service that serves the built page and mints room-scoped LiveKit tokens.

Run it with ``python -m livenexus_console`` (or the ``livenexus-console`` script); see
:mod:`livenexus_console.cli` for the options and environment variables.
"""

from __future__ import annotations

from livenexus_console.app import ConsoleService, build_app
from livenexus_console.config import ConfigError, ConsoleConfig
from livenexus_console.ratelimit import RateLimiter
from livenexus_console.rooms import KubeRooms, RoomSource, RoomsUnavailable, StaticRooms

__all__ = [
    "ConfigError",
    "ConsoleConfig",
    "ConsoleService",
    "KubeRooms",
    "RateLimiter",
    "RoomSource",
    "RoomsUnavailable",
    "StaticRooms",
    "build_app",
]
