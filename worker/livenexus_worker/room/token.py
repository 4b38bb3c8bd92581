"""The worker's own LiveKit access token: an agent that may join one room, subscribe and publish data."""

from __future__ import annotations

import datetime as dt

from livekit import api

from livenexus_worker.room.settings import WorkerSettings

TOKEN_TTL = dt.timedelta(minutes=10)


def mint_token(settings: WorkerSettings, ttl: dt.timedelta = TOKEN_TTL) -> str:
    """A short-lived JWT; a fresh one is minted for every (re)connect, so expiry never strands the worker.

    Not hidden: LiveKit blanks the identity of hidden senders, and listeners attribute speech by sender.
    """
    grants = api.VideoGrants(
        room_join=True,
        room=settings.room,
        agent=True,
        can_subscribe=True,
        can_publish=False,
        can_publish_data=True,
        hidden=False,
    )
    return (
        api.AccessToken(settings.api_key, settings.api_secret)
        .with_identity(settings.identity)
        .with_name("LiveNexus transcriber")
        .with_kind("agent")
        .with_ttl(ttl)
        .with_grants(grants)
        .to_jwt()
    )
