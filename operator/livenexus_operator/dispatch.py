"""Pure decision: observed LiveKit rooms + TranscriptionPolicies + the TranscriptionRooms policies own →
which TranscriptionRooms to create and which to delete.

No I/O and no clock of its own, so every race (duplicate, late and lost webhooks, a resync in between)
is a unit test. The caller (``dispatch_loop``) creates with POST (never overwriting an object it does not
own) and deletes with a uid precondition (never deleting one created since).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from livenexus_common.contract import API_VERSION, KIND
from livenexus_operator.dispatch_book import LiveRoom, RoomBook
from livenexus_operator.transcription_policy import POLICY_API_VERSION, POLICY_KIND, TranscriptionPolicy

POLICY_LABEL = "livenexus.io/policy"
"""Label of every TranscriptionRoom a policy created: the policy's name."""
LIVEKIT_ROOM_LABEL = "livenexus.io/livekit-room"
"""Label with the LiveKit room name when it is a valid label value, else its hash (selectable either way)."""
LIVEKIT_ROOM_ANNOTATION = "livenexus.io/livekit-room"
"""Annotation with the exact LiveKit room name (any characters)."""

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _slug(text: str, n: int) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", text.lower())[:n].strip("-")
    return out or "x"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def room_object_name(policy: str, room: str) -> str:
    """The TranscriptionRoom's name for LiveKit room ``room`` under ``policy``: readable where the name
    allows, and always suffixed with a hash of both, so no two (policy, room) pairs share a name whatever
    characters LiveKit allowed in the room name. A DNS-1123 label of at most 63 characters."""
    return f"{_slug(policy, 24)}-{_slug(room, 28)}-{_digest(policy + chr(0) + room, 8)}"


def room_label(room: str) -> str:
    if len(room) <= 63 and _LABEL_VALUE.match(room):
        return room
    return f"sha256-{_digest(room, 16)}"


@dataclass(frozen=True)
class Owned:
    """A TranscriptionRoom that carries the policy label (as the room index holds it)."""

    namespace: str
    """Its namespace."""
    name: str
    """Its name."""
    uid: str
    """metadata.uid (the delete precondition)."""
    policy: str
    """Its livenexus.io/policy label."""
    livekit_room: str
    """Its LiveKit room annotation."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owned | None:
        meta = body.get("metadata") or {}
        policy = (meta.get("labels") or {}).get(POLICY_LABEL)
        room = (meta.get("annotations") or {}).get(LIVEKIT_ROOM_ANNOTATION)
        if not policy or not room:
            return None
        return cls(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid") or ""), policy, room)


@dataclass(frozen=True)
class Want:
    """A TranscriptionRoom that should exist."""

    policy: TranscriptionPolicy
    """The policy that matched."""
    room: str
    """LiveKit room name."""

    @property
    def name(self) -> str:
        return room_object_name(self.policy.name, self.room)


@dataclass
class PolicyCount:
    """One policy's share of a plan (for its status)."""

    active: int = 0
    """TranscriptionRooms it keeps (existing and to be created)."""
    waiting: int = 0
    """Rooms with audio it matched but left out: maxRooms reached."""


@dataclass
class Plan:
    """What one pass decided."""

    create: list[Want] = field(default_factory=list)
    """To create (POST)."""
    delete: list[Owned] = field(default_factory=list)
    """To delete (uid precondition)."""
    counts: dict[tuple[str, str], PolicyCount] = field(default_factory=dict)
    """Per policy (namespace, name)."""


def order_policies(policies: Iterable[TranscriptionPolicy]) -> list[TranscriptionPolicy]:
    """The order in which policies claim a room: the first match wins, by (namespace, name)."""
    return sorted(policies, key=lambda p: p.key)


def _claim(room: LiveRoom, policies: Sequence[TranscriptionPolicy]) -> TranscriptionPolicy | None:
    attributes = room.attributes() if any(p.attributes for p in policies) else []
    for policy in policies:
        if policy.matches(room.name, room.metadata, attributes):
            return policy
    return None


def plan(book: RoomBook, policies: Iterable[TranscriptionPolicy], owned: Iterable[Owned], now: float) -> Plan:
    """The creates and deletes that make the owned TranscriptionRooms match the rooms that want a worker.

    Existing rooms keep their slot when a policy's maxRooms is lowered (a running transcription is not cut
    off); new ones fill free slots in the order their audio appeared. Until the first resync the book may
    miss rooms, so nothing is deleted then.
    """
    ordered = order_policies(policies)
    by_key = {p.key: p for p in ordered}
    out = Plan(counts={p.key: PolicyCount() for p in ordered})
    wanted: dict[tuple[str, str, str], tuple[TranscriptionPolicy, LiveRoom]] = {}
    for room in book.rooms.values():
        policy = _claim(room, ordered) if room.audio_since is not None else None
        if policy is not None and room.wants_worker(now, policy.grace_s):
            wanted[(policy.namespace, policy.name, room.name)] = (policy, room)
    kept: set[tuple[str, str, str]] = set()
    for obj in sorted(owned, key=lambda o: (o.namespace, o.name)):
        key = (obj.namespace, obj.policy, obj.livekit_room)
        if key in wanted and key not in kept and obj.name == room_object_name(obj.policy, obj.livekit_room):
            kept.add(key)
            out.counts[(obj.namespace, obj.policy)].active += 1
        elif book.synced or (obj.namespace, obj.policy) not in by_key:
            out.delete.append(obj)
    pending = sorted(
        ((p, r) for key, (p, r) in wanted.items() if key not in kept),
        key=lambda pr: (pr[1].audio_since or 0.0, pr[1].name),
    )
    for policy, room in pending:
        count = out.counts[policy.key]
        if count.active >= policy.max_rooms:
            count.waiting += 1
            continue
        count.active += 1
        out.create.append(Want(policy, room.name))
    return out


def room_body(want: Want) -> dict[str, Any]:
    """The TranscriptionRoom for ``want``: the policy's template with the room name, owned by the policy
    (deleting the policy deletes its rooms, and their workers with them)."""
    policy = want.policy
    spec = {k: v for k, v in policy.template.items() if k not in ("room", "suspend")}
    spec["room"] = want.room
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": want.name,
            "namespace": policy.namespace,
            "labels": {POLICY_LABEL: policy.name, LIVEKIT_ROOM_LABEL: room_label(want.room)},
            "annotations": {LIVEKIT_ROOM_ANNOTATION: want.room},
            "ownerReferences": [
                {"apiVersion": POLICY_API_VERSION, "kind": POLICY_KIND, "name": policy.name, "uid": policy.uid,
                 "controller": True}
            ],
        },
        "spec": spec,
    }
