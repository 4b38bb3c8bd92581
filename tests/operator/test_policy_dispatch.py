"""The pure policy decision: webhooks (duplicated, late, lost) + resyncs + policies → creates and deletes."""

from __future__ import annotations

from typing import Any

import pytest

from livenexus_common.contract import AGENT_IDENTITY_PREFIX
from livenexus_operator.dispatch import (
    LIVEKIT_ROOM_ANNOTATION,
    LIVEKIT_ROOM_LABEL,
    POLICY_LABEL,
    Owned,
    Want,
    plan,
    room_body,
    room_label,
    room_object_name,
)
from livenexus_operator.dispatch_book import MAX_PEOPLE, ParticipantView, RoomBook, RoomView
from livenexus_operator.transcription_policy import TranscriptionPolicy

TEMPLATE = {"livekit": {"url": "ws://127.0.0.1:7880", "credentialsSecretRef": {"name": "lk"}},
            "model": {"name": "base", "language": "en"}}


def policy(name: str = "p", namespace: str = "ns", **spec: Any) -> TranscriptionPolicy:
    return TranscriptionPolicy.from_body({"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
                                          "spec": {"template": TEMPLATE, **spec}})


def alice(sid: str = "PA_1", audio: tuple[str, ...] = (), **attrs: str) -> ParticipantView:
    return ParticipantView(sid, "alice", 0, attrs, audio)


def synced_book() -> RoomBook:
    book = RoomBook()
    book.replace([], 0.0, 0.0)
    return book


def owned_from(decided_creates: list[Want]) -> list[Owned]:
    return [Owned(w.policy.namespace, w.name, f"uid-{w.name}", w.policy.name, w.room) for w in decided_creates]


def test_no_worker_until_the_first_audio_track() -> None:
    book, pols = synced_book(), [policy()]
    book.room_started("standup", "RM_1", "", 1.0)
    book.participant_joined("standup", "RM_1", alice(), 2.0)
    assert plan(book, pols, [], 3.0).create == []  # scale to zero while nobody publishes audio
    assert book.track("standup", "RM_1", alice(), "TR_a", True, 4.0) == "applied"
    (want,) = plan(book, pols, [], 5.0).create
    assert want.room == "standup" and want.policy.name == "p"


def test_duplicate_webhooks_change_nothing() -> None:
    book, pols = synced_book(), [policy()]
    assert book.room_started("r", "RM_1", "", 1.0) == "applied"
    assert book.room_started("r", "RM_1", "", 1.0) == "duplicate"
    assert book.participant_joined("r", "RM_1", alice(), 1.0) == "applied"
    assert book.participant_joined("r", "RM_1", alice(), 1.0) == "duplicate"
    book.track("r", "RM_1", alice(), "TR_a", True, 2.0)
    book.track("r", "RM_1", alice(), "TR_a", True, 2.0)
    first = plan(book, pols, [], 3.0)
    assert len(first.create) == 1
    # Once it exists, the same events again plan nothing at all.
    book.track("r", "RM_1", alice(), "TR_a", True, 4.0)
    again = plan(book, pols, owned_from(first.create), 5.0)
    assert again.create == [] and again.delete == []


def test_late_events_about_an_ended_participant_or_room_are_dropped() -> None:
    book, pols = synced_book(), [policy(gracePeriodSeconds=0)]
    book.track("r", "RM_1", alice(), "TR_a", True, 1.0)
    assert book.participant_left("r", "RM_1", alice(), 2.0) == "applied"
    # Delivered after the leave (out of order): the join and publish of that same participant sid.
    assert book.participant_joined("r", "RM_1", alice(), 3.0) == "stale"
    assert book.track("r", "RM_1", alice(), "TR_a", True, 3.0) == "stale"
    assert plan(book, pols, [], 4.0).create == []
    # A room instance that finished does not come back through its late events either.
    book.track("q", "RM_2", alice("PA_2"), "TR_b", True, 5.0)
    assert book.room_finished("q", "RM_2") == "applied"
    assert book.track("q", "RM_2", alice("PA_3"), "TR_c", True, 6.0) == "stale"
    assert book.room_started("q", "RM_2", "", 6.0) == "stale"
    assert "q" not in book.rooms
    # ...but a new instance of the same name (new sid) is a new room.
    assert book.track("q", "RM_3", alice("PA_4"), "TR_d", True, 7.0) == "applied"


