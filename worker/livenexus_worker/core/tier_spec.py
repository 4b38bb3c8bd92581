"""The rungs of the tier ladder: which model and decoding settings a stream is transcribed with.

The type and the default ladder are part of the worker ↔ operator contract (the operator writes the
ladder into LIVENEXUS_TIERS), so they are defined in :mod:`livenexus_common.contract`; the worker's
modules keep importing them from here.
"""

from __future__ import annotations

from livenexus_common.contract import DEFAULT_TIERS, TierSpec

__all__ = ["DEFAULT_TIERS", "TierSpec"]
