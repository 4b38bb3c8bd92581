"""Fixtures of the console tests: the built page, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .apptools import make_client  # noqa: F401 (a fixture: the in-process token service)
from .helpers import build_console, require_browser_tools


@pytest.fixture(scope="session")
def console_dist() -> Path:
    """The page built from the current sources (type check + Vite); fails with the fix when tools are missing."""
    require_browser_tools()
    return build_console()