def test_grace_period_then_delete_and_room_finished_deletes_at_once() -> None:
    book, pols = synced_book(), [policy(gracePeriodSeconds=30)]
    book.track("r", "RM_1", alice(), "TR_a", True, 0.0)
    owned = owned_from(plan(book, pols, [], 1.0).create)
    book.participant_left("r", "RM_1", alice(), 10.0)
    assert plan(book, pols, owned, 39.0).delete == []  # within the grace period someone may come back
    (gone,) = plan(book, pols, owned, 40.0).delete
    assert gone.livekit_room == "r"
    # Someone rejoins within the grace period and publishes: the same object is kept.
    book.track("r", "RM_1", alice("PA_9"), "TR_z", True, 20.0)
    assert plan(book, pols, owned, 60.0).delete == []
    book.room_finished("r", "RM_1")
    assert [o.livekit_room for o in plan(book, pols, owned, 61.0).delete] == ["r"]


def test_agents_never_count_as_people() -> None:
    book, pols = synced_book(), [policy(gracePeriodSeconds=0)]
    worker = ParticipantView("PA_w", f"{AGENT_IDENTITY_PREFIX}-x", 0, {}, ("TR_w",))
    other_agent = ParticipantView("PA_o", "bot", 4, {}, ("TR_o",))
    assert book.track("r", "RM_1", worker, "TR_w", True, 1.0) == "ignored"
    assert book.track("r", "RM_1", other_agent, "TR_o", True, 1.0) == "ignored"
    assert plan(book, pols, [], 2.0).create == []
    # The worker staying in the room does not keep it: only the human's audio does.
    book.track("r", "RM_1", alice(), "TR_a", True, 3.0)
    owned = owned_from(plan(book, pols, [], 4.0).create)
    book.participant_left("r", "RM_1", alice(), 5.0)
    book.replace([RoomView("r", "RM_1", "", (worker,))], 6.0, 6.0)
    assert [o.livekit_room for o in plan(book, pols, owned, 6.0).delete] == ["r"]


def test_lost_webhooks_are_repaired_by_resync() -> None:
    book, pols = synced_book(), [policy(gracePeriodSeconds=0)]
    # The operator missed every webhook of this room: the resync alone creates it...
    book.replace([RoomView("r", "RM_1", "", (alice(audio=("TR_a",)),))], 1.0, 1.0)
    decided = plan(book, pols, [], 1.0)
    assert [w.room for w in decided.create] == ["r"]
    # ...and it missed room_finished too: the next resync deletes it.
    book.replace([], 2.0, 2.0)
    assert [o.livekit_room for o in plan(book, pols, owned_from(decided.create), 2.0).delete] == ["r"]


def test_a_resync_listed_before_a_webhook_does_not_undo_it() -> None:
    book, pols = synced_book(), [policy()]
    book.track("r", "RM_1", alice(), "TR_a", True, 5.0)
    book.replace([], 6.0, taken_at=4.0)  # the listing was taken before the webhook arrived
    assert [w.room for w in plan(book, pols, [], 6.0).create] == ["r"]


def test_nothing_is_deleted_before_the_first_resync() -> None:
    book = RoomBook()  # e.g. right after an operator restart
    owned = [Owned("ns", room_object_name("p", "r"), "u", "p", "r")]
    assert plan(book, [policy()], owned, 1.0).delete == []
    book.replace([], 2.0, 2.0)
    assert len(plan(book, [policy()], owned, 2.0).delete) == 1


def test_max_rooms_keeps_running_rooms_and_fills_in_audio_order() -> None:
    book, pols = synced_book(), [policy(maxRooms=2)]
    for i, name in enumerate(["c", "a", "b"]):
        book.track(name, f"RM_{name}", alice(f"PA_{name}"), f"TR_{name}", True, float(i))
    decided = plan(book, pols, [], 10.0)
    assert [w.room for w in decided.create] == ["c", "a"]  # first audio first, not by name
    assert decided.counts[("ns", "p")].waiting == 1
    # A room that already runs keeps its slot when maxRooms drops under it.
    lowered = plan(book, [policy(maxRooms=1)], owned_from(decided.create), 11.0)
    assert lowered.delete == [] and lowered.create == []
    assert lowered.counts[("ns", "p")].active == 2 and lowered.counts[("ns", "p")].waiting == 1


