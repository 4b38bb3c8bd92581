"""Typed, validated view of a TranscriptionPolicy: which LiveKit rooms it transcribes and with what.

Everything here is pure. A policy comes from any namespace's author, so its room pattern is untrusted
input evaluated against untrusted room names (from LiveKit webhooks): Python's ``re`` has no timeout,
so patterns are limited to a subset without catastrophic backtracking (see :func:`compile_pattern`).
"""

from __future__ import annotations

import json
import re
import re._parser as sre  # 3.11's parser: no public API exposes the tree
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from livenexus_common.contract import GROUP, VERSION

POLICY_PLURAL = "transcriptionpolicies"
POLICY_KIND = "TranscriptionPolicy"
POLICY_API_VERSION = f"{GROUP}/{VERSION}"

MAX_PATTERN_CHARS = 256
"""Longest roomPattern accepted (the CRD says the same)."""
MAX_MATCHED_NAME_CHARS = 256
"""Room names longer than this never match a pattern: with at most :data:`MAX_UNBOUNDED_REPEATS` repeats
and no nested ones, matching is at most quadratic in this bound."""
MAX_UNBOUNDED_REPEATS = 2
"""Repeats (``*``, ``+``, ``{n,m}`` with m > 1) a pattern may hold; each one multiplies the backtracking."""
MAX_MATCH_ENTRIES = 16
"""Keys in roomMetadata / participantAttributes."""
MAX_METADATA_CHARS = 64 * 1024
"""Room metadata longer than this is not parsed (it then matches no roomMetadata rule)."""

_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_FORBIDDEN = {"GROUPREF", "GROUPREF_EXISTS", "ASSERT", "ASSERT_NOT", "ATOMIC_GROUP"}


class PolicyError(ValueError):
    """The policy cannot be used (only reachable when the API server's validation was bypassed, or for a
    pattern outside the safe subset, which the CRD schema cannot express)."""


def _walk(items: Any, inside_repeat: bool, counter: list[int]) -> None:
    for op, arg in items:
        name = str(op)
        if name in _FORBIDDEN:
            raise PolicyError(f"roomPattern may not use {name.lower().replace('_', ' ')}")
        if name in _REPEATS:
            lo, hi, sub = arg
            if hi != 1 or lo > 1:
                if inside_repeat:
                    raise PolicyError("roomPattern may not nest repeats (catastrophic backtracking)")
                counter[0] += 1
                if counter[0] > MAX_UNBOUNDED_REPEATS:
                    raise PolicyError(f"roomPattern may hold at most {MAX_UNBOUNDED_REPEATS} repeats")
                _walk(sub, True, counter)
            else:
                _walk(sub, inside_repeat, counter)
        elif name == "SUBPATTERN":
            _walk(arg[-1], inside_repeat, counter)
        elif name == "BRANCH":
            if inside_repeat:
                # Alternatives under a repeat backtrack exponentially when they overlap ((a|a)*).
                raise PolicyError("roomPattern may not repeat an alternation")
            for branch in arg[1]:
                _walk(branch, inside_repeat, counter)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a roomPattern (full match) if it is in the safe subset: bounded length, no backreferences or
    lookaround, no nested repeats, no repeated alternation and at most :data:`MAX_UNBOUNDED_REPEATS` repeats."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PolicyError(f"roomPattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        tree = sre.parse(pattern)
    except re.error as exc:
        raise PolicyError(f"roomPattern is not a regular expression: {exc}") from exc
    _walk(tree, False, [0])
    return re.compile(pattern)


def _str_map(raw: Any, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise PolicyError(f"{what} must map strings to strings")
    if len(raw) > MAX_MATCH_ENTRIES:
        raise PolicyError(f"{what} may hold at most {MAX_MATCH_ENTRIES} entries")
    return dict(raw)


def _int(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PolicyError(f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def room_metadata(raw: str) -> Mapping[str, Any]:
    """LiveKit room metadata as a JSON object; {} when it is empty, too long or not an object."""
    if not raw or len(raw) > MAX_METADATA_CHARS:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class TranscriptionPolicy:
    """One TranscriptionPolicy, defaults applied."""

    namespace: str
    """Where its TranscriptionRooms are created."""
    name: str
    """metadata.name (the livenexus.io/policy label of its rooms)."""
    uid: str
    """metadata.uid (the rooms' ownerReference)."""
    template: Mapping[str, Any]
    """spec.template: a TranscriptionRoom spec without room/suspend, copied into every room."""
    prefix: str = ""
    """spec.match.roomPrefix ('' matches every name)."""
    pattern: re.Pattern[str] | None = None
    """spec.match.roomPattern (full match), None for none."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """spec.match.roomMetadata: keys of the room's JSON metadata that must equal these strings."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """spec.match.participantAttributes: some (human) participant must carry all of these."""
    max_rooms: int = 100
    """spec.maxRooms: TranscriptionRooms this policy keeps at once."""
    grace_s: int = 30
    """spec.gracePeriodSeconds: an empty room keeps its worker this long (someone may rejoin)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TranscriptionPolicy:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        if not isinstance(spec, Mapping):
            raise PolicyError("spec must be an object")
        match = spec.get("match") or {}
        template = spec.get("template")
        if not isinstance(match, Mapping):
            raise PolicyError("spec.match must be an object")
        if not isinstance(template, Mapping) or not isinstance(template.get("livekit"), Mapping):
            raise PolicyError("spec.template.livekit is required")
        prefix = match.get("roomPrefix") or ""
        raw_pattern = match.get("roomPattern") or ""
        if not isinstance(prefix, str) or not isinstance(raw_pattern, str):
            raise PolicyError("roomPrefix and roomPattern must be strings")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            template={k: v for k, v in template.items() if k not in ("room", "suspend")},
            prefix=prefix,
            pattern=compile_pattern(raw_pattern) if raw_pattern else None,
            metadata=_str_map(match.get("roomMetadata"), "spec.match.roomMetadata"),
            attributes=_str_map(match.get("participantAttributes"), "spec.match.participantAttributes"),
            max_rooms=_int(spec, "maxRooms", 100, 0, 10000),
            grace_s=_int(spec, "gracePeriodSeconds", 30, 0, 86400),
        )

    def matches_name(self, room: str) -> bool:
        if not room.startswith(self.prefix):
            return False
        if self.pattern is None:
            return True
        return len(room) <= MAX_MATCHED_NAME_CHARS and self.pattern.fullmatch(room) is not None

    def matches(self, room: str, metadata: str, attributes: list[Mapping[str, str]]) -> bool:
        """Name, then room metadata, then some participant's attributes (the cheap checks first)."""
        if not self.matches_name(room):
            return False
        if self.metadata:
            meta = room_metadata(metadata)
            if any(str(meta.get(k)) != v or k not in meta for k, v in self.metadata.items()):
                return False
        if self.attributes:
            return any(all(a.get(k) == v for k, v in self.attributes.items()) for a in attributes)
        return True
