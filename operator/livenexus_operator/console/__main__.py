"""``python -m livenexus_operator.console``: same as the ``livenexus-console`` script."""

from __future__ import annotations

import sys

from livenexus_operator.console.cli import main

sys.exit(main())