def test_first_matching_policy_claims_a_room_and_matching_rules() -> None:
    support = policy("support", roomPrefix="x", match={"roomPrefix": "support-"})
    tagged = policy("tagged", match={"roomMetadata": {"transcribe": "yes"}})
    vip = policy("vip", match={"roomPattern": "vip-[0-9]+", "participantAttributes": {"tier": "gold"}})
    book = synced_book()
    book.room_started("support-1", "RM_s", "", 0.0)
    book.room_started("meta", "RM_m", '{"transcribe": "yes"}', 0.0)
    book.room_started("badmeta", "RM_b", "not json", 0.0)
    book.room_started("vip-7", "RM_v", "", 0.0)
    book.room_started("vip-8", "RM_w", "", 0.0)
    for name, sid in [("support-1", "RM_s"), ("meta", "RM_m"), ("badmeta", "RM_b"), ("vip-8", "RM_w")]:
        book.track(name, sid, alice(f"PA_{name}"), f"TR_{name}", True, 1.0)
    book.track("vip-7", "RM_v", alice("PA_g", tier="gold"), "TR_g", True, 1.0)
    got = {w.room: w.policy.name for w in plan(book, [vip, tagged, support], [], 2.0).create}
    assert got == {"support-1": "support", "meta": "tagged", "vip-7": "vip"}


def test_objects_not_ours_or_duplicated_are_handled() -> None:
    book, pols = synced_book(), [policy()]
    book.track("r", "RM_1", alice(), "TR_a", True, 0.0)
    right = Owned("ns", room_object_name("p", "r"), "u1", "p", "r")
    # A copy under another name (hand-made with our labels, or from an older naming) is deleted.
    stray = Owned("ns", "r-copy", "u2", "p", "r")
    decided = plan(book, pols, [right, stray], 1.0)
    assert decided.create == [] and decided.delete == [stray]


@pytest.mark.parametrize("room", ["standup", "Standup Room ☕", "a" * 256, "x.y_z", "../etc", "", "-"])
def test_names_are_valid_deterministic_and_distinct(room: str) -> None:
    import re

    name = room_object_name("p", room)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name == room_object_name("p", room)
    assert name != room_object_name("p", room + "!") and name != room_object_name("p2", room)
    label = room_label(room)
    assert len(label) <= 63 and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", label)


def test_room_body_carries_owner_labels_and_template() -> None:
    body = room_body(Want(policy(), "Standup Room"))
    meta = body["metadata"]
    assert meta["labels"][POLICY_LABEL] == "p"
    assert meta["labels"][LIVEKIT_ROOM_LABEL].startswith("sha256-")
    assert meta["annotations"][LIVEKIT_ROOM_ANNOTATION] == "Standup Room"
    (ref,) = meta["ownerReferences"]
    assert ref["kind"] == "TranscriptionPolicy" and ref["uid"] == "uid-p" and ref["controller"] is True
    assert body["spec"]["room"] == "Standup Room" and body["spec"]["livekit"] == TEMPLATE["livekit"]
    assert "suspend" not in body["spec"]


def test_the_book_is_bounded() -> None:
    book = RoomBook(max_rooms=3)
    for i in range(5):
        book.room_started(f"r{i}", f"RM_{i}", "", 0.0)
    assert len(book.rooms) == 3
    assert book.room_started("x" * 300, "RM_long", "", 0.0) == "dropped"
    crowd = RoomBook()
    for i in range(MAX_PEOPLE + 5):
        crowd.participant_joined("big", "RM_big", alice(f"PA_{i}"), 0.0)
    assert len(crowd.rooms["big"].people) == MAX_PEOPLE
    many_tracks = ParticipantView("PA_t", "t", 0, {}, tuple(f"TR_{i}" for i in range(500)))
    crowd.replace([RoomView("big", "RM_big", "", (many_tracks,))], 1.0, 1.0)
    assert len(crowd.rooms["big"].people["PA_t"].audio) <= 32
