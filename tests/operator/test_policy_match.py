"""TranscriptionPolicy parsing: hostile room patterns are refused, bounds hold, bad specs get clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from livenexus_operator.transcription_policy import (
    MAX_MATCHED_NAME_CHARS,
    PolicyError,
    TranscriptionPolicy,
    compile_pattern,
    room_metadata,
)

TEMPLATE = {"livekit": {"url": "ws://127.0.0.1:7880", "credentialsSecretRef": {"name": "lk"}}}


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"template": TEMPLATE, **spec}}


@pytest.mark.parametrize("pattern", [
    "(a+)+$",            # nested repeat: exponential backtracking
    "(a|a)*b",           # repeated alternation: exponential on "aaaa...c"
    "(a*)*",
    "(?:x+y?)*z",
    ".*.*.*x",           # three unbounded repeats: cubic
    r"(a)\1",            # backreference
    "(?=a)a",            # lookahead
    "(?<!a)b",           # lookbehind
    "(?>a+)b",           # atomic group
    "a{1,1000}b{1,1000}c{1,1000}",
    "x" * 257,           # too long
    "(",                 # not a regex
])
def test_hostile_or_broken_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PolicyError):
        compile_pattern(pattern)
    with pytest.raises(PolicyError):
        TranscriptionPolicy.from_body(body(match={"roomPattern": pattern}))


@pytest.mark.parametrize("pattern", ["support-[0-9]+", "(sales|support)-.*", "team-[a-z]{2,8}-\\d+", "a?b?c?d?"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    compile_pattern(pattern)


def test_pattern_is_a_full_match_and_long_names_never_match() -> None:
    p = TranscriptionPolicy.from_body(body(match={"roomPrefix": "s", "roomPattern": "s.*-[0-9]+"}))
    assert p.matches_name("support-12")
    assert not p.matches_name("support-12x") and not p.matches_name("xsupport-12")
    assert not p.matches_name("s" + "a" * MAX_MATCHED_NAME_CHARS + "-1")


@pytest.mark.parametrize("spec,message", [
    ({"template": {}}, "template.livekit"),
    ({"maxRooms": -1}, "maxRooms"),
    ({"maxRooms": True}, "maxRooms"),
    ({"gracePeriodSeconds": 10**9}, "gracePeriodSeconds"),
    ({"match": {"roomMetadata": {"k": 1}}}, "roomMetadata"),
    ({"match": {"participantAttributes": {f"k{i}": "v" for i in range(17)}}}, "participantAttributes"),
    ({"match": "all"}, "spec.match"),
])
def test_bad_specs_say_what_is_wrong(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        TranscriptionPolicy.from_body(body(**spec))


def test_template_cannot_set_room_or_suspend() -> None:
    p = TranscriptionPolicy.from_body(body(template={**TEMPLATE, "room": "other", "suspend": True}))
    assert "room" not in p.template and "suspend" not in p.template


def test_room_metadata_is_parsed_defensively() -> None:
    assert room_metadata('{"a": "b"}') == {"a": "b"}
    assert room_metadata("[1, 2]") == {} and room_metadata("{") == {} and room_metadata("") == {}
    assert room_metadata('{"a": "' + "x" * 70000 + '"}') == {}
    p = TranscriptionPolicy.from_body(body(match={"roomMetadata": {"a": "None"}}))
    assert not p.matches("r", "{}", [])  # a missing key is not the string "None"
