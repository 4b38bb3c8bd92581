"""The English-vocabulary copy of the real base model: prepared once into the cache, and read like the whole."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from livenexus_worker.inference import english, model_cache
from livenexus_worker.inference.engine import WhisperEngine
from livenexus_worker.inference.models import resolve
from tests.conftest import speak


@pytest.fixture(scope="module")
def base() -> Path:
    return resolve("base").path


@pytest.fixture(scope="module")
def prepared(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return english.english_dir(base, tmp_path_factory.mktemp("cache"))


def test_the_copy_is_prepared_once_verified_and_readable_by_a_non_root_worker(base: Path, prepared: Path) -> None:
    assert prepared.name.startswith(english.PREFIX)
    assert model_cache.verify(prepared)
    assert oct(prepared.stat().st_mode & 0o777) == "0o755"
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in prepared.iterdir())
    assert (prepared / "model.bin").stat().st_size < 0.9 * (base / "model.bin").stat().st_size
    before = (prepared / "model.bin").stat().st_mtime_ns
    assert english.english_dir(base, prepared.parent) == prepared
    assert (prepared / "model.bin").stat().st_mtime_ns == before  # found, not made again
    assert not [p for p in prepared.parent.iterdir() if p.name.startswith(model_cache.STAGING_PREFIX)]


def test_a_copy_made_is_found_without_reading_a_tokenizer_and_new_lists_make_another(
        base: Path, prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenizers

    def unread(*_a: object) -> None:
        raise AssertionError("read a tokenizer to find a copy already made")

    monkeypatch.setattr(tokenizers.Tokenizer, "from_file", unread)
    assert english.english_dir(base, prepared.parent) == prepared
    # Other token lists are another copy: not found under the old name, so made (here: the tokenizer is read).
    monkeypatch.setattr(english.vocab, "token_lists_id", lambda: "0" * 64)
    with pytest.raises(AssertionError, match="read a tokenizer"):
        english.english_dir(base, prepared.parent)


def test_a_damaged_copy_is_made_again(base: Path, tmp_path: Path) -> None:
    first = english.english_dir(base, tmp_path)
    with (first / "model.bin").open("r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 16)
    again = english.english_dir(base, tmp_path)
    assert again == first and model_cache.verify(again)
    # A copy without its record is not trusted either: every copy this makes has one.
    (again / model_cache.RECORD).unlink()
    assert english.english_dir(base, tmp_path) == first and (first / model_cache.RECORD).is_file()


def test_an_english_only_model_keeps_its_vocabulary_and_an_unwritable_cache_the_whole(base: Path,
                                                                                    tmp_path: Path) -> None:
    with pytest.raises(english.NotApplicable):
        english.english_dir(resolve("tiny.en").path, tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert english.english_or_whole(base, blocked / "cache") == base


@pytest.fixture(scope="module")
def engines(base: Path, prepared: Path) -> dict[str, WhisperEngine]:
    return {"whole": WhisperEngine(base, "int8", 1), "english": WhisperEngine(prepared, "int8", 1)}


def test_the_copy_reads_what_the_whole_model_reads(engines: dict[str, WhisperEngine],
                                                   speech_cache: dict[str, np.ndarray]) -> None:
    audio = speak(speech_cache, "We shipped the new onboarding flow on Tuesday, and the feedback has been positive.")
    for beam, times in ((1, True), (5, False)):
        whole, eng = (engines[k].transcribe(audio, beam, "en", word_times=times) for k in ("whole", "english"))
        assert eng.text == whole.text and "onboarding" in eng.text.lower()
        assert len(eng.word_ends) == len(whole.word_ends)
        assert np.allclose(eng.word_ends, whole.word_ends, atol=0.05)
        assert eng.no_speech_prob == pytest.approx(whole.no_speech_prob, abs=0.01)
        # Dropped rows took a little probability mass, so the same tokens read a little more likely.
        assert eng.avg_logprob == pytest.approx(whole.avg_logprob, abs=0.05)


def test_forced_words_and_previous_text_of_dropped_tokens_come_back(
        engines: dict[str, WhisperEngine], speech_cache: dict[str, np.ndarray]) -> None:
    audio = speak(speech_cache, "We shipped the new onboarding flow on Tuesday, and the feedback has been positive.")
    # "Zürich", "façade" and "Grüße aus Köln" are spelled by smaller tokens in the copy: forced, they come back
    # as given; as previous text, the decode reads on as the whole model does.
    assert engines["english"].transcribe(audio, 1, "en", prefix="Zürich façade").text.startswith("Zürich façade")
    read = {k: e.transcribe(audio, 1, "en", prefix="We shipped the", context="Grüße aus Köln, Zürich.").text
            for k, e in engines.items()}
    assert read["english"] == read["whole"] and "feedback" in read["english"].lower()


def test_the_runtime_decodes_english_with_the_copy(runtime: object) -> None:
    engine = runtime._engines[("base", "int8")]  # type: ignore[attr-defined]
    assert engine.model_dir.name.startswith(english.PREFIX)
    assert os.access(engine.model_dir / "model.bin", os.R_OK)
