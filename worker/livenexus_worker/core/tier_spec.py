"""The rungs of the tier ladder: which model and decoding settings a stream is transcribed with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TierSpec:
    """One rung of the model/decoding ladder; index 0 is the preferred (most expensive) tier."""

    model: str = "base"
    """Model name or path (resolved by ``livenexus_worker.inference.models``)."""
    compute_type: str = "int8"
    """CTranslate2 compute type."""
    beam_size: int = 5
    """Beam size for finals (partials always decode greedily)."""
    partial_interval_ms: int = 250
    """Time between partial hypotheses while speech continues; 0 disables partials."""

    @property
    def name(self) -> str:
        return f"{self.model}-{self.compute_type}-b{self.beam_size}-p{self.partial_interval_ms}"


DEFAULT_TIERS: tuple[TierSpec, ...] = (
    TierSpec("base", "int8", 5, 250),
    TierSpec("base", "int8", 1, 250),
    TierSpec("base", "int8", 1, 600),
    TierSpec("base", "int8", 1, 0),
    TierSpec("tiny", "int8", 1, 0),
)
