"""The contract on its own: the ladder's wire form, the defaults, and the transcript message.

The pairing of the two programs (the operator's rendered pod parsed by the worker) is tested in one place,
``tests/operator/test_contract.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from livenexus_common.contract import (
    DEFAULT_THRESHOLDS,
    DEFAULT_TIERS,
    RENDERED_ENV,
    TRANSCRIPT_FIELDS,
    TRANSCRIPT_OPTIONAL_FIELDS,
    WORKER_ENV,
    ContractError,
    Env,
    TierSpec,
    ladder_from_json,
    ladder_to_json,
    model_ladder,
    stream_attributes,
    transcript_message,
)

ROOT = Path(__file__).resolve().parents[2]


def test_env_names_are_the_class_attributes() -> None:
    names = {v for k, v in vars(Env).items() if not k.startswith("_")}
    assert names == WORKER_ENV
    assert RENDERED_ENV < WORKER_ENV
    assert all(re.fullmatch(r"(LIVEKIT|LIVENEXUS)_[A-Z_]+", n) for n in names)


def test_ladder_round_trips_through_the_env_value() -> None:
    ladder = (TierSpec("small", "int8_float32", 3, 200), TierSpec("tiny", "int8", 1, 0))
    raw = ladder_to_json(ladder)
    assert json.loads(raw)[0] == {"model": "small", "computeType": "int8_float32", "beamSize": 3,
                                  "partialIntervalMs": 200}
    assert ladder_from_json(raw) == ladder


def test_a_partial_model_rides_in_the_ladder_only_when_set() -> None:
    drafted = TierSpec("base", "int8", 5, 250, "tiny.en")
    raw = ladder_to_json((drafted, TierSpec()))
    assert [e.get("partialModel") for e in json.loads(raw)] == ["tiny.en", None]
    assert ladder_from_json(raw) == (drafted, TierSpec())
    assert drafted.name == "base-int8-b5-p250+tiny.en" and TierSpec().name == "base-int8-b5-p250"
    assert ladder_from_json('[{"model": "base", "partial_model": "tiny.en"}]') == (drafted,)


def test_ladder_entries_take_defaults_and_snake_case() -> None:
    assert ladder_from_json('[{"model": "base"}]') == (TierSpec(),)
    assert ladder_from_json('[{"model": "tiny", "beam_size": "2", "partial_interval_ms": 0}]') == (
        TierSpec("tiny", "int8", 2, 0),)


@pytest.mark.parametrize("raw", ["{", "[]", "{}", "[1]", '[{"beamSize": true}]', '[{"beamSize": "x"}]',
                                 '[{"partialModel": 5}]'])
def test_bad_ladders_are_contract_errors(raw: str) -> None:
    # The ladder's own module knows no variable names; the contract's parser says which one was bad.
    with pytest.raises(ContractError, match=r"^LIVENEXUS_TIERS: "):
        ladder_from_json(raw)


def test_default_ladder_keeps_partials_on_tiny_before_it_drops_them() -> None:
    # Past base's slow partials the worker's own ladder goes on with partials on tiny.en, not finals only on base.
    assert DEFAULT_TIERS[:3] == model_ladder("base", "int8", 5)[:3]
    assert DEFAULT_TIERS[3:] == (TierSpec("tiny.en", "int8", 1, 600), TierSpec("tiny.en", "int8", 1, 0))
    assert [t.name for t in DEFAULT_TIERS] == [
        "base-int8-b5-p250", "base-int8-b1-p250", "base-int8-b1-p600", "tiny.en-int8-b1-p600", "tiny.en-int8-b1-p0"]


def test_model_ladder_drops_repeated_rungs() -> None:
    assert model_ladder("small", "int8", 1) == (
        TierSpec("small", "int8", 1, 250), TierSpec("small", "int8", 1, 600), TierSpec("small", "int8", 1, 0))


def test_threshold_defaults_are_the_crds() -> None:
    import yaml

    crd = yaml.safe_load((ROOT / "charts" / "livenexus" / "crds" / "transcriptionrooms.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    tiers = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tiers"]["properties"]
    t = DEFAULT_THRESHOLDS
    assert {k: tiers[k]["default"] for k in ("cpuHigh", "cpuLow", "lagHighMs", "lagLowMs", "downWindowSeconds",
                                              "upWindowSeconds", "cooldownSeconds")} == {
        "cpuHigh": t.cpu_high, "cpuLow": t.cpu_low, "lagHighMs": t.lag_high_ms, "lagLowMs": t.lag_low_ms,
        "downWindowSeconds": t.down_window_s, "upWindowSeconds": t.up_window_s, "cooldownSeconds": t.cooldown_s}


def test_transcript_message_has_every_field_and_rounds_times() -> None:
    msg = transcript_message(text="hi there", is_final=True, speaker="alice", segment_id="s-1", start=1.23456,
                             end=2.0001, latency_ms=412.345, stable="hi", unstable=" there", language="en",
                             tier="base-int8-b5-p250")
    assert set(msg) == TRANSCRIPT_FIELDS
    assert (msg["type"], msg["start"], msg["end"], msg["latencyMs"]) == ("transcript", 1.235, 2.0, 412.3)
    assert json.loads(json.dumps(msg)) == msg


def test_stream_attributes() -> None:
    assert stream_attributes(track_sid="TR_1", segment_id="s-1", is_final=False) == {
        "lk.transcribed_track_id": "TR_1", "lk.segment_id": "s-1", "lk.transcription_final": "false"}


def test_the_console_page_reads_only_contract_fields() -> None:
    """console/src/transcript.ts parseWire: every ``p.<field>`` it reads is a field of the message."""
    source = (ROOT / "console" / "src" / "transcript.ts").read_text()
    body = source[source.index("export function parseWire"):]
    body = body[: body.index("\n}\n")]
    read = set(re.findall(r"\bp\.(\w+)", body))
    assert read and read <= TRANSCRIPT_FIELDS, read - TRANSCRIPT_FIELDS
    assert "'transcript'" in body


def _message(trace: dict[str, float] | None = None) -> dict[str, object]:
    return dict(transcript_message(text="hi", is_final=True, speaker="a", segment_id="s-1", start=0.0, end=1.0,
                                   latency_ms=1.0, stable="hi", unstable="", language="en", tier="t", trace=trace))


def test_transcript_message_trace_is_optional_and_bounded() -> None:
    assert "trace" not in _message() and "trace" not in _message({})
    # Unknown stamps (a bug, or a huge dict) never reach the wire: only the contract's stage names do.
    hostile = {f"k{i}": 1.0 for i in range(10_000)} | {"recv": 12.3456789, "emit": 13}
    msg = _message(hostile)
    assert msg["trace"] == {"recv": 12.345679, "emit": 13.0}
    assert set(msg) == TRANSCRIPT_FIELDS | TRANSCRIPT_OPTIONAL_FIELDS
