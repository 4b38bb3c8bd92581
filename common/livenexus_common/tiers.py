"""The tier ladder: the model/decoding rungs a worker steps along under CPU pressure, and when it steps.

Part of the worker ↔ operator contract (:mod:`livenexus_common.contract` re-exports every name here): the operator
writes a room's ladder into LIVENEXUS_TIERS and its thresholds into LIVENEXUS_TIER_*, the worker parses them.
Only the standard library is imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_TIERS", "LadderError", "TierSpec", "TierThresholds", "ladder_to_json",
           "model_ladder", "parse_ladder"]


class LadderError(ValueError):
    """A ladder or one of its entries is malformed (the contract names the variable it came from)."""


@dataclass(frozen=True)
class TierSpec:
    """One rung of the model/decoding ladder; index 0 is the preferred (most expensive) tier.

    The defaults are those of the first tier when nothing is configured (LIVENEXUS_MODEL and friends, the
    CRD's spec.model) and of a LIVENEXUS_TIERS entry that leaves a field out.
    """

    model: str = "base"
    """Model name or path (resolved by ``livenexus_worker.inference.models``)."""
    compute_type: str = "int8"
    """CTranslate2 compute type."""
    beam_size: int = 5
    """Beam size for finals (partials always decode greedily)."""
    partial_interval_ms: int = 250
    """Time between partial hypotheses while speech continues; 0 disables partials."""
    partial_model: str = ""
    """A smaller model that drafts this rung's partials ("" : ``model`` itself). Drafts are shown, never final:
    where one ends a sentence at a pause, ``model`` decodes that audio and its words decide the commit."""

    @property
    def name(self) -> str:
        """The ``tier`` label of ``livenexus_tier_info`` and the ``tier`` of every transcript."""
        draft = f"+{self.partial_model}" if self.partial_model else ""
        return f"{self.model}-{self.compute_type}-b{self.beam_size}-p{self.partial_interval_ms}{draft}"

    def to_json(self) -> dict[str, object]:
        """One LIVENEXUS_TIERS entry, camelCase as the CRD's spec.tiers.ladder writes it."""
        return {
            "model": self.model,
            "computeType": self.compute_type,
            "beamSize": self.beam_size,
            "partialIntervalMs": self.partial_interval_ms,
            **({"partialModel": self.partial_model} if self.partial_model else {}),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> TierSpec:
        """One LIVENEXUS_TIERS entry (camelCase; snake_case accepted for hand-written ones)."""

        def num(key: str, alt: str, default: int) -> int:
            value = raw.get(key, raw.get(alt, default))
            if not isinstance(value, int | str) or isinstance(value, bool):
                raise LadderError(f"tier field {key!r} must be an integer, got {value!r}")
            try:
                return int(value)
            except ValueError as exc:
                raise LadderError(f"tier field {key!r} must be an integer, got {value!r}") from exc

        partial_model = raw.get("partialModel", raw.get("partial_model", cls.partial_model))
        if not isinstance(partial_model, str):
            raise LadderError(f"tier field 'partialModel' must be a model name, got {partial_model!r}")
        return cls(
            model=str(raw.get("model", cls.model)),
            compute_type=str(raw.get("computeType", raw.get("compute_type", cls.compute_type))),
            beam_size=num("beamSize", "beam_size", cls.beam_size),
            partial_interval_ms=num("partialIntervalMs", "partial_interval_ms", cls.partial_interval_ms),
            partial_model=partial_model,
        )


def model_ladder(model: str, compute_type: str, beam_size: int) -> tuple[TierSpec, ...]:
    """Cheaper variants of one model: beam N → 1, partials every 250 → 600 ms → none (repeats dropped).

    The operator's ladder when a room gives none: every rung uses the room's model, so the worker can never
    step down to a model its image does not contain.
    """
    out: list[TierSpec] = []
    for tier in (
        TierSpec(model, compute_type, beam_size, 250),
        TierSpec(model, compute_type, 1, 250),
        TierSpec(model, compute_type, 1, 600),
        TierSpec(model, compute_type, 1, 0),
    ):
        if tier not in out:
            out.append(tier)
    return tuple(out)


DEFAULT_TIERS: Final[tuple[TierSpec, ...]] = (*model_ladder("base", "int8", 5)[:3], TierSpec("tiny.en", "int8", 1, 600),
                                               TierSpec("tiny.en", "int8", 1, 0))
"""The worker's own ladder when LIVENEXUS_TIERS is not set: ``base`` with partials, then ``tiny.en`` (shipped beside
it) with partials, then without: partials on the smaller model beat none on base (8 speakers, 2 cores: final
p95 0.94 vs 1.40 s; tiny.en's WER 9.4 vs 7.5 %; README, session 29)."""


def ladder_to_json(ladder: Iterable[TierSpec]) -> str:
    """The LIVENEXUS_TIERS value for ``ladder`` (compact: it is read by a program, and shown by kubectl)."""
    return json.dumps([t.to_json() for t in ladder], separators=(",", ":"))


def parse_ladder(raw: str) -> tuple[TierSpec, ...]:
    """Parse a JSON ladder (a LIVENEXUS_TIERS value); raises :class:`LadderError`."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LadderError(f"is not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not data or not all(isinstance(x, dict) for x in data):
        raise LadderError("must be a non-empty JSON list of objects")
    return tuple(TierSpec.from_json(x) for x in data)


@dataclass(frozen=True)
class TierThresholds:
    """When the worker moves along the ladder: the CRD's spec.tiers thresholds, the LIVENEXUS_TIER_* values."""

    cpu_high: float = 0.75
    """CPU pressure (fraction of the usable cores) above which the worker steps down."""
    cpu_low: float = 0.45
    """CPU pressure below which it may step up."""
    lag_high_ms: int = 500
    """Inference lag (age of the oldest queued job) above which it steps down."""
    lag_low_ms: int = 150
    """Lag below which it may step up."""
    down_window_s: float = 3.0
    """Pressure must last this long before stepping down."""
    up_window_s: float = 20.0
    """Calm must last this long before stepping up."""
    cooldown_s: float = 4.0
    """Minimum time between two tier changes."""


DEFAULT_THRESHOLDS: Final = TierThresholds()
"""The defaults of the worker's settings, of the operator's RoomSpec and of the CRD's spec.tiers."""
