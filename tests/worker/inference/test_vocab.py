"""The English-vocabulary copy of a model: which tokens it keeps, how ids map, and how model.bin is rewritten."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from livenexus_worker.inference import vocab


@pytest.fixture(scope="module")
def tokenizer() -> object:
    from tokenizers import Tokenizer

    from livenexus_worker.inference.models import resolve

    return Tokenizer.from_file(str(resolve("base").path / "tokenizer.json"))


@pytest.fixture(scope="module")
def id_map(tokenizer: object, tmp_path_factory: pytest.TempPathFactory) -> vocab.IdMap:
    from livenexus_worker.inference.models import resolve

    keep = vocab.english_keep(tokenizer, vocab.english_tokens(tokenizer))
    strings = [tokenizer.id_to_token(i) for i in keep]  # type: ignore[attr-defined]
    d = tmp_path_factory.mktemp("pruned")
    (d / "vocabulary.json").write_text(json.dumps(strings))
    (d / "tokenizer.json").write_bytes((resolve("base").path / "tokenizer.json").read_bytes())
    m = vocab.IdMap.of_model(d, tokenizer)
    assert m is not None
    return m


def test_the_english_keep_has_every_special_token_to_notimestamps_but_no_timestamp(tokenizer: object) -> None:
    keep = set(vocab.english_keep(tokenizer, vocab.english_tokens(tokenizer)))
    v = tokenizer.get_vocab(with_added_tokens=True)  # type: ignore[attr-defined]
    for special in ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|transcribe|>",
                    "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>", ""):
        assert v[special] in keep, special
    assert v["<|0.00|>"] not in keep and v["<|30.00|>"] not in keep
    # English words and marks in, other scripts out; about two thirds of the rows are kept.
    for word in ("Ġthe", "ĠThe", "Ġmeeting", "Ġ2024", ".", ",", "?"):
        assert v[word] in keep, word
    assert 25_000 < len(keep) < 40_000
    assert len(keep) < 0.7 * len(v)


def test_the_token_list_is_found_by_the_tokenizer_s_vocabulary_not_its_file(tokenizer: object) -> None:
    from tokenizers import Tokenizer

    from livenexus_worker.inference.models import resolve

    # Another model of the same vocabulary (or the same one in another file) finds the same list.
    again = Tokenizer.from_str(tokenizer.to_str())  # type: ignore[attr-defined]
    assert vocab.english_tokens(again) == vocab.english_tokens(tokenizer)
    # GPT-2's (English-only models) spells words otherwise: no list, so no copy is made for it.
    assert vocab.english_tokens(Tokenizer.from_file(str(resolve("tiny.en").path / "tokenizer.json"))) is None


def test_any_text_survives_the_round_trip_through_the_pruned_ids(tokenizer: object, id_map: vocab.IdMap) -> None:
    # Words whose tokens were dropped (other scripts, accents, rare names) are spelled by the pieces their
    # BPE merges joined, so a forced prefix or previous text is never lost or changed.
    for text in (" Okay, let's get started at 10:30.", " Zürich naïve façade", " 東京で会いましょう",
                 " Kubernetes' kubelet restarted 3 pods", " Привет, мир!"):
        ids = tokenizer.encode(text, add_special_tokens=False).ids  # type: ignore[attr-defined]
        model_ids = id_map.to_model(ids)
        assert all(0 <= i < id_map.kept.shape[0] for i in model_ids)
        back = id_map.to_tokenizer(model_ids)
        assert tokenizer.decode(back, skip_special_tokens=False) == text  # type: ignore[attr-defined]
    # An English sentence keeps its own tokens: nothing to spell.
    ids = tokenizer.encode(" We shipped the new onboarding flow on Tuesday.", add_special_tokens=False).ids  # type: ignore[attr-defined]
    assert id_map.to_tokenizer(id_map.to_model(ids)) == ids


def test_the_merges_are_read_only_when_a_dropped_token_needs_them(tokenizer: object, id_map: vocab.IdMap,
                                                                  tmp_path: Path) -> None:
    # Reading them is ~0.15 s of every engine load (a worker's, and its thread-timing child's two), and English
    # text is spelled by kept tokens alone.
    strings = [tokenizer.id_to_token(int(i)) for i in id_map.kept]  # type: ignore[attr-defined]
    (tmp_path / "vocabulary.json").write_text(json.dumps(strings))
    m = vocab.IdMap.of_model(tmp_path, tokenizer)
    assert m is not None and not m.merges_read
    ids = tokenizer.encode(" We shipped the new onboarding flow on Tuesday.", add_special_tokens=False).ids  # type: ignore[attr-defined]
    assert m.to_tokenizer(m.to_model(ids)) == ids and not m.merges_read
    for text in (" Zürich naïve façade", " Привет, мир!"):
        ids = tokenizer.encode(text, add_special_tokens=False).ids  # type: ignore[attr-defined]
        assert m.to_model(ids) == id_map.to_model(ids)
    assert m.merges_read
    reads: list[int] = []

    def merges() -> vocab.Merges:
        reads.append(1)
        return {}

    lazy = vocab.IdMap([0, 1, 2], merges, 10)
    for _ in range(2):
        with pytest.raises(ValueError, match="neither kept"):
            lazy.to_model([5])
    assert reads == [1], "read once"


def test_a_token_neither_kept_nor_merged_is_an_error_not_a_wrong_id() -> None:
    m = vocab.IdMap([0, 1, 2], {}, 10)
    assert m.to_model([2, 0]) == [2, 0]
    with pytest.raises(ValueError, match="neither kept"):
        m.to_model([5])
    with pytest.raises(ValueError, match="neither kept"):
        m.to_model([-1])


def test_a_whole_vocabulary_needs_no_map(tokenizer: object, tmp_path: Path) -> None:
    size = tokenizer.get_vocab_size(with_added_tokens=True)  # type: ignore[attr-defined]
    (tmp_path / "vocabulary.json").write_text(json.dumps([tokenizer.id_to_token(i) for i in range(size)]))  # type: ignore[attr-defined]
    assert vocab.IdMap.of_model(tmp_path, tokenizer) is None
    (tmp_path / "vocabulary.json").write_text(json.dumps(["Ġthe", "not-a-token-of-it"]))
    with pytest.raises(ValueError, match="not the tokenizer's"):
        vocab.IdMap.of_model(tmp_path, tokenizer)


def _string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def _variable(name: str, arr: np.ndarray, dtype_id: int) -> bytes:
    data = arr.tobytes()
    return (_string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
            + struct.pack("<BI", dtype_id, len(data)) + data)


def _model_bin(table: np.ndarray, version: int = 6) -> bytes:
    other = np.arange(6, dtype=np.float16).reshape(2, 3)
    return (struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, 2)
            + _variable("decoder/layer_0/ffn/linear_0/weight", other, 4) + _variable(vocab.EMBEDDINGS, table, 4)
            + struct.pack("<I", 1) + _string("decoder/projection/weight") + _string(vocab.EMBEDDINGS))


def _read(path: Path) -> tuple[dict[str, np.ndarray], bytes]:
    raw = path.read_bytes()
    pos = 4
    (n,) = struct.unpack_from("<H", raw, pos)
    pos += 2 + n + 4
    (count,) = struct.unpack_from("<I", raw, pos)
    pos += 4
    out = {}
    for _ in range(count):
        (n,) = struct.unpack_from("<H", raw, pos)
        name = raw[pos + 2: pos + 1 + n].decode()
        pos += 2 + n
        (rank,) = struct.unpack_from("<B", raw, pos)
        dims = struct.unpack_from(f"<{rank}I", raw, pos + 1)
        pos += 1 + 4 * rank
        _dtype, size = struct.unpack_from("<BI", raw, pos)
        pos += 5
        out[name] = np.frombuffer(raw[pos: pos + size], dtype=np.float16).reshape(dims)
        pos += size
    return out, raw[pos:]


def _source(tmp_path: Path, table: np.ndarray, version: int = 6) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(_model_bin(table, version))
    (src / "vocabulary.json").write_text(json.dumps([f"t{i}" for i in range(table.shape[0])]))
    (src / "config.json").write_text(json.dumps({"suppress_ids": [1, 3, 7], "suppress_ids_begin": [3],
                                                 "lang_ids": [7, 8], "alignment_heads": [[0, 1]]}))
    (src / "tokenizer.json").write_text("{}")
    return src


def test_prune_keeps_the_rows_asked_for_and_copies_everything_else(tmp_path: Path) -> None:
    table = np.arange(40, dtype=np.float16).reshape(10, 4)
    src = _source(tmp_path, table)
    dst = tmp_path / "dst"
    dst.mkdir()
    done = vocab.prune(src, dst, [0, 3, 7, 8])
    assert (done.rows_before, done.rows_after) == (10, 4)
    weights, tail = _read(dst / "model.bin")
    assert np.array_equal(weights[vocab.EMBEDDINGS], table[[0, 3, 7, 8]])
    assert np.array_equal(weights["decoder/layer_0/ffn/linear_0/weight"], np.arange(6).reshape(2, 3))
    assert tail == struct.pack("<I", 1) + _string("decoder/projection/weight") + _string(vocab.EMBEDDINGS)
    assert json.loads((dst / "vocabulary.json").read_text()) == ["t0", "t3", "t7", "t8"]
    config = json.loads((dst / "config.json").read_text())
    # Ids in the config follow their tokens; a dropped one goes.
    assert config["suppress_ids"] == [1, 2] and config["suppress_ids_begin"] == [1] and config["lang_ids"] == [2, 3]
    assert config["alignment_heads"] == [[0, 1]]


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda b: b[:-30], "ends early"),
    (lambda b: struct.pack("<I", 5) + b[4:], "version 5"),
])
def test_a_model_bin_it_cannot_read_is_refused(tmp_path: Path, mangle: object, message: str) -> None:
    src = _source(tmp_path, np.zeros((10, 4), dtype=np.float16))
    (src / "model.bin").write_bytes(mangle((src / "model.bin").read_bytes()))  # type: ignore[operator]
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(ValueError, match=message):
        vocab.prune(src, dst, [0, 1])


def test_a_token_id_past_the_table_is_refused(tmp_path: Path) -> None:
    src = _source(tmp_path, np.zeros((10, 4), dtype=np.float16))
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(ValueError, match="past the model"):
        vocab.prune(src, dst, [0, 10])
