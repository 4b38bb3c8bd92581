"""What the operator believes each LiveKit room holds: fed by webhooks, replaced by every resync.

Pure (no I/O, the clock is passed in). Webhooks can arrive twice, late or never; the book is built so that
none of this matters for long:

- duplicates are no-ops (sets keyed by sid);
- a late event about a participant or room instance that already ended is recognised by its sid (LiveKit
  gives every join and every room instance a new one) and dropped: ended sids are remembered, bounded;
- a lost event is repaired by :meth:`RoomBook.replace`, the periodic resync from RoomService.

Only humans count: the LiveNexus worker itself (and any other agent) publishes nothing we transcribe and must
not keep its own room alive.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from livenexus_common.contract import AGENT_IDENTITY_PREFIX

MAX_ROOM_NAME = 256
"""Longer LiveKit room names are ignored (and counted): nothing about them is kept."""
MAX_ROOMS = 20000
"""Rooms the book tracks at once; events about further rooms are dropped (a resync re-reads them)."""
MAX_PEOPLE = 1000
"""Participants tracked per room (enough to know someone publishes audio)."""
MAX_TRACKS = 32
"""Audio tracks tracked per participant."""
MAX_ATTRIBUTES = 64
"""Attributes kept per participant (for participantAttributes matching)."""
MAX_ENDED = 50000
"""Ended room and participant sids remembered to drop late events about them."""
AGENT_KIND = 4
"""ParticipantInfo.Kind.AGENT."""


def is_agent(identity: str, kind: int) -> bool:
    return kind == AGENT_KIND or identity.startswith(AGENT_IDENTITY_PREFIX)


@dataclass
class Person:
    """One human participant (one join: a rejoin is a new sid)."""

    identity: str
    """Participant identity."""
    attributes: dict[str, str] = field(default_factory=dict)
    """Participant attributes (bounded)."""
    audio: set[str] = field(default_factory=set)
    """Sids of its published audio tracks."""


@dataclass
class LiveRoom:
    """One instance of a LiveKit room."""

    name: str
    """Room name."""
    sid: str
    """Room instance sid ('' while only known from an event without one)."""
    metadata: str = ""
    """Room metadata as LiveKit holds it."""
    people: dict[str, Person] = field(default_factory=dict)
    """Humans present, by participant sid."""
    audio_since: float | None = None
    """When audio first appeared in this instance (None: never): the order in which rooms get a slot."""
    silent_since: float | None = None
    """When the last audio track went away (None while some human publishes audio, or before any did)."""
    touched: float = 0.0
    """When a webhook last changed it: a resync listed before that does not overrule it."""

    @property
    def has_audio(self) -> bool:
        return any(p.audio for p in self.people.values())

    def attributes(self) -> list[Mapping[str, str]]:
        return [p.attributes for p in self.people.values()]

    def wants_worker(self, now: float, grace_s: float) -> bool:
        """Audio now, or audio that went away less than ``grace_s`` ago (someone may come back)."""
        if self.has_audio:
            return True
        return self.silent_since is not None and now - self.silent_since < grace_s

    def _audio_changed(self, had: bool, now: float) -> None:
        has = self.has_audio
        if has and not had:
            self.silent_since = None
            if self.audio_since is None:
                self.audio_since = now
        elif had and not has:
            self.silent_since = now


@dataclass(frozen=True)
class ParticipantView:
    """A participant as a webhook or RoomService describes it."""

    sid: str
    """Participant sid."""
    identity: str
    """Identity."""
    kind: int = 0
    """ParticipantInfo.Kind."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Attributes."""
    audio: tuple[str, ...] = ()
    """Sids of its published audio tracks."""


@dataclass(frozen=True)
class RoomView:
    """A room as RoomService lists it, with its participants (one resync's truth)."""

    name: str
    """Room name."""
    sid: str
    """Room sid."""
    metadata: str = ""
    """Room metadata."""
    participants: tuple[ParticipantView, ...] = ()
    """Its participants."""


class _Ended:
    """A bounded set of sids, oldest forgotten first."""

    def __init__(self, limit: int) -> None:
        self._sids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, sid: str) -> None:
        if not sid:
            return
        self._sids[sid] = None
        self._sids.move_to_end(sid)
        while len(self._sids) > self._limit:
            self._sids.popitem(last=False)

    def __contains__(self, sid: object) -> bool:
        return sid in self._sids

    def __len__(self) -> int:
        return len(self._sids)


def _person(view: ParticipantView) -> Person:
    attrs = dict(list(view.attributes.items())[:MAX_ATTRIBUTES])
    return Person(view.identity, attrs, set(view.audio[:MAX_TRACKS]))


