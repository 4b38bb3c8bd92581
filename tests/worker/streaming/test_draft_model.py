"""A rung with a partial model, on the real models: tiny.en drafts the partials, base makes the finals; a partial
model that cannot load leaves the rung's partials to its own model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.files.feed import feed
from livenexus_worker.inference.textnorm import wer
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions

pytestmark = pytest.mark.model

SAID = "The draft model writes the partials while the base model writes every final of this sentence."


def test_tiny_drafts_base_finals(speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    rt = Runtime.create(RuntimeOptions(tiers=(TierSpec("base", "int8", 5, 250, "tiny.en"),
                                              TierSpec("base", "int8", 1, 250, "no-such-model"))))
    try:
        own, draft = rt.engine_for(0)[2], rt.partial_engine_for(0)
        assert draft is not own and draft.model_dir.name != own.model_dir.name
        assert rt.partial_engine_for(1) is rt.engine_for(1)[2], "a partial model that cannot load: its own"
        asked: dict[str, list[Any]] = {"draft": [], "own": []}
        for name, engine in (("draft", draft), ("own", own)):
            def counted(*a: Any, _e: Any = engine.transcribe, _n: str = name, **k: Any) -> Any:
                asked[_n].append(k.get("max_new_tokens"))
                return _e(*a, **k)
            engine.transcribe = counted  # type: ignore[method-assign]
        events: list[TranscriptEvent] = []
        pipe = rt.open_stream("d", "d", events.append)
        feed(pipe, np.concatenate([np.zeros(8000, dtype=np.int16), speak(speech_cache, SAID)]), realtime=True)
        assert rt.wait_idle(60)
        rt.close_stream("d")
    finally:
        rt.close()
    partials, finals = [e for e in events if not e.is_final], [e for e in events if e.is_final]
    assert len(asked["draft"]) >= 3 and all(n is not None for n in asked["draft"]), "drafts are partials only"
    assert any(n is None for n in asked["own"]), "base decoded the finals"
    assert partials and finals and {e.tier for e in events} == {"base-int8-b5-p250+tiny.en"}
    assert wer(SAID, " ".join(f.text for f in finals)) <= 0.3
