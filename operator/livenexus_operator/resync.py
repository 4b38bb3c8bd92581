"""The level-triggered half of the policies: read every room and its participants from RoomService.

Webhooks are a fast path only; a webhook that was lost (operator restarting, network, a standby replica
answering) is repaired by the next resync, and one that was duplicated changes nothing. Participants are
listed only for rooms that report some (most idle rooms cost one list entry, not a call of their own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from livekit import api

from livenexus_operator.dispatch_book import MAX_ROOM_NAME, RoomView
from livenexus_operator.webhooks import participant_view

LIST_CONCURRENCY = 8
"""list_participants calls in flight at once."""
TIMEOUT_S = 10.0
"""Timeout of one RoomService call."""


class ResyncError(RuntimeError):
    """RoomService could not be read: the book keeps what it had (never emptied on a failure)."""


async def list_rooms(session: aiohttp.ClientSession, url: str, key: str, secret: str,
                     max_rooms: int) -> list[RoomView]:
    """Every room (at most ``max_rooms``) with its participants, as RoomService sees them now."""
    lk = api.LiveKitAPI(url, key, secret, session=session, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
    try:
        rooms: Sequence[api.Room] = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
        sem = asyncio.Semaphore(LIST_CONCURRENCY)

        async def one(room: api.Room) -> RoomView:
            people: tuple[api.ParticipantInfo, ...] = ()
            if room.num_participants > 0:
                async with sem:
                    try:
                        resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room.name))
                        people = tuple(resp.participants)
                    except api.TwirpError as exc:
                        if exc.code != "not_found":
                            raise
                        # Ended between the two calls: it lists with nobody in it, and goes at the next resync.
            return RoomView(room.name, room.sid, room.metadata, tuple(participant_view(p) for p in people))

        wanted = [r for r in rooms if r.name and len(r.name) <= MAX_ROOM_NAME][:max_rooms]
        return list(await asyncio.gather(*(one(r) for r in wanted)))
    except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ResyncError(f"RoomService at {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        await lk.aclose()