class RoomBook:
    """The observed LiveKit rooms. Every mutator returns what it did: 'applied', 'duplicate', 'stale' (about
    something that already ended), 'dropped' (over a bound or unusable) or 'ignored' (not ours to track)."""

    def __init__(self, max_rooms: int = MAX_ROOMS) -> None:
        self.rooms: dict[str, LiveRoom] = {}
        self.synced = False
        """True once a resync has replaced the book: before that, absence from it proves nothing."""
        self._max_rooms = max_rooms
        self._ended_rooms = _Ended(MAX_ENDED)
        self._ended_people = _Ended(MAX_ENDED)

    def _room(self, name: str, sid: str, metadata: str | None, now: float) -> LiveRoom | None:
        """The live instance ``sid`` of room ``name``, created if new; None for an ended or unusable one."""
        if not name or len(name) > MAX_ROOM_NAME or sid in self._ended_rooms:
            return None
        room = self.rooms.get(name)
        if room is not None and sid and room.sid and room.sid != sid:
            # A new instance of the name: the old one's room_finished was lost.
            self._ended_rooms.add(room.sid)
            room = None
        if room is None:
            if len(self.rooms) >= self._max_rooms:
                return None
            room = self.rooms[name] = LiveRoom(name, sid)
        if sid and not room.sid:
            room.sid = sid
        if metadata is not None:
            room.metadata = metadata
        room.touched = now
        return room

    def room_started(self, name: str, sid: str, metadata: str, now: float) -> str:
        if sid in self._ended_rooms:
            return "stale"
        known = self.rooms.get(name)
        if known is not None and known.sid == sid:
            return "duplicate"
        return "applied" if self._room(name, sid, metadata, now) is not None else "dropped"

    def room_finished(self, name: str, sid: str) -> str:
        room = self.rooms.get(name)
        if room is None or (sid and room.sid and room.sid != sid):
            self._ended_rooms.add(sid)
            return "duplicate"
        self._ended_rooms.add(room.sid or sid)
        for psid in room.people:
            self._ended_people.add(psid)
        del self.rooms[name]
        return "applied"

    def participant_joined(self, name: str, sid: str, who: ParticipantView, now: float) -> str:
        if is_agent(who.identity, who.kind):
            return "ignored"
        if not who.sid or who.sid in self._ended_people or sid in self._ended_rooms:
            return "stale" if who.sid else "dropped"
        room = self._room(name, sid, None, now)
        if room is None:
            return "dropped"
        person = room.people.get(who.sid)
        if person is not None:
            had = room.has_audio
            person.attributes = dict(list(who.attributes.items())[:MAX_ATTRIBUTES])
            person.audio.update(who.audio[: max(0, MAX_TRACKS - len(person.audio))])
            room._audio_changed(had, now)
            return "duplicate"
        if len(room.people) >= MAX_PEOPLE:
            return "dropped"
        had = room.has_audio
        room.people[who.sid] = _person(who)
        room._audio_changed(had, now)
        return "applied"

    def participant_left(self, name: str, sid: str, who: ParticipantView, now: float) -> str:
        if is_agent(who.identity, who.kind):
            return "ignored"
        self._ended_people.add(who.sid)
        room = self.rooms.get(name)
        if room is None or who.sid not in room.people:
            return "duplicate"
        had = room.has_audio
        del room.people[who.sid]
        room._audio_changed(had, now)
        room.touched = now
        return "applied"

    def track(self, name: str, sid: str, who: ParticipantView, track_sid: str, published: bool, now: float) -> str:
        """An audio track published (or unpublished) by ``who``; a publish also implies the join."""
        if is_agent(who.identity, who.kind):
            return "ignored"
        if not track_sid:
            return "dropped"
        if published:
            view = ParticipantView(who.sid, who.identity, who.kind, who.attributes, (track_sid,))
            result = self.participant_joined(name, sid, view, now)
            return "applied" if result == "duplicate" else result
        room = self.rooms.get(name)
        person = room.people.get(who.sid) if room is not None else None
        if room is None or person is None or track_sid not in person.audio:
            return "duplicate"
        had = room.has_audio
        person.audio.discard(track_sid)
        room._audio_changed(had, now)
        room.touched = now
        return "applied"

    def replace(self, views: Iterable[RoomView], now: float, taken_at: float) -> None:
        """Make the book what RoomService listed at ``taken_at`` (level-triggered repair of lost webhooks).

        Rooms a webhook changed after ``taken_at`` keep the webhook's newer picture (the listing raced with
        it); times of rooms that stay are kept, so a resync never restarts a grace period.
        """
        fresh: dict[str, LiveRoom] = {
            name: room for name, room in self.rooms.items() if room.touched >= taken_at
        }
        for view in views:
            if len(fresh) >= self._max_rooms:
                break
            if not view.name or len(view.name) > MAX_ROOM_NAME or view.sid in self._ended_rooms:
                continue
            if view.name in fresh:
                continue
            old = self.rooms.get(view.name)
            if old is not None and old.sid and view.sid and old.sid != view.sid:
                self._ended_rooms.add(old.sid)
                old = None
            room = LiveRoom(view.name, view.sid, view.metadata)
            if old is not None:
                room.audio_since, room.silent_since = old.audio_since, old.silent_since
            people = [p for p in view.participants if p.sid and not is_agent(p.identity, p.kind)]
            room.people = {p.sid: _person(p) for p in people[:MAX_PEOPLE]}
            had = old.has_audio if old is not None else False
            if had or room.has_audio:
                room._audio_changed(had, now)
            fresh[view.name] = room
        # Rooms missing from the listing are dropped without remembering their sid as ended: a webhook about
        # them that raced with the listing must still be able to bring them back.
        self.rooms = fresh
        self.synced = True
