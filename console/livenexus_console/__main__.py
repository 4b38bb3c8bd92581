"""``python -m livenexus_console``: same as the ``livenexus-console`` script."""

from __future__ import annotations

import sys

from livenexus_console.cli import main

sys.exit(main())
